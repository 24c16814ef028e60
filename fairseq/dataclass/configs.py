"""Typed configuration: the one place every generic parameter is declared.

Each field carries a type, a default and a help string. From these dataclasses come the Hydra
structured configs (``fairseq.dataclass.initialize``), the YAML groups in ``config/`` (which only
select and extend them) and the legacy ``--flags`` (``gen_parser_from_dataclass``).
A value shared between groups is an interpolation (``II("optimization.lr")``), never a copy.
"""
import sys
from argparse import Namespace
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from omegaconf import II

from fairseq.dataclass.constants import DATASET_IMPL_CHOICES, LOG_FORMAT_CHOICES, ChoiceEnum
from fairseq.dataclass.values import coerce_legacy_value, field_default, interpolation_target

DDP_BACKEND_CHOICES = ChoiceEnum(["pytorch_ddp", "c10d", "no_c10d", "fully_sharded"], "DDPBackend")
SAVE_FORMAT_CHOICES = ChoiceEnum(["pt", "safetensors"], "SaveFormat")


@dataclass
class FairseqDataclass:
    """Base of every config node.

    ``_name`` records which registered component (or architecture) a node configures; the
    registries fill it in, so a saved config names what to rebuild.
    """

    _name: Optional[str] = None

    @classmethod
    def namespace_values(cls, args: Namespace, keep_interpolations: bool = False) -> Dict[str, Any]:
        """The values a legacy flat ``Namespace`` carries for this config's fields (the one
        reader of a Namespace: both doors, the registries and old checkpoints use it).

        A field takes the attribute of the same name; a field whose default interpolates another
        key (``${optimization.lr}``) and has no value of its own takes the attribute named by that
        key's last part (``lr``), because the legacy namespace is flat. With
        ``keep_interpolations`` (a node inside a whole config, where the interpolation resolves)
        such a field is left out unless the namespace gives it a value of its own under another
        name. Absent attributes are left out; the legacy string form of a sequence
        (``"(0.9, 0.98)"``) becomes a list, an enum member its value.
        """
        values = {}
        for f in fields(cls):
            if f.name.startswith("_"):
                continue
            # optional: a Namespace from fairseq's add_args need not carry every field
            own = getattr(args, f.name, None)
            target = interpolation_target(f.default)
            if keep_interpolations and target is not None:
                if own is not None and target.rsplit(".", 1)[-1] != f.name:
                    values[f.name] = coerce_legacy_value(f, own)
                continue
            if own is not None or target is None:
                if hasattr(args, f.name):
                    values[f.name] = coerce_legacy_value(f, own)
                continue
            source = target.rsplit(".", 1)[-1]
            if hasattr(args, source):
                values[f.name] = coerce_legacy_value(f, getattr(args, source))
        return values

    @classmethod
    def from_namespace(cls, args: Namespace, **overrides: Any) -> "FairseqDataclass":
        """Build this config from a legacy ``Namespace``; absent attributes keep their defaults."""
        return cls(**{**cls.namespace_values(args), **overrides})


@dataclass
class CommonConfig(FairseqDataclass):
    no_progress_bar: bool = field(default=False, metadata={"help": "disable the progress bar"})
    log_interval: int = field(
        default=100, metadata={"help": "log training statistics every N updates", "min": 1}
    )
    print_config: bool = field(
        default=False,
        metadata={"help": "print the full resolved config when training starts (it is always written "
                  "to save_dir/config.json; a run prints a short header)"},
    )
    log_seconds: float = field(
        default=60.0,
        metadata={"help": "with the simple or json log format, also write a progress line (update i of "
                  "N) when no line was written for this many seconds, the first after 10 s; 0: off",
                  "min": 0},
    )
    log_format: Optional[LOG_FORMAT_CHOICES] = field(  # type: ignore[valid-type]
        default=None,
        metadata={"help": "log format; default: tqdm on a terminal, simple otherwise"},
    )
    log_file: Optional[str] = field(
        default=None, metadata={"help": "also write the log lines to this file"}
    )
    tensorboard_logdir: Optional[str] = field(
        default=None, metadata={"scope": "train", "help": "write TensorBoard event files under this directory"}
    )
    seed: int = field(default=1, metadata={"help": "random seed for model init and data order",
                                       # numpy.random.seed takes [0, 2**32 - 1] (torch more)
                                       "min": 0, "max": 2**32 - 1})
    cpu: bool = field(default=False, metadata={"help": "run on the CPU even if a GPU is present"})
    cpu_threads: int = field(default=0, metadata={
        "help": "threads of CPU operations (torch.set_num_threads); 0: OMP_NUM_THREADS if set, else the CPUs "
                "this process may use divided among the processes of this machine", "min": 0})
    fp16: bool = field(
        default=False,
        metadata={"help": "mixed precision (float16 autocast + loss scaling) on a GPU; "
                  "on a machine without one, a warning and full float32"},
    )
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast (GPU or CPU)"})
    fp16_init_scale: int = field(default=2**7, metadata={"scope": "train", "help": "initial fp16 loss scale",
                                                        "min": 1})
    fp16_scale_window: Optional[int] = field(
        default=None,
        metadata={"scope": "train", "help": "updates without overflow before the loss scale doubles "
                  "(default: 2**14 / world size / update_freq)", "min": 1},
    )
    fp16_scale_tolerance: float = field(
        default=0.0,
        metadata={"scope": "train", "help": "fraction of updates since the last rescale that may overflow before "
                  "the scale is lowered", "min": 0, "max": 1},
    )
    threshold_loss_scale: Optional[float] = field(
        default=None, metadata={"scope": "train", "help": "never let the loss scale grow above this",
                                "above": 0, "inf": True}
    )
    min_loss_scale: float = field(
        default=1e-4, metadata={"scope": "train", "help": "stop training when the loss scale falls below this",
                                "min": 0}
    )
    amp: bool = field(
        default=False,
        metadata={"help": "automatic mixed precision: float16 autocast with loss scaling on a GPU, "
                  "bfloat16 autocast on a CPU"},
    )
    memory_efficient_fp16: bool = field(
        default=False,
        metadata={"scope": "train", "help": "accepted for fairseq command lines; the same as fp16 here (parameters "
                  "and optimizer state stay float32 under autocast)"},
    )
    compile: bool = field(
        default=False,
        metadata={"scope": "train", "help": "run the model's training forward through torch.compile "
                  "(backend: $FAIRSEQ_COMPILE_BACKEND, default inductor); validation and generation "
                  "stay eager; where the compiler is unavailable or fails, a warning and eager training"},
    )
    wandb_project: Optional[str] = field(
        default=None,
        metadata={"scope": "train", "help": "also log to this Weights & Biases project (needs the wandb package)"},
    )
    user_dir: Optional[str] = field(
        default=None, metadata={"help": "a directory of extra components (tasks, models, ...)"}
    )


@dataclass
class DistributedTrainingConfig(FairseqDataclass):
    distributed_world_size: int = field(
        default=1, metadata={"help": "total number of processes (torchrun sets WORLD_SIZE)", "min": 1}
    )
    distributed_rank: int = field(default=0, metadata={"help": "rank of this process", "min": 0})
    distributed_backend: Optional[str] = field(
        default=None, metadata={"help": "torch.distributed backend; default nccl on GPU, gloo on CPU"}
    )
    device_id: int = field(
        default=0, metadata={"help": "which GPU this process uses (torchrun sets LOCAL_RANK)", "min": 0}
    )
    ddp_backend: DDP_BACKEND_CHOICES = field(  # type: ignore[valid-type]
        default="pytorch_ddp",
        metadata={"help": "pytorch_ddp: DistributedDataParallel (c10d is an alias); "
                  "no_c10d: all-reduce gradients once per update without DDP; "
                  "fully_sharded: FSDP2, each process keeps 1/N of parameters, gradients "
                  "and optimizer state (checkpoints: torch.distributed.checkpoint directories)"},
    )
    find_unused_parameters: bool = field(
        default=False,
        metadata={"help": "let DDP find parameters that got no gradient (needed with layerdrop)"},
    )


@dataclass
class DatasetConfig(FairseqDataclass):
    num_workers: int = field(
        default=1, metadata={"help": "data-loading worker processes (0 loads in the main process)", "min": 0}
    )
    skip_invalid_size_inputs_valid_test: bool = field(
        default=False, metadata={"help": "drop validation/test samples longer than the model allows"}
    )
    max_tokens: Optional[int] = field(
        default=None, metadata={"help": "maximum number of tokens in a batch", "min": 1}
    )
    batch_size: Optional[int] = field(
        default=None, metadata={"help": "maximum number of sentences in a batch", "min": 1,
                                "argparse_alias": ("--max-sentences",)}
    )
    required_batch_size_multiple: int = field(
        default=8, metadata={"help": "round batch sizes down to a multiple of this", "min": 1}
    )
    dataset_impl: Optional[DATASET_IMPL_CHOICES] = field(  # type: ignore[valid-type]
        default=None, metadata={"help": "storage format of the binarized data (default: detect)"}
    )
    train_subset: str = field(default="train", metadata={"scope": "train", "help": "split to train on"})
    valid_subset: str = field(
        default="valid", metadata={"scope": "valid", "help": "comma-separated splits to validate on"}
    )
    combine_valid_subsets: Optional[bool] = field(
        default=None,
        metadata={"scope": "train", "help": "validate on valid, valid1, valid2, ... merged into one 'valid' subset",
                  "argparse_alias": ("--combine-val",)},
    )
    ignore_unused_valid_subsets: Optional[bool] = field(
        default=False,
        metadata={"scope": "train", "help": "do not stop when the data has valid1-like splits that valid_subset leaves out"},
    )
    validate_interval: int = field(default=1, metadata={"scope": "train", "help": "validate every N epochs",
                                                         "min": 1})
    validate_interval_updates: int = field(
        default=0, metadata={"scope": "train", "help": "also validate every N updates (0: off)", "min": 0}
    )
    disable_validation: bool = field(default=False, metadata={"scope": "train", "help": "never validate"})
    max_tokens_valid: Optional[int] = field(
        default=II("dataset.max_tokens"),
        metadata={"scope": "valid", "help": "maximum tokens in a validation batch (default: --max-tokens)",
                  "min": 1},
    )
    batch_size_valid: Optional[int] = field(
        default=II("dataset.batch_size"),
        metadata={"scope": "valid", "help": "maximum sentences in a validation batch (default: --batch-size)",
                  "argparse_alias": ("--max-sentences-valid",), "min": 1},
    )
    max_valid_steps: Optional[int] = field(
        default=None,
        metadata={"scope": "valid", "help": "validate on at most this many batches of each subset (None: all)",
                  "argparse_alias": ("--nval",), "min": 0},
    )
    gen_subset: str = field(default="test", metadata={"help": "split to evaluate or generate on"})


@dataclass
class OptimizationConfig(FairseqDataclass):
    max_epoch: int = field(default=0, metadata={"help": "stop after this many epochs (0: no limit)",
                                                 "min": 0})
    max_update: int = field(default=0, metadata={"help": "stop after this many updates (0: no limit)",
                                                 "min": 0})
    clip_norm: float = field(
        default=0.0, metadata={"help": "clip the gradient norm to this value (0: no clipping)", "min": 0,
                                "inf": True}
    )
    sentence_avg: bool = field(
        default=False, metadata={"help": "normalize the loss by sentences instead of tokens"}
    )
    update_freq: List[int] = field(
        default_factory=lambda: [1],
        metadata={"help": "accumulate gradients over N batches before each update (per epoch)",
                  "min": 1, "nonempty": True},
    )
    lr: List[float] = field(
        default_factory=lambda: [0.25],
        metadata={"nonempty": True, "min": 0,
                  "help": "learning rate (per epoch for lr_scheduler=fixed); the schedulers and "
                  "optimizers read it from here"},
    )
    stop_time_hours: float = field(
        default=0.0, metadata={"help": "stop (and save) after this many hours of training (0: no limit)",
                                "min": 0, "inf": True}
    )
    stop_min_lr: float = field(
        default=-1.0, metadata={"help": "stop when the learning rate falls to this value or below"}
    )


@dataclass
class CheckpointConfig(FairseqDataclass):
    save_dir: str = field(
        default="checkpoints",
        metadata={"help": "where checkpoints go; relative paths resolve against the launch directory"},
    )
    restore_file: str = field(
        default="checkpoint_last.pt",
        metadata={"help": "checkpoint to resume from; a bare name is looked up in save_dir"},
    )
    reset_optimizer: bool = field(default=False, metadata={"help": "do not restore the optimizer state"})
    reset_lr_scheduler: bool = field(
        default=False, metadata={"help": "do not restore the lr scheduler state"}
    )
    reset_dataloader: bool = field(
        default=False, metadata={"help": "do not restore the data iterator position"}
    )
    reset_meters: bool = field(default=False, metadata={"help": "do not restore the meters"})
    save_interval: int = field(default=1, metadata={"help": "save a checkpoint every N epochs", "min": 1})
    save_interval_updates: int = field(
        default=0, metadata={"help": "also save a checkpoint every N updates (0: off)", "min": 0}
    )
    keep_interval_updates: int = field(
        default=-1, metadata={"help": "keep only the last N update checkpoints (-1: all)", "min": -1}
    )
    keep_last_epochs: int = field(
        default=-1, metadata={"help": "keep only the last N epoch checkpoints (-1: all)", "min": -1}
    )
    keep_best_checkpoints: int = field(
        default=-1,
        metadata={"help": "also keep the N best checkpoints as checkpoint.best_<metric>_<value>.pt",
                  "min": -1},
    )
    patience: int = field(
        default=-1,
        metadata={"help": "stop after N validations without improvement of best_checkpoint_metric",
                  "min": -1},
    )
    no_save: bool = field(default=False, metadata={"help": "do not save checkpoints"})
    save_on_interrupt: bool = field(
        default=False,
        metadata={"help": "on Ctrl-C (SIGINT), save checkpoint_last.pt at the current update "
                          "(resumable exactly, mid-epoch) before stopping"},
    )
    no_last_checkpoints: bool = field(
        default=False, metadata={"help": "do not write checkpoint_last.pt"}
    )
    no_save_optimizer_state: bool = field(
        default=False,
        metadata={"help": "leave the optimizer state out of checkpoints (a resumed run starts "
                  "the optimizer afresh)"},
    )
    save_consolidated: bool = field(
        default=False,
        metadata={"help": "with ddp_backend=fully_sharded, gather each checkpoint into one "
                  "single-file .pt on the first process (what eval tools load) instead of a "
                  "sharded torch.distributed.checkpoint directory"},
    )
    write_checkpoints_asynchronously: bool = field(
        default=False,
        metadata={"help": "serialize each checkpoint in memory and write it to disk in a "
                  "background thread while training goes on (one write in flight at a time; each "
                  "write stays atomic); sharded checkpoints are always written in the foreground",
                  "argparse_alias": ("--save-async",)},
    )
    save_format: SAVE_FORMAT_CHOICES = field(  # type: ignore[valid-type]
        default="pt",
        metadata={"help": "pt: each checkpoint is one NAME.pt (torch.save); safetensors: the model "
                  "weights go to NAME.safetensors (no pickle, mmap-loadable, readable by other "
                  "tools) and the rest of the training state to NAME.pt, which records the "
                  "weights' SHA-256; every loader takes either file of the pair"},
    )
    finetune_from_model: Optional[str] = field(
        default=None,
        metadata={"help": "start from this checkpoint's model weights only (fresh optimizer, "
                  "schedule, data position); ignored when save_dir holds checkpoint_last.pt"},
    )
    no_epoch_checkpoints: bool = field(
        default=False, metadata={"help": "only keep checkpoint_last.pt and checkpoint_best.pt"}
    )
    best_checkpoint_metric: str = field(
        default="loss", metadata={"help": "validation metric that decides checkpoint_best.pt"}
    )
    maximize_best_checkpoint_metric: bool = field(
        default=False, metadata={"help": "a larger best_checkpoint_metric is better"}
    )

    @classmethod
    def check_config(cls, node: Any, prefix: str = "checkpoint") -> None:
        """``save_format=safetensors`` needs ``safetensors``: said before training, not at the first save."""
        import importlib.util
        from fairseq.errors import ConfigError
        if str(node.get("save_format", "pt")) == "safetensors" and importlib.util.find_spec("safetensors") is None:
            raise ConfigError(f"{prefix}.save_format=safetensors (--save-format) needs the 'safetensors' "
                              "package: pip install safetensors (or pip install -e '.[hf]')")


@dataclass
class CommonEvalConfig(FairseqDataclass):
    """What every evaluation command reads: the checkpoint and how to report."""

    path: Optional[str] = field(
        default=None,
        metadata={"help": "the checkpoint file to evaluate (required by fairseq-eval-lm and "
                  "fairseq-validate)"},
    )
    post_process: Optional[str] = field(
        default=None,
        metadata={"help": "undo a subword segmentation before counting words: 'subword_nmt' "
                  "(or '@@ ') joins tokens ending in '@@' with the next one",
                  "argparse_alias": ("--remove-bpe",)},
    )
    quiet: bool = field(default=False, metadata={"help": "only print the final scores"})
    model_overrides: str = field(
        default="{}",
        metadata={"help": "a Python dict literal of config values that replace the checkpoint's "
                  "when the model is rebuilt, e.g. \"{'dropout': 0.0}\""},
    )
    results_path: Optional[str] = field(
        default=None, metadata={"help": "also write the results to files in this directory"}
    )


@dataclass
class EvalLMConfig(FairseqDataclass):
    """Options of ``fairseq-eval-lm``."""

    output_word_probs: bool = field(
        default=False,
        metadata={"help": "log every scored word of each sample with its log-probability (base e)"},
    )
    output_word_stats: bool = field(
        default=False,
        metadata={"help": "log per-word statistics at the end: count, summed log-probability, "
                  "whether it was a subword, summed log-probability of the word after it"},
    )
    context_window: int = field(
        default=0,
        metadata={"help": "score each block of tokens_per_sample - N tokens with up to N tokens "
                  "of the blocks before it as context (only the new tokens are scored); 0: blocks "
                  "are scored independently"},
    )
    softmax_batch: int = field(
        default=sys.maxsize,
        metadata={"help": "compute the output softmax over at most this many tokens at a time "
                  "(lower it when batch x length x vocabulary does not fit in memory)", "min": 1},
    )


@dataclass
class GenerationConfig(FairseqDataclass):
    """Options of text generation (``fairseq.options.get_generation_parser``), fairseq's flags.

    Only the options that apply to language models are declared: beam search, sampling, length
    and n-gram constraints, penalties, an added language model.
    """

    beam: int = field(default=5, metadata={"help": "number of hypotheses kept at each step", "min": 1})
    nbest: int = field(default=1, metadata={"help": "number of hypotheses returned per input", "min": 1})
    max_len_a: float = field(
        default=0, metadata={"help": "the longest output is max_len_a * input length + max_len_b",
                              "min": 0}
    )
    max_len_b: int = field(
        default=200, metadata={"help": "the longest output is max_len_a * input length + max_len_b",
                                "min": 0}
    )
    min_len: int = field(default=1, metadata={"help": "the shortest output (EOS is blocked before)",
                                             "min": 0})
    match_source_len: bool = field(
        default=False, metadata={"help": "outputs are exactly as long as their input"}
    )
    unnormalized: bool = field(
        default=False, metadata={"help": "rank hypotheses by total, not per-token, score"}
    )
    no_early_stop: bool = field(
        default=False,
        metadata={"help": "accepted for fairseq command lines (fairseq deprecated it); no effect, "
                  "and a warning says so"},
    )
    no_beamable_mm: bool = field(
        default=False,
        metadata={"help": "accepted for fairseq command lines; no effect here (this attention has "
                  "no beamable matrix multiply), and a warning says so"},
    )
    lenpen: float = field(
        default=1.0,
        metadata={"help": "length penalty exponent: below 1 favours shorter outputs, above 1 longer"},
    )
    unkpen: float = field(
        default=0.0, metadata={"help": "subtracted from the score of <unk>: positive values avoid it"}
    )
    replace_unk: Optional[str] = field(
        default=None,
        metadata={"help": "translation only (copies source words through an alignment): refused "
                  "for language models"},
    )
    sacrebleu: bool = field(
        default=False,
        metadata={"help": "translation only (scores against references): refused for language models"},
    )
    score_reference: bool = field(
        default=False, metadata={"help": "only score the reference, generate nothing"}
    )
    prefix_size: int = field(
        default=0, metadata={"help": "force the first N target tokens to those of the reference", "min": 0}
    )
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "never repeat an n-gram of this size (0: off)", "min": 0}
    )
    sampling: bool = field(
        default=False, metadata={"help": "sample the next token instead of searching a beam"}
    )
    sampling_topk: int = field(
        default=-1, metadata={"help": "sample among the K most likely tokens only (-1: all)",
                               "min": 1, "also": (-1,)}
    )
    sampling_topp: float = field(
        default=-1.0,
        metadata={"help": "sample among the fewest most likely tokens whose probabilities add up "
                  "to more than p (-1: off)", "above": 0, "max": 1, "also": (-1,)},
    )
    temperature: float = field(
        default=1.0, metadata={"help": "divide the logits by this before the softmax", "above": 0}
    )
    diverse_beam_groups: int = field(
        default=-1,
        metadata={"help": "diverse beam search, a translation feature: refused for language models"},
    )
    diverse_beam_strength: float = field(
        default=0.5,
        metadata={"help": "penalty of diverse beam search, a translation feature: refused for "
                  "language models when changed"},
    )
    diversity_rate: float = field(
        default=-1.0,
        metadata={"help": "diverse siblings search, a translation feature: refused for language models"},
    )
    print_step: bool = field(
        default=False,
        metadata={"help": "also print I-<id> lines: the decoding step at which each hypothesis ended"},
    )
    lm_path: Optional[str] = field(
        default=None, metadata={"help": "a language model checkpoint whose scores are added"}
    )
    lm_weight: float = field(
        default=0.0, metadata={"help": "weight of the added language model's log-probabilities"}
    )
    retain_dropout: bool = field(
        default=False,
        metadata={"help": "keep dropout on while generating (outputs then vary from run to run)"},
    )
    no_seed_provided: bool = field(
        default=False,
        metadata={"help": "do not seed the random generators with common.seed before generating"},
    )
    eos_token: Optional[str] = field(
        default=None,
        metadata={"help": "another end symbol than </s>: not supported, refused for language models"},
    )


@dataclass
class InteractiveConfig(FairseqDataclass):
    """Options of interactive generation (``fairseq.options.get_interactive_parser``)."""

    buffer_size: int = field(
        default=0, metadata={"help": "read this many inputs before generating for them (0: one)", "min": 0}
    )
    input: str = field(default="-", metadata={"help": "file to read inputs from; - for stdin"})


@dataclass
class FairseqConfig(FairseqDataclass):
    """The whole run: generic groups plus one node per chosen component."""

    common: CommonConfig = field(default_factory=CommonConfig)
    distributed_training: DistributedTrainingConfig = field(default_factory=DistributedTrainingConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    common_eval: CommonEvalConfig = field(default_factory=CommonEvalConfig)
    eval_lm: EvalLMConfig = field(default_factory=EvalLMConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    interactive: InteractiveConfig = field(default_factory=InteractiveConfig)
    task: Any = None
    model: Any = None
    criterion: Any = None
    optimizer: Any = None
    lr_scheduler: Any = None
    bpe: Any = None
    tokenizer: Any = None


# Generic groups in the order they appear on the command line and in --help.
GENERIC_GROUPS = {
    "common": CommonConfig,
    "distributed_training": DistributedTrainingConfig,
    "dataset": DatasetConfig,
    "optimization": OptimizationConfig,
    "checkpoint": CheckpointConfig,
    "common_eval": CommonEvalConfig,
    "eval_lm": EvalLMConfig,
    "generation": GenerationConfig,
    "interactive": InteractiveConfig,
}
# Component groups: each holds the config of one registered component, chosen by name.
# ``bpe`` and ``tokenizer`` are optional: no choice leaves the node ``None``.
COMPONENT_GROUPS = ("task", "model", "criterion", "optimizer", "lr_scheduler", "bpe", "tokenizer")
# Component groups that may be left empty (fairseq's ``--bpe``/``--tokenizer`` default to none).
OPTIONAL_COMPONENT_GROUPS = ("bpe", "tokenizer")

__all__ = [
    "ChoiceEnum", "FairseqDataclass", "FairseqConfig", "CommonConfig", "DistributedTrainingConfig",
    "DatasetConfig", "OptimizationConfig", "CheckpointConfig", "CommonEvalConfig", "EvalLMConfig", "GenerationConfig", "InteractiveConfig", "GENERIC_GROUPS",
    "COMPONENT_GROUPS", "OPTIONAL_COMPONENT_GROUPS", "interpolation_target", "field_default",
]
