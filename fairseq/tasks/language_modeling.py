"""Language modeling: predict each next token of a binarized text corpus."""
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import II, MISSING

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import register_task
from fairseq.tasks.fairseq_task import FairseqTask

logger = logging.getLogger(__name__)

SAMPLE_BREAK_MODE_CHOICES = ChoiceEnum(["none", "complete", "complete_doc", "eos"], "SampleBreakMode")
SHORTEN_METHOD_CHOICES = ChoiceEnum(["none", "truncate", "random_crop"], "ShortenMethod")


@dataclass
class LanguageModelingConfig(FairseqDataclass):
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
                  "but never across documents; eos: one sentence per sample"},
    )
    tokens_per_sample: int = field(default=1024, metadata={"help": "maximum tokens per sample"})
    output_dictionary_size: int = field(
        default=-1, metadata={"help": "limit the output vocabulary to the N most frequent words"}
    )
    add_bos_token: bool = field(default=False, metadata={"help": "prepend the beginning-of-sentence token"})
    max_target_positions: Optional[int] = field(
        default=None, metadata={"help": "maximum tokens in the target sequence"}
    )
    seed: int = II("common.seed")
    dataset_impl: Optional[Any] = II("dataset.dataset_impl")


@register_task("language_modeling", dataclass=LanguageModelingConfig)
class LanguageModelingTask(FairseqTask):
    """Train a language model on token blocks of a monolingual corpus."""

    def __init__(self, cfg: Any, dictionary, output_dictionary=None):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.output_dictionary = output_dictionary or dictionary

    @staticmethod
    def data_paths(cfg: Any):
        paths = [p for p in str(cfg.data).split(":") if p]
        if not paths:
            raise ValueError("task.data is empty: give the directory made by fairseq-preprocess")
        return paths

    @classmethod
    def setup_task(cls, cfg: Any, **kwargs: Any) -> "LanguageModelingTask":
        from fairseq.data import Dictionary

        paths = cls.data_paths(cfg)
        dict_path = os.path.join(paths[0], "dict.txt")
        if not os.path.isfile(dict_path):
            raise FileNotFoundError(
                f"task.data={cfg.data!r}: {dict_path} does not exist; point task.data at the "
                "--destdir of fairseq-preprocess"
            )
        dictionary = Dictionary.load(dict_path)
        logger.info("dictionary: %d types", len(dictionary))
        return cls(cfg, dictionary)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any) -> None:
        from fairseq.data import MonolingualDataset, TokenBlockDataset, indexed_dataset

        paths = self.data_paths(self.cfg)
        data_path = paths[(epoch - 1) % len(paths)]
        prefix = os.path.join(data_path, split)
        dataset = indexed_dataset.make_dataset(prefix, impl=str(self.cfg.dataset_impl or "mmap"))
        if dataset is None:
            present = sorted(f for f in os.listdir(data_path) if f.endswith(".idx")) \
                if os.path.isdir(data_path) else []
            raise FileNotFoundError(
                f"split {split!r} not found: {prefix}.bin/.idx do not exist "
                f"(splits present in {data_path}: {[p[:-4] for p in present] or 'none'})"
            )
        break_mode = str(self.cfg.sample_break_mode)
        blocks = TokenBlockDataset(
            dataset, dataset.sizes, self.cfg.tokens_per_sample, pad=self.dictionary.pad(),
            eos=self.dictionary.eos(), break_mode=break_mode, include_targets=True,
        )
        self.datasets[split] = MonolingualDataset(
            blocks, blocks.sizes, self.dictionary, self.output_dictionary,
            add_eos_for_other_targets=False, shuffle=True, targets=["future"],
            add_bos_token=self.cfg.add_bos_token,
        )
        logger.info("%s %s: %d blocks", data_path, split, len(self.datasets[split]))

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.output_dictionary

    def max_positions(self) -> Optional[int]:
        return self.cfg.max_target_positions or self.cfg.tokens_per_sample
