"""Language modeling: predict each next token of a binarized text corpus.

The task reads what ``fairseq-preprocess --only-source`` wrote (``dict.txt`` and
``SPLIT.bin``/``SPLIT.idx``) and turns each split into language-model samples in three steps:

1. optionally shorten each sentence (``shorten_method``, for the splits in
   ``shorten_data_split_list``);
2. cut the token stream into blocks (``sample_break_mode``, ``tokens_per_sample``);
3. pair each block with its target (``MonolingualDataset``): the input is the block shifted
   right by one token, so position ``t`` predicts token ``t`` of the block.

``task.data`` may name several directories joined by ``':'`` (shards of one corpus, each
binarized with the same dictionary): epoch ``e`` trains on shard ``(e - 1) % n``; other splits
and ``dict.txt`` always come from the first shard.
"""
import copy
import logging
import os
from argparse import Namespace
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Iterator, List, Optional

import numpy as np
from omegaconf import II, MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from fairseq.data.dictionary import Dictionary
from fairseq.errors import DataError
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.configs import GENERIC_GROUPS
from fairseq.dataclass.values import field_default, interpolation_target
from fairseq.dataclass.constants import DATASET_IMPL_CHOICES
from fairseq.errors import ConfigError
from fairseq.tasks import TASK_REGISTRY, register_task
from fairseq.tasks.fairseq_task import FairseqTask

logger = logging.getLogger(__name__)

SAMPLE_BREAK_MODE_CHOICES = ChoiceEnum(["none", "complete", "complete_doc", "eos"], "SampleBreakMode")
SHORTEN_METHOD_CHOICES = ChoiceEnum(["none", "truncate", "random_crop"], "ShortenMethod")

# Target kind -> the config key that selects it.
TARGET_KEYS = {"self": "self_target", "future": "future_target", "past": "past_target"}


@dataclass
class LanguageModelingConfig(FairseqDataclass):
    # Set so that a bare ``LanguageModelingConfig(data=...)`` selects this task.
    _name: Optional[str] = "language_modeling"
    data: str = field(
        default=MISSING,
        metadata={"help": "directory of the binarized data (dict.txt, train.bin/.idx, ...); "
                  "several directories joined by ':' are used one per epoch, round robin",
                  "positional": True},
    )
    sample_break_mode: SAMPLE_BREAK_MODE_CHOICES = field(  # type: ignore[valid-type]
        default="none",
        metadata={"help": "none: fill each sample with tokens_per_sample tokens of the stream; "
                  "complete: whole sentences up to tokens_per_sample; complete_doc: like complete "
                  "but never across documents (separated by empty lines); eos: one sentence per "
                  "sample. A sentence longer than a sample is split"},
    )
    tokens_per_sample: int = field(
        default=1024,
        metadata={"help": "maximum tokens per sample, the beginning-of-sentence token of "
                  "add_bos_token included", "min": 1, "max": 1 << 20},
    )
    output_dictionary_size: int = field(
        default=-1,
        metadata={"help": "limit the output vocabulary to the first N symbols of dict.txt (the "
                  "most frequent); rarer target words become <unk>. -1: the whole dictionary", "min": -1},
    )
    self_target: bool = field(
        default=False, metadata={"help": "predict the input token itself (the model must support it)"}
    )
    future_target: bool = field(
        default=False, metadata={"help": "predict the next token (the default when no target is set)"}
    )
    past_target: bool = field(
        default=False, metadata={"help": "predict the previous token (the model must support it)"}
    )
    add_bos_token: bool = field(
        default=False, metadata={"help": "start every sample with the beginning-of-sentence token"}
    )
    max_target_positions: Optional[int] = field(
        default=None, metadata={"help": "longest sample accepted, in tokens (unset: tokens_per_sample)",
                                "min": 1, "max": 1 << 20}
    )
    shorten_method: SHORTEN_METHOD_CHOICES = field(  # type: ignore[valid-type]
        default="none",
        metadata={"help": "shorten every sentence longer than a sample before cutting blocks: "
                  "truncate keeps its first tokens, random_crop a random window (redrawn each epoch)"},
    )
    shorten_data_split_list: str = field(
        default="",
        metadata={"help": "comma-separated splits to shorten, e.g. 'train,valid' (empty: every split)"},
    )
    seed: int = field(
        default=II("common.seed"), metadata={"help": "seed of the random crops and sample order",
                                             "min": 0, "max": 2**32 - 1}
    )
    dataset_impl: Optional[DATASET_IMPL_CHOICES] = field(  # type: ignore[valid-type]
        default=II("dataset.dataset_impl"), metadata={"help": "storage format of the binarized data"}
    )
    train_subset: str = field(
        default=II("dataset.train_subset"),
        metadata={"help": "the split that rotates over the ':'-joined data shards"},
    )


def interpolation_fallback(target: str) -> Any:
    """The default of the generic config key ``target`` (e.g. ``"common.seed"`` -> 1)."""
    group, _, key = target.partition(".")
    dataclass_type = GENERIC_GROUPS.get(group)
    for f in fields(dataclass_type) if dataclass_type is not None else ():
        if f.name == key:
            return field_default(f)
    return None


def as_task_config(cfg: Any, require_data: bool = True) -> DictConfig:
    """Normalize a task config to a DictConfig whose every field can be read.

    A dataclass instance or legacy ``Namespace`` becomes a standalone node; so does a
    ``cfg.task`` node. A standalone node cannot resolve its interpolations of other groups
    (``${common.seed}``): those take the default of the key they point at, on a copy, so the
    three ways of giving the config read the same values.

    Args:
        cfg: the task config in any of its forms.
        require_data: refuse a config without ``data`` (a task built only to batch datasets
            given in memory needs none).

    Raises:
        ConfigError: if ``require_data`` and ``data`` is not set.
    """
    if isinstance(cfg, Namespace):
        cfg = TASK_REGISTRY.to_config(cfg, "language_modeling")
    elif is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = OmegaConf.structured(cfg)
    if require_data and OmegaConf.is_missing(cfg, "data"):
        raise ConfigError("task.data is not set: give the --destdir of fairseq-preprocess "
                          "(task.data=DIR, or DIR as the first argument of fairseq-train)")
    fallbacks = {}
    for f in fields(LanguageModelingConfig):
        target = interpolation_target(f.default)
        if target is None or f.name not in cfg:
            continue
        try:
            cfg[f.name]
        except InterpolationResolutionError:  # no root config around the node
            fallbacks[f.name] = interpolation_fallback(target)
    if not fallbacks:
        return cfg
    standalone = copy.deepcopy(cfg)
    for key, value in fallbacks.items():
        standalone[key] = value
    return standalone


def targets_of(cfg: Any) -> List[str]:
    """The target kind the config selects: ``["future"]`` unless one of the target flags is set.

    Raises:
        ConfigError: if more than one of ``self_target``, ``future_target``, ``past_target`` is set.
    """
    chosen = [kind for kind, key in TARGET_KEYS.items() if getattr(cfg, key)]
    if len(chosen) > 1:
        keys = ", ".join(f"task.{TARGET_KEYS[kind]}" for kind in chosen)
        flags = ", ".join(f"--{TARGET_KEYS[kind].replace('_', '-')}" for kind in chosen)
        raise ConfigError(f"{keys} are all set ({flags}); a language model trains on one target, "
                          "so set only one of them")
    return chosen or ["future"]


@register_task("language_modeling", dataclass=LanguageModelingConfig)
class LanguageModelingTask(FairseqTask):
    """Train a language model on token blocks of a monolingual corpus.

    Args:
        cfg: a :class:`LanguageModelingConfig` (instance, node or legacy namespace; see
            :func:`as_task_config`). ``data`` may be unset when no split is loaded from disk
            (e.g. to batch an in-memory dataset with :meth:`eval_lm_dataloader`).
        dictionary: the vocabulary of the input.
        output_dictionary: the vocabulary of the target; defaults to ``dictionary``.
        targets: the target kinds, e.g. ``["future"]``; default: the one ``cfg`` selects
            (``future`` unless ``self_target`` or ``past_target`` is set).

    Raises:
        ConfigError: on inconsistent options (the message names the key and the fix).
    """

    def __init__(self, cfg: Any, dictionary: Dictionary, output_dictionary: Optional[Dictionary] = None,
                 targets: Optional[List[str]] = None):
        cfg = as_task_config(cfg, require_data=False)
        super().__init__(cfg)
        self.dictionary = dictionary
        self.output_dictionary = output_dictionary if output_dictionary is not None else dictionary
        self.targets = list(targets) if targets is not None else targets_of(cfg)
        minimum = 2 if cfg.add_bos_token else 1
        if cfg.tokens_per_sample < minimum:
            raise ConfigError(
                f"task.tokens_per_sample={cfg.tokens_per_sample} leaves no room for a token"
                f"{' after the bos of add_bos_token' if cfg.add_bos_token else ''}; set "
                f"--tokens-per-sample to at least {minimum}"
            )

    # -- setup --------------------------------------------------------------------------------
    @staticmethod
    def data_paths(cfg: Any) -> List[str]:
        """The shard directories of ``cfg.data`` (``':'``-joined), in order.

        Raises:
            ConfigError: if ``cfg.data`` is unset or names no directory.
        """
        if OmegaConf.is_missing(cfg, "data"):
            raise ConfigError("task.data is not set: give the --destdir of fairseq-preprocess "
                              "(task.data=DIR, or DIR as the first argument)")
        paths = [p for p in str(cfg.data).split(":") if p]
        if not paths:
            raise ConfigError(f"task.data={cfg.data!r} names no directory: give the --destdir of "
                              "fairseq-preprocess (several shards joined by ':')")
        return paths

    @classmethod
    def setup_task(cls, cfg: Any, **kwargs: Any) -> "LanguageModelingTask":
        """Load the dictionary of the first shard and build the task.

        Args:
            cfg: a ``LanguageModelingConfig`` instance, ``cfg.task`` node or legacy ``Namespace``.

        Returns:
            The task; no split is loaded yet (see :meth:`load_dataset`).

        Raises:
            FileNotFoundError: if the first shard has no ``dict.txt``.
            ConfigError: on inconsistent options.
        """
        cfg = as_task_config(cfg)
        paths = cls.data_paths(cfg)
        dict_path = os.path.join(paths[0], "dict.txt")
        if not os.path.isfile(dict_path):
            raise FileNotFoundError(
                f"task.data={cfg.data!r}: {dict_path} does not exist; point task.data at the "
                "--destdir of fairseq-preprocess"
            )
        dictionary = Dictionary.load(dict_path)
        if len(dictionary) <= dictionary.nspecial:
            raise DataError(f"{dict_path} is empty (no symbols besides the {dictionary.nspecial} special "
                            "ones): point task.data at the --destdir of a fairseq-preprocess run that "
                            "saw text, or rerun fairseq-preprocess")
        output_dictionary = cls.build_output_dictionary(cfg, dictionary)
        logger.info("dictionary: %d types (output: %d)", len(dictionary), len(output_dictionary))
        return cls(cfg, dictionary, output_dictionary)

    @staticmethod
    def build_output_dictionary(cfg: Any, dictionary: Dictionary) -> Dictionary:
        """``dictionary`` limited to ``cfg.output_dictionary_size`` symbols (when that is > 0).

        Raises:
            ConfigError: if the size would drop special symbols.
        """
        from fairseq.data.truncated_dictionary import truncate_dictionary

        size = int(cfg.output_dictionary_size)
        if size > len(dictionary):
            logger.warning("task.output_dictionary_size=%d exceeds the %d symbols of the dictionary; "
                           "using them all", size, len(dictionary))
        try:
            return truncate_dictionary(dictionary, size)
        except ValueError as e:
            raise ConfigError(f"{e} (--output-dictionary-size)") from e

    # -- data ---------------------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        """Tokens of the corpus per sample: ``tokens_per_sample`` minus the bos, if added."""
        return int(self.cfg.tokens_per_sample) - (1 if self.cfg.add_bos_token else 0)

    def shard_path(self, split: str, epoch: int = 1) -> str:
        """The directory ``split`` is read from in ``epoch`` (1-based).

        The training split rotates over the shards; every other split uses the first one.
        """
        paths = self.data_paths(self.cfg)
        if split != self.cfg.train_subset:
            return paths[0]
        return paths[(max(epoch, 1) - 1) % len(paths)]

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any) -> None:
        """Load ``split`` as language-model samples into ``self.datasets[split]``.

        Args:
            split: a split written by fairseq-preprocess, e.g. ``"train"``, ``"valid"``.
            epoch: 1-based epoch; picks the shard of the training split and seeds random crops.
            combine: accepted for compatibility; splits are single files.

        Raises:
            FileNotFoundError: if the shard has no ``split.bin``/``.idx`` (the message lists
                the splits it has), or only one of the two.
            DataError: if the pair is corrupt (see :class:`~fairseq.data.MMapIndexedDataset`),
                holds ids the dictionary does not have, or holds no token.
        """
        from fairseq.data import MonolingualDataset, TokenBlockDataset, indexed_dataset
        from fairseq.data.shorten_dataset import maybe_shorten_dataset

        data_path = self.shard_path(split, epoch)
        prefix = os.path.join(data_path, split)
        sentences = indexed_dataset.make_dataset(prefix, impl=str(self.cfg.dataset_impl or "mmap"))
        if sentences is None:
            present = sorted(f for f in os.listdir(data_path) if f.endswith(".idx")) \
                if os.path.isdir(data_path) else []
            raise FileNotFoundError(
                f"split {split!r} not found: {prefix}.bin/.idx do not exist "
                f"(splits present in {data_path}: {[p[:-4] for p in present] or 'none'})"
            )
        if hasattr(sentences, "check_token_ids"):
            sentences.check_token_ids(len(self.dictionary), os.path.join(self.data_paths(self.cfg)[0], "dict.txt"))
        if int(np.sum(sentences.sizes, dtype=np.int64)) == 0:
            # no block can be cut from it: training would have nothing to learn and scoring
            # would divide by zero tokens
            if split == self.cfg.train_subset:
                fix = "binarize a non-empty text with fairseq-preprocess (--trainpref)"
            else:
                fix = (f"binarize a non-empty text as this split with fairseq-preprocess, or leave "
                       f"{split!r} out of the splits to load (--valid-subset, --gen-subset, or "
                       "--disable-validation)")
            raise DataError(f"split {split!r} has no tokens: {prefix}.bin/.idx hold {len(sentences)} "
                            f"sentences and no token; {fix}")
        sentences = maybe_shorten_dataset(
            sentences, split, self.cfg.shorten_data_split_list, str(self.cfg.shorten_method),
            self.block_size, self.cfg.seed, epoch=epoch,
        )
        break_mode = str(self.cfg.sample_break_mode)
        blocks = TokenBlockDataset(
            sentences, sentences.sizes, self.block_size, pad=self.dictionary.pad(),
            eos=self.dictionary.eos(), break_mode=break_mode, include_targets=True,
        )
        self.datasets[split] = MonolingualDataset(
            blocks, blocks.sizes, self.dictionary, self.output_dictionary,
            # with sentence-aligned blocks, a self/past target should cover the closing eos
            add_eos_for_other_targets=break_mode != "none",
            shuffle=True, targets=self.targets, add_bos_token=bool(self.cfg.add_bos_token),
            seed=int(self.cfg.seed),
        )
        logger.info("%s %s: %d samples", data_path, split, len(self.datasets[split]))

    def eval_lm_dataloader(self, dataset: Any, max_tokens: Optional[int] = 36000,
                           batch_size: Optional[int] = None, max_positions: Optional[int] = None,
                           num_shards: int = 1, shard_id: int = 0, num_workers: int = 1,
                           data_buffer_size: int = 10, context_window: int = 0) -> Iterator[Any]:
        """The batches of ``dataset`` for scoring, in corpus order, as one epoch's iterator.

        Args:
            dataset: language-model samples (e.g. ``self.dataset("test")``).
            max_tokens: the most tokens of a batch (blocks only, without their context).
            batch_size: the most samples of a batch.
            max_positions: samples longer than this are skipped with a warning.
            num_shards, shard_id: take every ``num_shards``-th batch from ``shard_id`` on.
            num_workers: data-loading processes. With a context window the blocks must be
                collated in order by one process, so at most one worker is used.
            data_buffer_size: batches prepared ahead.
            context_window: give each block up to this many tokens of the blocks before it as
                context (:class:`~fairseq.data.LMContextWindowDataset`); each row then holds at
                most ``tokens_per_sample + context_window`` tokens and only the block's own
                tokens have a target. 0: blocks are scored on their own.

        Returns:
            An iterator of batches (dicts as the dataset's collater makes them, plus
            ``start_indices`` with a context window).

        Raises:
            ConfigError: if ``context_window`` is negative.
        """
        from fairseq.data.lm_context_window_dataset import LMContextWindowDataset

        if context_window < 0:
            raise ConfigError(f"eval_lm.context_window={context_window} is negative: give 0 (no "
                              "context) or a positive number of tokens (--context-window)")
        if context_window > 0:
            dataset = LMContextWindowDataset(
                dataset=dataset, tokens_per_sample=int(self.cfg.tokens_per_sample),
                context_window=context_window, pad_idx=self.source_dictionary.pad(),
            )
            num_workers = min(num_workers, 1)
        return self.get_batch_iterator(
            dataset=dataset, max_tokens=max_tokens, max_sentences=batch_size,
            max_positions=max_positions, ignore_invalid_inputs=True, num_shards=num_shards,
            shard_id=shard_id, num_workers=num_workers, data_buffer_size=data_buffer_size,
        ).next_epoch_itr(shuffle=False)

    @property
    def source_dictionary(self) -> Dictionary:
        return self.dictionary

    @property
    def target_dictionary(self) -> Dictionary:
        return self.output_dictionary

    def max_positions(self) -> Optional[int]:
        """Longest sample: ``max_target_positions``, else ``tokens_per_sample``."""
        return self.cfg.max_target_positions or self.cfg.tokens_per_sample

    # -- building -----------------------------------------------------------------------------
    def build_model(self, cfg: Any):
        """Build the model and check that it predicts the target this task trains on.

        Raises:
            ConfigError: if the model does not support the selected target (e.g.
                ``task.self_target`` with a model that only predicts the next token).
        """
        model = super().build_model(cfg)
        supported = set(getattr(model, "supported_targets", {"future"}))
        for kind in self.targets:
            if kind not in supported:
                key = TARGET_KEYS[kind]
                raise ConfigError(
                    f"task.{key}=true (--{key.replace('_', '-')}) asks for the {kind!r} target, but "
                    f"{type(model).__name__} only predicts {sorted(supported)}; unset it"
                )
        return model
