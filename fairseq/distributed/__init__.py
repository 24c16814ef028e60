"""Multi-process training helpers (``fairseq.distributed``).

:mod:`fairseq.distributed.utils` holds the process-group functions (also importable as
``fairseq.distributed_utils``, fairseq's older path); :class:`ModuleProxyWrapper` lets a wrapped
model (DDP) answer the model's own attributes.
"""
from fairseq.distributed.utils import ModuleProxyDDP, ModuleProxyWrapper

__all__ = ["ModuleProxyDDP", "ModuleProxyWrapper"]
