"""Constants, the refusal error and config reading shared by the bridge's modules."""
from typing import Any


from fairseq.errors import ConfigError




META_KEY = "fairseq"
META_VERSION = 1
# safetensors metadata: learned-position rows that fairseq keeps before its first position
UNUSED_ROWS_KEY = "fairseq.embed_positions.rows_before_offset"
SUPPORTED_MODEL_TYPES = ("gpt2", "xglm", "llama")
FAIRSEQ_SPECIALS = ("bos", "pad", "eos", "unk")  # fairseq ids 0, 1, 2, 3
SPECIAL_SYMBOLS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default: every LayerNorm of transformer_lm
# the logit that the rows of fairseq-only specials get on import (exp(-1e4) is 0 in float32)
SILENT_LOGIT = -1.0e4
SILENT_ROW_LIMIT = 3.0e4  # largest weight of such a row (fits float16 and bfloat16)

# activation_fn -> transformers' ACT2FN name computing exactly the same function
ACTIVATION_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_accurate": "gelu_pytorch_tanh",
                    "gelu_fast": "gelu_pytorch_tanh", "tanh": "tanh", "silu": "silu", "linear": "linear"}
# ACT2FN name -> activation_fn; gelu_new / gelu_fast / gelu_python_tanh are the tanh GELU written
# out (equal to F.gelu(approximate="tanh") within float rounding)
ACTIVATION_FROM_HF = {"relu": "relu", "gelu": "gelu", "gelu_python": "gelu", "gelu_pytorch_tanh": "gelu_accurate",
                      "gelu_new": "gelu_accurate", "gelu_fast": "gelu_accurate",
                      "gelu_python_tanh": "gelu_accurate", "tanh": "tanh", "silu": "silu", "swish": "silu",
                      "linear": "linear"}


class UnmappableModelError(ConfigError):
    """A model (or HF directory) that the other side cannot represent: the message names the
    option and what would make it fit. A user error (exit code 2)."""


def cfg_value(node: Any, key: str, default: Any = None) -> Any:
    """``node[key]`` of a dict, DictConfig or dataclass, ``default`` when absent or None."""
    if node is None:
        return default
    try:
        value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    except Exception:  # an unresolvable interpolation (e.g. max_target_positions on its own)
        value = default
    return default if value is None else value


def cfg_dim(model_cfg: Any, key: str) -> int:
    value = cfg_value(model_cfg, key)
    if value is None or (isinstance(value, str) and value.startswith("${")):
        return int(cfg_value(model_cfg, "decoder_embed_dim"))
    return int(value)


VOCAB_LAYER_KEYS = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")
