"""``fairseq.distributed_utils``: the same module as :mod:`fairseq.distributed.utils`.

fairseq moved its process-group helpers to ``fairseq.distributed.utils`` and kept this path as
an alias; both names refer to one module object, so patching either affects both.
"""
import sys

from fairseq.distributed import utils as _utils

sys.modules[__name__] = _utils
