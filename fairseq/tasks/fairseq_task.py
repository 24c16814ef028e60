"""The task base: it owns data and dictionaries, and builds the model and criterion."""
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch

from fairseq.dataclass.flags import DataclassFlags

logger = logging.getLogger(__name__)


class FairseqTask(DataclassFlags):
    """A task loads datasets, knows the dictionaries, and runs one train/valid step.

    Subclasses set ``self.datasets[split]`` in :meth:`load_dataset`.
    """

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.datasets: Dict[str, Any] = {}

    @classmethod
    def build_task(cls, cfg: Any, **kwargs: Any) -> "FairseqTask":
        return cls.setup_task(cfg, **kwargs)

    @classmethod
    def setup_task(cls, cfg: Any, **kwargs: Any) -> "FairseqTask":
        return cls(cfg, **kwargs)

    # -- data -------------------------------------------------------------------------------
    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any) -> None:
        raise NotImplementedError

    def dataset(self, split: str):
        if split not in self.datasets:
            raise KeyError(f"split {split!r} is not loaded (loaded: {sorted(self.datasets)})")
        return self.datasets[split]

    @property
    def source_dictionary(self):
        raise NotImplementedError

    @property
    def target_dictionary(self):
        raise NotImplementedError

    def max_positions(self) -> Optional[int]:
        return None

    def get_batch_iterator(self, dataset, max_tokens: Optional[int] = None,
                           max_sentences: Optional[int] = None, max_positions: Optional[int] = None,
                           ignore_invalid_inputs: bool = False, required_batch_size_multiple: int = 1,
                           seed: int = 1, num_shards: int = 1, shard_id: int = 0,
                           num_workers: int = 0, epoch: int = 1, data_buffer_size: int = 0,
                           disable_iterator_cache: bool = False, skip_remainder_batch: bool = False,
                           grouped_shuffling: bool = False, update_epoch_batch_itr: bool = False):
        """Batches of ``dataset`` grouped by size, as an :class:`EpochBatchIterator`.

        Samples longer than ``max_positions`` are dropped with a warning when
        ``ignore_invalid_inputs``, else they raise naming the sample and the limit.
        ``data_buffer_size`` batches are prepared ahead in a background thread (0: none).
        ``disable_iterator_cache``, ``skip_remainder_batch``, ``grouped_shuffling`` and
        ``update_epoch_batch_itr`` are accepted for fairseq compatibility: iterators are never
        cached here, every batch is kept, and batches are shuffled one by one.
        """
        from fairseq.data import data_utils, iterators

        if max_tokens is None and max_sentences is None:
            from fairseq.errors import ConfigError

            raise ConfigError("batches need a size: give dataset.max_tokens (--max-tokens) or "
                              "dataset.batch_size (--batch-size)")
        indices = dataset.ordered_indices()
        if max_positions is not None:
            indices, ignored = data_utils.filter_by_size(
                indices, dataset.sizes, max_positions, raise_exception=not ignore_invalid_inputs)
            if len(ignored) > 0:
                logger.warning("%d samples are longer than %d tokens and were skipped, e.g. %s",
                               len(ignored), max_positions, list(ignored[:10]))
        batches = data_utils.batch_by_size(
            indices, num_tokens_vec=dataset.sizes[indices] if hasattr(dataset, "sizes") else None,
            num_tokens_fn=dataset.num_tokens, max_tokens=max_tokens, max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
        )
        return iterators.EpochBatchIterator(
            dataset=dataset, collate_fn=dataset.collater, batch_sampler=batches, seed=seed,
            num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
            buffer_size=data_buffer_size,
        )

    # -- checkpoint state -------------------------------------------------------------------
    def get_checkpoint_dict(self) -> Dict[str, Any]:
        """State of this task to save with each checkpoint (fairseq's hook); none by default.

        Return ``{type(self).__name__: state}`` with ``state`` made of tensors and plain
        containers (checkpoints are read weights-only): the entries are stored in the
        checkpoint's ``task_state`` and ``extra_state``, and ``state`` is handed to
        :meth:`set_checkpoint_dict` when a run resumes from it or a model is loaded from it.
        """
        return {}

    def set_checkpoint_dict(self, state: Dict[str, Any]) -> None:
        """Take back the ``state`` :meth:`get_checkpoint_dict` saved (the value under this
        task's class name); called only when the checkpoint holds a non-empty one."""

    # -- building ---------------------------------------------------------------------------
    def build_model(self, cfg: Any):
        from fairseq import models

        return models.build_model(cfg, self)

    def build_criterion(self, cfg: Any):
        from fairseq import criterions

        return criterions.build_criterion(cfg, self)

    # -- steps ------------------------------------------------------------------------------
    def train_step(self, sample: Dict[str, Any], model: torch.nn.Module, criterion,
                   update_num: int = 0) -> Tuple[torch.Tensor, int, Dict[str, Any]]:
        """Forward one batch; the trainer does backward and the update."""
        model.train()
        model.set_num_updates(update_num) if hasattr(model, "set_num_updates") else None
        return criterion(model, sample)

    @torch.no_grad()
    def valid_step(self, sample: Dict[str, Any], model: torch.nn.Module, criterion):
        model.eval()
        return criterion(model, sample)

    def reduce_metrics(self, logging_outputs: List[Dict[str, Any]], criterion) -> Dict[str, float]:
        return criterion.reduce_metrics(logging_outputs)
