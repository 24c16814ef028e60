"""Base class of decoders that can decode one step at a time with a cache
(``fairseq.models.FairseqIncrementalDecoder``)."""
import uuid
from typing import Any, Dict, Optional, Tuple

from torch import Tensor

from fairseq.models.fairseq_decoder import FairseqDecoder

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


class FairseqIncrementalDecoder(FairseqDecoder):
    """A decoder whose ``forward`` accepts ``incremental_state``: a dict that caches what earlier
    steps computed, so that each generation step only feeds the newest token.

    Each instance stores its part of the cache under its own unique prefix
    (:meth:`get_incremental_state` / :meth:`set_incremental_state`), so several modules can
    share one ``incremental_state`` dict. Beam search calls :meth:`reorder_incremental_state`
    when it reorders or selects hypotheses.
    """

    def __init__(self, dictionary: Any):
        super().__init__(dictionary)
        self._incremental_state_id = str(uuid.uuid4())

    def forward(self, prev_output_tokens: Tensor, encoder_out: Any = None,
                incremental_state: Optional[IncrementalState] = None,
                **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        """Scores (B, T, V) and extras; with ``incremental_state``, only for the new positions."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def extract_features(self, prev_output_tokens: Tensor, encoder_out: Any = None,
                         incremental_state: Optional[IncrementalState] = None,
                         **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must implement extract_features")

    # -- the cache ------------------------------------------------------------------------------
    def _full_key(self, key: str) -> str:
        return f"{self._incremental_state_id}.{key}"

    def get_incremental_state(self, incremental_state: Optional[IncrementalState],
                              key: str) -> Optional[Dict[str, Optional[Tensor]]]:
        """This module's entry ``key`` of the cache (``None`` if absent)."""
        if incremental_state is None:
            return None
        return incremental_state.get(self._full_key(key))

    def set_incremental_state(self, incremental_state: Optional[IncrementalState], key: str,
                              value: Dict[str, Optional[Tensor]]) -> Optional[IncrementalState]:
        """Store this module's entry ``key`` in the cache; returns the cache."""
        if incremental_state is not None:
            incremental_state[self._full_key(key)] = value
        return incremental_state

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        """Select/reorder the batch rows of this module's cache (override when caching)."""

    def reorder_incremental_state_scripting(self, incremental_state: IncrementalState,
                                            new_order: Tensor) -> None:
        """Reorder the cache of this decoder and of every submodule that keeps one."""
        for module in self.modules():
            if hasattr(module, "reorder_incremental_state"):
                result = module.reorder_incremental_state(incremental_state, new_order)
                if result is not None:
                    incremental_state = result

    def set_beam_size(self, beam_size: int) -> None:
        """Tell every submodule that cares the beam size (once per change)."""
        if getattr(self, "_beam_size", -1) == beam_size:
            return
        for module in self.modules():
            if module is not self and hasattr(module, "set_beam_size"):
                module.set_beam_size(beam_size)
        self._beam_size = beam_size


__all__ = ["FairseqIncrementalDecoder", "IncrementalState"]
