"""``fairseq.metrics``: the same module as :mod:`fairseq.logging.metrics` (fairseq's alias)."""
import sys

from fairseq.logging import metrics as _metrics

sys.modules[__name__] = _metrics
