"""The SHA-256 record of a checkpoint's tensors; moved to :mod:`fairseq.checkpoint.integrity`
(this path stays for imports written before)."""
from fairseq.checkpoint.integrity import tensor_digest, verify_integrity, with_integrity

__all__ = ["tensor_digest", "verify_integrity", "with_integrity"]
