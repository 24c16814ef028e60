"""The criterion base and the reduction of per-batch logging outputs."""
import inspect
import math
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from fairseq.dataclass.flags import DataclassFlags
from fairseq.errors import ConfigError


def _has(cfg: Any, name: str) -> bool:
    return name in cfg if isinstance(cfg, dict) or hasattr(cfg, "keys") else hasattr(cfg, name)


def _get(cfg: Any, name: str) -> Any:
    return cfg[name] if isinstance(cfg, dict) or hasattr(cfg, "keys") else getattr(cfg, name)


def sum_logs(key: str, logging_outputs: List[Dict[str, Any]]) -> float:
    """Sum ``key`` over logging outputs; tensors are summed on device and read back once."""
    values = [log[key] for log in logging_outputs if key in log]
    if not values:
        return 0.0
    tensors = [v for v in values if torch.is_tensor(v)]
    total = sum(v for v in values if not torch.is_tensor(v))
    if tensors:
        total += torch.stack([t.detach().float().reshape(()) for t in tensors]).sum().item()
    return float(total)


class FairseqCriterion(nn.Module, DataclassFlags):
    """A loss over a batch: ``forward(model, sample) -> (loss, sample_size, logging_output)``.

    ``loss`` is summed over the batch (nats); the trainer divides gradients by the total
    ``sample_size`` of an update. ``logging_output`` values may be tensors: they are only read
    back to the host in :meth:`reduce_metrics`, once per log interval.
    """

    #: the metrics :meth:`reduce_metrics` reports, which ``checkpoint.best_checkpoint_metric``
    #: may name (checked before a run starts). A subclass that reports others declares them
    #: beside its own ``reduce_metrics``; without that declaration, any name is accepted.
    reported_metrics: Tuple[str, ...] = ("loss", "nll_loss", "ppl")

    def __init__(self, task: Any):
        super().__init__()
        self.task = task
        dictionary = getattr(task, "target_dictionary", None)
        self.padding_idx = dictionary.pad() if dictionary is not None else -100

    @classmethod
    def build_criterion(cls, cfg: Any, task: Any) -> "FairseqCriterion":
        """Build from the config by the names of ``__init__``'s parameters, as fairseq does:
        ``task`` gets the task, ``cfg`` the config, any other name the config's value of that
        name (or the parameter's default). So this package's ``__init__(cfg, task)`` and
        fairseq's ``__init__(task, sentence_avg, ...)`` both build.

        Raises:
            ConfigError: a parameter the config has no value for and that has no default.
        """
        kwargs: Dict[str, Any] = {}
        for p in inspect.signature(cls).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise ConfigError(f"criterion {cls.__name__}.__init__ takes {p}: a criterion is built "
                                  "by parameter name (task, cfg, or the names of its config's fields)")
            if p.name == "task":
                kwargs["task"] = task
            elif p.name == "cfg":
                kwargs["cfg"] = cfg
            elif cfg is not None and _has(cfg, p.name):
                kwargs[p.name] = _get(cfg, p.name)
            elif p.default is p.empty:
                raise ConfigError(f"criterion {cls.__name__}.__init__ needs {p.name!r}, which its config "
                                  "does not have; add it to the criterion's dataclass or give it a default")
        return cls(**kwargs)

    def forward(self, model: nn.Module, sample: Dict[str, Any],
                reduce: bool = True) -> Tuple[torch.Tensor, int, Dict[str, Any]]:
        raise NotImplementedError

    @staticmethod
    def reduce_metrics(logging_outputs: List[Dict[str, Any]]) -> Dict[str, float]:
        """Token-averaged loss in base 2 (as fairseq users read it) and its perplexity."""
        loss_sum = sum_logs("loss", logging_outputs)
        ntokens = sum_logs("ntokens", logging_outputs)
        sample_size = sum_logs("sample_size", logging_outputs)
        nsentences = sum_logs("nsentences", logging_outputs)
        stats = {"loss": loss_sum / max(sample_size, 1) / math.log(2)}
        # criterions that smooth or regularise report the plain nll separately
        has_nll = any("nll_loss" in log for log in logging_outputs)
        nll_sum = sum_logs("nll_loss", logging_outputs) if has_nll else loss_sum
        nll = nll_sum / max(ntokens, 1) / math.log(2)
        stats["nll_loss"] = nll
        stats["ppl"] = 2.0 ** min(nll, 100.0)
        stats.update({"ntokens": ntokens, "nsentences": nsentences, "sample_size": sample_size})
        return stats
