"""Hugging Face ``transformers`` <-> ``transformer_lm``: the weight and vocabulary mapping, both ways.

Export (``fairseq-export-hf``) writes a directory that ``AutoModelForCausalLM.from_pretrained``
loads with no custom code; import (``fairseq-import-hf``) turns such a directory back into a
checkpoint of this package. ``docs/huggingface.md`` is the user's guide; in short:

* a pre-norm ``transformer_lm`` with sinusoidal positions is an ``XGLMForCausalLM``: XGLM is
  fairseq's own decoder (pre-norm, sinusoids offset by ``padding_idx + 1 = 2``, embeddings
  scaled by ``sqrt(d)`` unless ``scale_embedding`` is off, a final LayerNorm);
* a pre-norm ``transformer_lm`` with learned positions is a ``GPT2LMHeadModel``: the learned
  table loses its first ``padding_idx + 1`` rows (fairseq's positions start there, GPT-2's at 0).
  GPT-2 has no embedding scale, so a model that scales (the default, and every preset) is
  written with an untied ``lm_head`` (the original table) and ``wte`` = table x scale, which is
  the same product fairseq computes; import recognizes the pair and ties them again;
* anything else (post-norm, adaptive input or softmax, an embedding LayerNorm, NormFormer
  scales, no final LayerNorm, no positions, input/output projections) is refused by
  :class:`UnmappableModelError`, one line naming the option.

Vocabulary: the exported model's ids *are* the fairseq dictionary's ids (``<s>=0``, ``<pad>=1``,
``</s>=2``, ``<unk>=3``, then ``dict.txt``), written as ``bos/pad/eos`` ids of the config and
the tokenizer's ``unk``. A fairseq LM starts every sample with ``</s>`` (``<s>`` with
``task.add_bos_token``), so the exported tokenizer prepends that token: ``tokenizer(text)``
gives the ids ``fairseq`` feeds its model, and the logits agree.

Import of a directory that was not exported from here maps the HF special tokens onto fairseq's
(HF ``eos`` -> ``</s>``, and ``bos``, ``pad``, ``unk`` when the HF vocabulary has distinct ones);
the other HF tokens keep their order after fairseq's four. A fairseq special that the HF
vocabulary lacks (GPT-2 has only ``<|endoftext|>``, so ``<s>``, ``<pad>`` and ``<unk>``) gets
an output row whose logit is a constant far below every real one (see :func:`silent_rows`), so
the probabilities of the HF tokens are HF's.

Layering: this module sits above the checkpoint code and the hub (``setup.cfg``); only
``fairseq_cli`` imports it. ``transformers`` is never imported here: the files are read and
written as JSON and safetensors (``safetensors`` and, for tokenizers, ``tokenizers``).
"""
import base64
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from fairseq import hf_validation as checks
from fairseq.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "ExportReport", "ImportReport", "UnmappableModelError", "export_checkpoint", "export_model",
    "fairseq_to_hf", "from_pretrained_hf", "hf_target", "hf_to_fairseq", "import_directory",
    "is_hf_model_dir", "load_hf_directory", "silent_rows",
]

# the key of config.json under which an export records what HF's config cannot say
META_KEY = "fairseq"
META_VERSION = 1
# safetensors metadata: learned-position rows that fairseq keeps before its first position
UNUSED_ROWS_KEY = "fairseq.embed_positions.rows_before_offset"
SUPPORTED_MODEL_TYPES = ("gpt2", "xglm")
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


def _get(node: Any, key: str, default: Any = None) -> Any:
    """``node[key]`` of a dict, DictConfig or dataclass, ``default`` when absent or None."""
    if node is None:
        return default
    try:
        value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    except Exception:  # an unresolvable interpolation (e.g. max_target_positions on its own)
        value = default
    return default if value is None else value


def _dim(model_cfg: Any, key: str) -> int:
    value = _get(model_cfg, key)
    if value is None or (isinstance(value, str) and value.startswith("${")):
        return int(_get(model_cfg, "decoder_embed_dim"))
    return int(value)


# -- which HF class a transformer_lm becomes ----------------------------------------------------
def _refusals(model_cfg: Any) -> List[str]:
    """The options of ``model_cfg`` that neither GPT-2 nor XGLM has, each with its fix."""
    found = []
    if not _get(model_cfg, "decoder_normalize_before", True):
        found.append("post-norm blocks (decoder_normalize_before=false): GPT-2 and XGLM are pre-norm")
    if _get(model_cfg, "no_decoder_final_norm", False):
        found.append("no final LayerNorm (no_decoder_final_norm=true): GPT-2 and XGLM end in one")
    if _get(model_cfg, "adaptive_softmax_cutoff") is not None:
        found.append(f"an adaptive softmax (adaptive_softmax_cutoff={_get(model_cfg, 'adaptive_softmax_cutoff')}): "
                     "HF models have one full output layer")
    if _get(model_cfg, "adaptive_input", False):
        found.append("adaptive input embeddings (adaptive_input=true): HF models have one embedding table")
    if _get(model_cfg, "layernorm_embedding", False):
        found.append("a LayerNorm of the embeddings (layernorm_embedding=true): neither GPT-2 nor XGLM has one")
    for key in ("scale_attn", "scale_fc", "scale_heads", "scale_resids"):
        if _get(model_cfg, key, False):
            found.append(f"NormFormer's {key}=true: neither GPT-2 nor XGLM has it")
    if _get(model_cfg, "no_token_positional_embeddings", False):
        found.append("no position embeddings (no_token_positional_embeddings=true): GPT-2 and XGLM add them")
    embed_dim = int(_get(model_cfg, "decoder_embed_dim"))
    for key in ("decoder_input_dim", "decoder_output_dim"):
        if _dim(model_cfg, key) != embed_dim:
            found.append(f"{key}={_dim(model_cfg, key)} != decoder_embed_dim={embed_dim} (a projection "
                         "neither GPT-2 nor XGLM has)")
    activation = str(_get(model_cfg, "activation_fn", "relu"))
    if activation not in ACTIVATION_TO_HF:
        found.append(f"activation_fn={activation}: no transformers activation computes it")
    return found


def hf_target(model_cfg: Any) -> str:
    """``"gpt2"`` (learned positions) or ``"xglm"`` (sinusoids) for a ``transformer_lm`` config.

    Raises:
        UnmappableModelError: the first option neither can represent, one line.
    """
    name = str(_get(model_cfg, "_name", "transformer_lm"))
    if not name.startswith("transformer_lm"):
        raise UnmappableModelError(f"model {name!r} cannot be exported: only transformer_lm models map to "
                                   "GPT2LMHeadModel / XGLMForCausalLM")
    problems = _refusals(model_cfg)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise UnmappableModelError(f"cannot export to transformers: {problems[0]}{more}")
    return "gpt2" if _get(model_cfg, "decoder_learned_pos", False) else "xglm"


# -- fairseq -> HF --------------------------------------------------------------------------------
def _layer_ids(state: Mapping[str, Tensor]) -> List[int]:
    ids = {int(k.split(".")[2]) for k in state if k.startswith("decoder.layers.")}
    return sorted(ids)


def fairseq_to_hf(state: Mapping[str, Tensor], model_cfg: Any, vocab_size: int, padding_idx: int = 1,
                  special_ids: Optional[Dict[str, int]] = None, start_token_id: int = 2,
                  unk_aliases: int = 0) -> Tuple[Dict[str, Any], Dict[str, Tensor], Dict[str, str]]:
    """The HF config, weights and safetensors metadata of a ``transformer_lm``.

    Args:
        state: the model's ``state_dict()`` (this package's layout: fused ``in_proj``).
        model_cfg: its ``cfg.model``.
        vocab_size: the dictionary's size (rows of the embedding).
        padding_idx: the dictionary's pad id (positions start at ``padding_idx + 1``).
        special_ids: ``{"bos", "pad", "eos", "unk"}`` ids (default fairseq's 0-3).
        start_token_id: the token fairseq puts first in every sample (``</s>``, or ``<s>`` with
            ``add_bos_token``).
        unk_aliases: ids to append after the dictionary's, each a copy of ``<unk>``'s rows (the
            GPT-2 tokens a dictionary lacks, see :func:`_gpt2_tokenizer`).

    Returns:
        ``(config, tensors, metadata)``: ``config`` for config.json, ``tensors`` for
        model.safetensors (contiguous, none sharing memory), ``metadata`` for its header.

    Raises:
        UnmappableModelError: a model neither GPT-2 nor XGLM can represent, or weights that do
            not fit its config.
    """
    target = hf_target(model_cfg)
    special_ids = dict(special_ids or {"bos": 0, "pad": 1, "eos": 2, "unk": 3})
    src = dict(state)
    used = set()

    def take(key: str) -> Tensor:
        if key not in src:
            raise UnmappableModelError(f"the model has no weight {key!r}, which its config implies; "
                                       "export a checkpoint of transformer_lm as it was trained")
        used.add(key)
        return src[key].detach().to("cpu")

    def t(x: Tensor) -> Tensor:
        """``x`` as safetensors takes it: contiguous, and owning its storage (a slice of a
        fused weight is copied); whole tensors are passed as they are, not copied."""
        if not x.is_contiguous():
            return x.contiguous()
        if x.storage_offset() or x.untyped_storage().nbytes() != x.numel() * x.element_size():
            return x.clone()
        return x

    embed_dim = int(_get(model_cfg, "decoder_embed_dim"))
    heads = int(_get(model_cfg, "decoder_attention_heads"))
    ffn = int(_get(model_cfg, "decoder_ffn_embed_dim"))
    layers = _layer_ids(src)
    scale = 1.0 if _get(model_cfg, "no_scale_embedding", False) else math.sqrt(embed_dim)
    embed = take("decoder.embed_tokens.weight")
    if embed.shape != (vocab_size, embed_dim):
        raise UnmappableModelError(f"decoder.embed_tokens.weight is {tuple(embed.shape)}, not ({vocab_size}, "
                                   f"{embed_dim}): give --data the dictionary the model was trained with")
    out_w = take("decoder.output_projection.weight")
    tied = out_w.data_ptr() == embed.data_ptr() or bool(_get(model_cfg, "share_decoder_input_output_embed", False))
    if tied and not torch.equal(out_w, embed):
        tied = False
    if unk_aliases:  # more ids, each <unk> to the model (input and output rows)
        unk = special_ids["unk"]
        if tied:
            embed = out_w = torch.cat([embed, embed[unk:unk + 1].expand(unk_aliases, -1)])
        else:
            embed = torch.cat([embed, embed[unk:unk + 1].expand(unk_aliases, -1)])
            out_w = torch.cat([out_w, out_w[unk:unk + 1].expand(unk_aliases, -1)])
        vocab_size += unk_aliases
    activation = ACTIVATION_TO_HF[str(_get(model_cfg, "activation_fn", "relu"))]
    dropout = float(_get(model_cfg, "dropout", 0.0))
    attention_dropout = float(_get(model_cfg, "attention_dropout", 0.0))
    activation_dropout = float(_get(model_cfg, "activation_dropout", 0.0) or _get(model_cfg, "relu_dropout", 0.0))
    max_positions = int(_get(model_cfg, "max_target_positions", 1024))
    tensors: Dict[str, Tensor] = {}
    metadata: Dict[str, str] = {"format": "pt"}
    ids = {"bos_token_id": special_ids["bos"], "pad_token_id": special_ids["pad"],
           "eos_token_id": special_ids["eos"]}

    if target == "xglm":
        if padding_idx != 1:
            raise UnmappableModelError(f"the dictionary's pad id is {padding_idx}: XGLM's sinusoids start at "
                                       "position 2, fairseq's at pad + 1; only pad id 1 (fairseq's) maps")
        for key in [k for k in src if k.startswith("decoder.embed_positions.")]:
            used.add(key)  # a cached sinusoid table (recomputed on both sides)
        p = "model."
        tensors[p + "embed_tokens.weight"] = t(embed)
        for new, i in enumerate(layers):
            o, h = f"decoder.layers.{i}.", f"{p}layers.{new}."
            q, k, v = take(o + "self_attn.in_proj.weight").chunk(3, dim=0)
            qb, kb, vb = take(o + "self_attn.in_proj.bias").chunk(3, dim=0)
            for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
                tensors[f"{h}self_attn.{name}.weight"] = t(w)
                tensors[f"{h}self_attn.{name}.bias"] = t(b)
            for ours, theirs in (("self_attn.out_proj", "self_attn.out_proj"),
                                 ("self_attn_layer_norm", "self_attn_layer_norm"), ("fc1", "fc1"),
                                 ("fc2", "fc2"), ("final_layer_norm", "final_layer_norm")):
                for kind in ("weight", "bias"):
                    tensors[f"{h}{theirs}.{kind}"] = t(take(f"{o}{ours}.{kind}"))
        tensors[p + "layer_norm.weight"] = t(take("decoder.layer_norm.weight"))
        tensors[p + "layer_norm.bias"] = t(take("decoder.layer_norm.bias"))
        if not tied:
            tensors["lm_head.weight"] = t(out_w)
        config = {
            "architectures": ["XGLMForCausalLM"], "model_type": "xglm", "vocab_size": vocab_size,
            "max_position_embeddings": max_positions, "d_model": embed_dim, "ffn_dim": ffn,
            "num_layers": len(layers), "attention_heads": heads, "activation_function": activation,
            "dropout": dropout, "attention_dropout": attention_dropout, "activation_dropout": activation_dropout,
            "layerdrop": float(_get(model_cfg, "decoder_layerdrop", 0.0)), "init_std": 0.02,
            "scale_embedding": scale != 1.0, "use_cache": True, "decoder_start_token_id": start_token_id,
            **ids, "tie_word_embeddings": tied, "dtype": "float32",
        }
    else:
        positions = take("decoder.embed_positions.weight")
        offset = padding_idx + 1
        n_positions = positions.size(0) - offset
        if n_positions < 1 or positions.size(1) != embed_dim:
            raise UnmappableModelError(f"decoder.embed_positions.weight is {tuple(positions.shape)}: not a learned "
                                       f"table of positions after pad id {padding_idx}")
        rows = positions[:offset]
        if rows.any():  # never read by fairseq either; kept so that import restores them
            metadata[UNUSED_ROWS_KEY] = json.dumps({"shape": list(rows.shape), "float32": base64.b64encode(
                rows.to(torch.float32).contiguous().numpy().tobytes()).decode("ascii")})
        p = "transformer."
        # GPT-2 adds no scale: wte holds the scaled table (the very product fairseq computes),
        # lm_head the table itself
        tensors[p + "wte.weight"] = t(embed * scale) if scale != 1.0 else t(embed)
        tensors[p + "wpe.weight"] = t(positions[offset:])
        for new, i in enumerate(layers):
            o, h = f"decoder.layers.{i}.", f"{p}h.{new}."
            tensors[h + "ln_1.weight"] = t(take(o + "self_attn_layer_norm.weight"))
            tensors[h + "ln_1.bias"] = t(take(o + "self_attn_layer_norm.bias"))
            tensors[h + "attn.c_attn.weight"] = t(take(o + "self_attn.in_proj.weight").T)
            tensors[h + "attn.c_attn.bias"] = t(take(o + "self_attn.in_proj.bias"))
            tensors[h + "attn.c_proj.weight"] = t(take(o + "self_attn.out_proj.weight").T)
            tensors[h + "attn.c_proj.bias"] = t(take(o + "self_attn.out_proj.bias"))
            tensors[h + "ln_2.weight"] = t(take(o + "final_layer_norm.weight"))
            tensors[h + "ln_2.bias"] = t(take(o + "final_layer_norm.bias"))
            tensors[h + "mlp.c_fc.weight"] = t(take(o + "fc1.weight").T)
            tensors[h + "mlp.c_fc.bias"] = t(take(o + "fc1.bias"))
            tensors[h + "mlp.c_proj.weight"] = t(take(o + "fc2.weight").T)
            tensors[h + "mlp.c_proj.bias"] = t(take(o + "fc2.bias"))
        tensors[p + "ln_f.weight"] = t(take("decoder.layer_norm.weight"))
        tensors[p + "ln_f.bias"] = t(take("decoder.layer_norm.bias"))
        hf_tied = tied and scale == 1.0
        if not hf_tied:
            tensors["lm_head.weight"] = t(out_w)
        config = {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
            "n_positions": n_positions, "n_embd": embed_dim, "n_layer": len(layers), "n_head": heads,
            "n_inner": ffn, "activation_function": activation, "resid_pdrop": dropout, "embd_pdrop": dropout,
            "attn_pdrop": attention_dropout, "layer_norm_epsilon": LAYER_NORM_EPS, "initializer_range": 0.02,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "use_cache": True, **ids, "tie_word_embeddings": hf_tied,
            "dtype": "float32",
        }
    leftover = sorted(set(src) - used - {"decoder.embed_tokens.weight", "decoder.output_projection.weight"})
    if leftover:
        raise UnmappableModelError(f"weights with no place in {config['architectures'][0]}: "
                                   f"{', '.join(leftover[:4])}{' ...' if len(leftover) > 4 else ''}")
    return config, tensors, metadata


# -- HF -> fairseq ----------------------------------------------------------------------------
@dataclass
class VocabMap:
    """Which HF id each fairseq id stands for.

    Attributes:
        hf_ids: ``hf_ids[fairseq_id]`` is the HF id, or None for a fairseq special the HF
            vocabulary has no token for.
        symbols: the fairseq symbols after the four specials (the lines of ``dict.txt``).
        kind: where the symbols come from: ``"dict"`` (a fairseq dict.txt), ``"words"`` (the
            tokens of a word-level tokenizer), ``"gpt2"`` (GPT-2 byte-level BPE ids as decimal
            strings, fairseq's ``--bpe gpt2`` convention) or ``"ids"`` (decimal HF ids).
    """

    hf_ids: List[Optional[int]]
    symbols: List[str]
    kind: str = "ids"
    notes: List[str] = field(default_factory=list)

    @property
    def extras(self) -> List[int]:
        return [i for i, h in enumerate(self.hf_ids) if h is None]

    @property
    def is_identity(self) -> bool:
        return all(h == i for i, h in enumerate(self.hf_ids))


def _special_id(value: Any) -> Optional[int]:
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def build_vocab_map(hf_config: Mapping[str, Any], tokens: Optional[List[Optional[str]]], kind: str,
                    unk_id: Optional[int] = None, pad_id: Optional[int] = None,
                    fairseq_symbols: Optional[List[str]] = None) -> VocabMap:
    """Map an HF vocabulary onto a fairseq dictionary.

    Args:
        hf_config: config.json (``vocab_size``, ``bos/eos/pad_token_id``).
        tokens: HF token strings by id (None: unknown), or None without a tokenizer.
        kind: ``"words"``, ``"gpt2"`` or ``"ids"`` (see :class:`VocabMap`).
        unk_id, pad_id: the tokenizer's unk and pad ids when the config has none.
        fairseq_symbols: the symbols of a fairseq ``dict.txt`` shipped in the directory; used
            (ids unchanged) when the HF special ids are fairseq's.

    Raises:
        UnmappableModelError: no ``eos_token_id`` (fairseq's LMs end and start samples with it).
    """
    vocab_size = int(hf_config["vocab_size"])
    bos = _special_id(hf_config.get("bos_token_id"))
    eos = _special_id(hf_config.get("eos_token_id"))
    pad = _special_id(hf_config.get("pad_token_id"))
    pad = pad if pad is not None else pad_id
    unk = _special_id(hf_config.get("unk_token_id"))
    unk = unk if unk is not None else unk_id
    if eos is None or not 0 <= eos < vocab_size:
        raise UnmappableModelError(f"config.json has no eos_token_id within the vocabulary ({eos!r}): fairseq "
                                   "LMs start and end every sample with </s>; set eos_token_id in config.json")
    if (bos, pad, eos) == (0, 1, 2) and unk is None and vocab_size > 3:
        unk = 3  # fairseq's (and XGLM's) layout
    if fairseq_symbols is not None and (bos, pad, eos, unk) == (0, 1, 2, 3) \
            and len(fairseq_symbols) + 4 == vocab_size:
        return VocabMap(list(range(vocab_size)), list(fairseq_symbols), "dict")
    hf_of: Dict[str, Optional[int]] = {"eos": eos}
    taken = {eos}
    for name, hf_id in (("bos", bos), ("pad", pad), ("unk", unk)):
        if hf_id is not None and 0 <= hf_id < vocab_size and hf_id not in taken:
            hf_of[name] = hf_id
            taken.add(hf_id)
        else:
            hf_of[name] = None
    rest = [i for i in range(vocab_size) if i not in taken]
    hf_ids: List[Optional[int]] = [hf_of[name] for name in FAIRSEQ_SPECIALS] + rest
    notes: List[str] = []
    symbols: Optional[List[str]] = None
    if kind == "words" and tokens is not None:
        symbols = []
        for i in rest:
            token = tokens[i] if i < len(tokens) else None
            symbols.append(token if token is not None else f"madeupword{i:04d}")
        reserved = set(SPECIAL_SYMBOLS.values())
        if (len(set(symbols)) != len(symbols) or any(not s or any(c.isspace() for c in s) for s in symbols)
                or reserved & set(symbols)):
            notes.append("the tokenizer's tokens are not usable as dict.txt symbols (duplicates, spaces or "
                         "fairseq's special names): the symbols are the HF ids as decimal numbers")
            symbols, kind = None, "ids"
    if symbols is None:
        symbols = [str(i) for i in rest]
        kind = kind if kind in ("gpt2", "ids") else "ids"
    return VocabMap(hf_ids, symbols, kind, notes)


def silent_rows(ln_weight: Tensor, ln_bias: Tensor, count: int, logit: float = SILENT_LOGIT,
                limit: float = SILENT_ROW_LIMIT) -> Optional[Tensor]:
    """Output rows whose logit is the same constant, about ``logit``, for every input.

    The output layer reads ``h = g * n + b``, the final LayerNorm's output, where the normalized
    ``n`` sums to zero over the features. A row ``w = c / g`` gives ``w . h = c * sum(n) +
    c * sum(b / g) = c * sum(b / g)``: a constant, set to ``logit`` by the choice of ``c``. These
    rows stand for fairseq specials that an imported HF vocabulary lacks, so that they take no
    probability from the HF tokens (a zero row would have logit 0, far above GPT-2's logits).

    Returns:
        ``(count, C)`` rows, or None when the LayerNorm does not allow it (a gain of zero, or
        ``sum(b / g)`` too small for a strongly negative logit within ``limit``, e.g. the zero
        biases of a freshly initialized model).
    """
    g, b = ln_weight.detach().double(), ln_bias.detach().double()
    if not bool((g.abs() > 1e-6 * max(float(g.abs().max()), 1e-30)).all()):
        return None
    total = float((b / g).sum())
    if total == 0.0:
        return None
    row = (logit / total) / g
    largest = float(row.abs().max())
    if largest > limit:
        row = row * (limit / largest)
    if float((row * b).sum()) > -100.0:
        return None
    return row.to(torch.float32).unsqueeze(0).repeat(count, 1)


def _meta(hf_config: Mapping[str, Any]) -> Dict[str, Any]:
    meta = hf_config.get(META_KEY)
    return dict(meta) if isinstance(meta, dict) and meta.get("version") == META_VERSION else {}


def _strip_prefix(state: Dict[str, Tensor], prefixes: Tuple[str, ...]) -> Dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p):]
                break
        out[key] = value
    return out


def hf_to_fairseq(hf_config: Mapping[str, Any], hf_state: Mapping[str, Tensor], vocab: VocabMap,
                  safetensors_metadata: Optional[Mapping[str, str]] = None,
                  ) -> Tuple[Dict[str, Any], Dict[str, Tensor], List[str]]:
    """The ``transformer_lm`` config values and state dict of a GPT-2 or XGLM model.

    Args:
        hf_config: its config.json.
        hf_state: its weights (any float dtype; returned as float32).
        vocab: the fairseq dictionary's ids in terms of HF ids (:func:`build_vocab_map`).
        safetensors_metadata: the header metadata of model.safetensors (an export's extra rows).

    Returns:
        ``(model_values, state, notes)``: the values of ``cfg.model`` (``_name`` included), the
        state dict in this package's layout, and lines worth telling the user.

    Raises:
        UnmappableModelError: a model type or option without a ``transformer_lm`` equivalent,
            or weights missing, extra or of the wrong shape.
    """
    model_type = str(hf_config.get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnmappableModelError(f"config.json has model_type={model_type!r}: only gpt2 (GPT2LMHeadModel) and "
                                   "xglm (XGLMForCausalLM) map to transformer_lm")
    if hf_config.get("add_cross_attention"):
        raise UnmappableModelError("add_cross_attention=true: a decoder with cross-attention is no language model "
                                   "transformer_lm can hold")
    meta = _meta(hf_config)
    notes: List[str] = list(vocab.notes)
    src = {k: v.detach().to("cpu") for k, v in hf_state.items()}
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in src.values() if v.is_floating_point()})
    if dtypes and dtypes != ["float32"]:
        notes.append(f"weights stored as {', '.join(dtypes)}: converted to float32")
    src = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in src.items()}
    used = set()

    def take(key: str, shape: Tuple[int, ...]) -> Tensor:
        if key not in src:
            raise UnmappableModelError(f"the {model_type} weights have no {key!r}: the directory is incomplete or "
                                       "not a causal LM checkpoint of that type")
        value = src[key]
        if tuple(value.shape) != tuple(shape):
            raise UnmappableModelError(f"{key} is {tuple(value.shape)}, but config.json implies {tuple(shape)}")
        used.add(key)
        return value

    def output_head(C: int) -> Optional[Tensor]:
        """``lm_head.weight`` (V, C), or None where the weights leave it tied to the embedding."""
        lm_head = src.get("lm_head.weight")
        if lm_head is None:
            if not tied:
                raise UnmappableModelError("tie_word_embeddings=false but the weights have no lm_head.weight")
            return None
        used.add("lm_head.weight")
        if tuple(lm_head.shape) != (V, C):
            raise UnmappableModelError(f"lm_head.weight is {tuple(lm_head.shape)}, not ({V}, {C})")
        return lm_head

    V = int(hf_config["vocab_size"])
    activation_name = str(hf_config.get("activation_function", "gelu_new" if model_type == "gpt2" else "gelu"))
    if activation_name not in ACTIVATION_FROM_HF:
        raise UnmappableModelError(f"activation_function={activation_name!r} has no transformer_lm activation_fn "
                                   f"(supported: {', '.join(sorted(ACTIVATION_FROM_HF))})")
    activation = ACTIVATION_FROM_HF[activation_name]
    if activation_name in ("gelu_new", "gelu_fast", "gelu_python_tanh"):
        notes.append(f"activation {activation_name} is computed as gelu_accurate (the same tanh GELU, "
                     "within float rounding)")
    tied = bool(hf_config.get("tie_word_embeddings", True))
    state: Dict[str, Tensor] = {}

    if model_type == "gpt2":
        src = _strip_prefix(src, ("transformer.",))
        src = {k: v for k, v in src.items() if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"))}
        for key, off in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
            if bool(hf_config.get(key, off)) != off:
                raise UnmappableModelError(f"{key}={not off}: transformer_lm attention scales by 1/sqrt(head_dim) only")
        eps = float(hf_config.get("layer_norm_epsilon", LAYER_NORM_EPS))
        if eps != LAYER_NORM_EPS:
            raise UnmappableModelError(f"layer_norm_epsilon={eps}: transformer_lm's LayerNorms use {LAYER_NORM_EPS}")
        C = int(hf_config.get("n_embd", 768))
        L = int(hf_config.get("n_layer", 12))
        H = int(hf_config.get("n_head", 12))
        F = int(hf_config.get("n_inner") or 4 * C)
        P = int(hf_config.get("n_positions", 1024))
        wte = take("wte.weight", (V, C))
        wpe = take("wpe.weight", (P, C))
        lm_head = output_head(C)
        if tied or lm_head is None:
            lm_head = wte
        # an export of a scaled model: wte = table * scale, lm_head = table
        scale = float(meta.get("embed_scale", 1.0))
        embed_in, no_scale, share = wte, True, tied
        if scale != 1.0 and torch.equal(lm_head * scale, wte):
            embed_in, no_scale, share = lm_head, False, True
        elif scale != 1.0 and not meta.get("tied", False) and torch.equal((wte / scale) * scale, wte):
            embed_in, no_scale, share = wte / scale, False, False
        elif not tied and torch.equal(lm_head, wte):
            share = True
        offset = 2  # fairseq's pad id 1, plus one
        before = torch.zeros(offset, C)
        raw = (safetensors_metadata or {}).get(UNUSED_ROWS_KEY)
        if raw:
            try:
                info = json.loads(raw)
                rows = torch.frombuffer(bytearray(base64.b64decode(info["float32"])), dtype=torch.float32)
                before = rows.reshape(info["shape"]).clone()
            except (ValueError, KeyError, RuntimeError):
                notes.append(f"ignored a malformed {UNUSED_ROWS_KEY} entry of model.safetensors")
        state["decoder.embed_positions.weight"] = torch.cat([before, wpe], dim=0)
        for i in range(L):
            h, o = f"h.{i}.", f"decoder.layers.{i}."
            state[o + "self_attn_layer_norm.weight"] = take(h + "ln_1.weight", (C,))
            state[o + "self_attn_layer_norm.bias"] = take(h + "ln_1.bias", (C,))
            state[o + "self_attn.in_proj.weight"] = take(h + "attn.c_attn.weight", (C, 3 * C)).T.contiguous()
            state[o + "self_attn.in_proj.bias"] = take(h + "attn.c_attn.bias", (3 * C,))
            state[o + "self_attn.out_proj.weight"] = take(h + "attn.c_proj.weight", (C, C)).T.contiguous()
            state[o + "self_attn.out_proj.bias"] = take(h + "attn.c_proj.bias", (C,))
            state[o + "final_layer_norm.weight"] = take(h + "ln_2.weight", (C,))
            state[o + "final_layer_norm.bias"] = take(h + "ln_2.bias", (C,))
            state[o + "fc1.weight"] = take(h + "mlp.c_fc.weight", (C, F)).T.contiguous()
            state[o + "fc1.bias"] = take(h + "mlp.c_fc.bias", (F,))
            state[o + "fc2.weight"] = take(h + "mlp.c_proj.weight", (F, C)).T.contiguous()
            state[o + "fc2.bias"] = take(h + "mlp.c_proj.bias", (C,))
        ln_w, ln_b = take("ln_f.weight", (C,)), take("ln_f.bias", (C,))
        dropout = float(hf_config.get("resid_pdrop", 0.1))
        values = {"decoder_learned_pos": True, "dropout": dropout,
                  "attention_dropout": float(hf_config.get("attn_pdrop", 0.1)), "activation_dropout": 0.0,
                  "max_target_positions": P}
        if float(hf_config.get("embd_pdrop", dropout)) != dropout:
            notes.append(f"embd_pdrop={hf_config.get('embd_pdrop')} differs from resid_pdrop={dropout}: "
                         "transformer_lm has one dropout (resid_pdrop's)")
    else:  # xglm
        src = _strip_prefix(src, ("model.",))
        src = {k: v for k, v in src.items() if not k.startswith("embed_positions.")}
        C = int(hf_config.get("d_model", 1024))
        L = int(hf_config.get("num_layers", 24))
        H = int(hf_config.get("attention_heads", 16))
        F = int(hf_config.get("ffn_dim", 4096))
        P = int(hf_config.get("max_position_embeddings", 2048))
        hf_pad = _special_id(hf_config.get("pad_token_id"))
        if hf_pad is not None and hf_pad >= 2:
            raise UnmappableModelError(f"pad_token_id={hf_pad}: XGLM zeroes that row of its sinusoid table, i.e. "
                                       f"position {hf_pad - 2}; fairseq's table zeroes row 1 (no position)")
        embed_in = take("embed_tokens.weight", (V, C))
        lm_head = output_head(C)
        share = tied or lm_head is None or torch.equal(lm_head, embed_in)
        lm_head = embed_in if share else lm_head
        no_scale = not bool(hf_config.get("scale_embedding", True))
        for i in range(L):
            h, o = f"layers.{i}.", f"decoder.layers.{i}."
            q = [take(f"{h}self_attn.{n}_proj.weight", (C, C)) for n in "qkv"]
            qb = [take(f"{h}self_attn.{n}_proj.bias", (C,)) for n in "qkv"]
            state[o + "self_attn.in_proj.weight"] = torch.cat(q, dim=0)
            state[o + "self_attn.in_proj.bias"] = torch.cat(qb, dim=0)
            for name, shape_w, shape_b in (("self_attn.out_proj", (C, C), (C,)), ("self_attn_layer_norm", (C,), (C,)),
                                           ("fc1", (F, C), (F,)), ("fc2", (C, F), (C,)),
                                           ("final_layer_norm", (C,), (C,))):
                state[f"{o}{name}.weight"] = take(f"{h}{name}.weight", shape_w)
                state[f"{o}{name}.bias"] = take(f"{h}{name}.bias", shape_b)
        ln_w, ln_b = take("layer_norm.weight", (C,)), take("layer_norm.bias", (C,))
        values = {"decoder_learned_pos": False, "dropout": float(hf_config.get("dropout", 0.1)),
                  "attention_dropout": float(hf_config.get("attention_dropout", 0.1)),
                  "activation_dropout": float(hf_config.get("activation_dropout", 0.0)),
                  "decoder_layerdrop": float(hf_config.get("layerdrop", 0.0)), "max_target_positions": P}

    leftover = sorted(set(src) - used)
    if leftover:
        raise UnmappableModelError(f"{model_type} weights with no place in transformer_lm: "
                                   f"{', '.join(leftover[:4])}{' ...' if len(leftover) > 4 else ''}")
    if C % H:
        raise UnmappableModelError(f"hidden size {C} is not divisible by {H} heads")

    # the vocabulary, in fairseq's order; rows for fairseq-only specials
    extras = vocab.extras
    mapped = [i for i, h in enumerate(vocab.hf_ids) if h is not None]
    index = torch.tensor([vocab.hf_ids[i] for i in mapped], dtype=torch.long)

    def reorder(table: Tensor, filler: Optional[Tensor]) -> Tensor:
        if vocab.is_identity:
            return table
        out = torch.zeros(len(vocab.hf_ids), table.size(1), dtype=table.dtype)
        out[torch.tensor(mapped, dtype=torch.long)] = table.index_select(0, index)
        if extras and filler is not None:
            out[torch.tensor(extras, dtype=torch.long)] = filler
        return out

    silent = None
    if extras:
        silent = silent_rows(ln_w, ln_b, len(extras))
        names = ", ".join(SPECIAL_SYMBOLS[FAIRSEQ_SPECIALS[i]] for i in extras)
        if silent is None:
            notes.append(f"fairseq's {names} (no HF token) get zero rows: logit 0, which generation may pick and "
                         "which takes probability from the HF tokens (the final LayerNorm leaves no constant row)")
        else:
            value = float((silent[0].double() * ln_b.double()).sum())
            notes.append(f"fairseq's {names} (no HF token) get rows of constant logit {value:.3g}: probability 0")
    embed = reorder(embed_in, silent if share else None)
    state["decoder.embed_tokens.weight"] = embed
    state["decoder.output_projection.weight"] = embed if share else reorder(lm_head, silent)
    state["decoder.layer_norm.weight"], state["decoder.layer_norm.bias"] = ln_w, ln_b

    values.update({
        "_name": "transformer_lm", "activation_fn": activation, "decoder_embed_dim": C, "decoder_input_dim": C,
        "decoder_output_dim": C, "decoder_ffn_embed_dim": F, "decoder_layers": L, "decoder_attention_heads": H,
        "decoder_normalize_before": True, "no_decoder_final_norm": False, "share_decoder_input_output_embed": share,
        "no_scale_embedding": no_scale, "decoder_layers_to_keep": None, "adaptive_input": False,
        "adaptive_softmax_cutoff": None, "layernorm_embedding": False, "no_token_positional_embeddings": False,
    })
    saved = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    keep = {k: v for k, v in saved.items() if k not in values and k not in ("_name",)}
    return {**keep, **values}, state, notes


# -- files: reading an HF directory -------------------------------------------------------------
def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} cannot be read as JSON ({type(e).__name__}: {e}); the directory is damaged: "
                        "save the model again") from None


def is_hf_model_dir(path: str) -> bool:
    """Whether ``path`` is a directory holding a transformers model (config.json with a
    ``model_type``), as opposed to a fairseq save_dir (whose config.json is the run config)."""
    config = os.path.join(str(path), "config.json")
    if not os.path.isfile(config):
        return False
    try:
        with open(config, encoding="utf-8") as f:
            return "model_type" in json.load(f)
    except (OSError, ValueError):
        return False


def _read_weights(directory: str) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """The tensors of ``model.safetensors`` (or its shards, or ``pytorch_model.bin``) and the
    safetensors header metadata; every file resolved inside ``directory`` first
    (:func:`fairseq.hf_validation.weight_files`).

    Raises:
        HFDirectoryError: no weights, a file outside the directory, or one that cannot be read.
    """
    from safetensors import safe_open

    kind, files = checks.weight_files(directory)
    if kind == "safetensors":
        state: Dict[str, Tensor] = {}
        metadata: Dict[str, str] = {}
        for path in files:
            if not os.path.isfile(path):
                raise checks.HFDirectoryError(f"{path} does not exist or is not a file, but the directory names "
                                              "it as a weight file: copy the whole directory save_pretrained wrote")
            try:
                with safe_open(path, framework="pt") as f:
                    found = f.metadata() or {}
                    if not isinstance(found, dict):
                        raise ValueError("its metadata is not a mapping")
                    metadata.update(found)
                    for key in f.keys():
                        state[key] = f.get_tensor(key)
            except Exception as e:  # noqa: BLE001 -- a damaged file becomes one line
                raise checks.HFDirectoryError(f"{path} cannot be read as safetensors ({type(e).__name__}: "
                                              f"{(str(e).splitlines() or [''])[0]}); save the model again") from None
        return state, metadata
    if kind == "bin":
        bin_path = files[0]
        try:
            loaded = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise checks.HFDirectoryError(f"{bin_path} cannot be loaded safely ({type(e).__name__}); convert it to "
                                          "model.safetensors with transformers' save_pretrained") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
            raise checks.HFDirectoryError(f"{bin_path} holds {type(loaded).__name__}, not a mapping of tensor "
                                          "names to tensors: save the model with save_pretrained")
        return dict(loaded), {}
    raise checks.HFDirectoryError(f"{directory} holds no model.safetensors (nor shards, nor pytorch_model.bin): "
                                  "save the model with save_pretrained")


@dataclass
class TokenizerInfo:
    """What the directory's tokenizer says about the vocabulary."""

    tokens: Optional[List[Optional[str]]] = None  # HF token strings by id
    kind: str = "ids"  # words | gpt2 | ids
    unk_id: Optional[int] = None
    pad_id: Optional[int] = None
    encoder: Optional[Dict[str, int]] = None  # GPT-2 BPE: token -> id
    merges: Optional[List[str]] = None  # GPT-2 BPE: "a b" lines
    fairseq_symbols: Optional[List[str]] = None  # an exported directory's dict.txt
    notes: List[str] = field(default_factory=list)


def _token_name(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _merges_of(merges: Any, where: str) -> List[str]:
    """BPE merges as ``"a b"`` lines (tokenizers writes strings or ``[a, b]`` pairs)."""
    if not isinstance(merges, list):
        raise checks.HFDirectoryError(f"{where}: model.merges is {type(merges).__name__}, not a list")
    out = []
    for i, m in enumerate(merges):
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
            out.append(" ".join(m))
        else:
            raise checks.HFDirectoryError(f"{where}: model.merges[{i}] is {json.dumps(m)[:60]}, not \"a b\" or "
                                          "[\"a\", \"b\"]; save the tokenizer again")
    return out


def _read_tokenizer(directory: str, limit: Optional[int] = None) -> TokenizerInfo:
    """What the tokenizer files of ``directory`` say, each checked: ids integers, non-negative,
    unique and below ``limit`` (the model's vocabulary rows).

    Raises:
        HFDirectoryError: a malformed tokenizer file, one line.
    """
    info = TokenizerInfo()
    dict_txt = os.path.join(directory, "dict.txt")
    if os.path.isfile(dict_txt):
        from fairseq.data import Dictionary

        info.fairseq_symbols = Dictionary.load(dict_txt).symbols[4:]
    tok_json = os.path.join(directory, "tokenizer.json")
    vocab_json = os.path.join(directory, "vocab.json")
    merges_txt = os.path.join(directory, "merges.txt")
    encoder_json, vocab_bpe = os.path.join(directory, "encoder.json"), os.path.join(directory, "vocab.bpe")
    special_names: Dict[str, Optional[str]] = {}
    cfg_path = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(cfg_path):
        tok_cfg = checks.read_json_object(cfg_path)
        special_names = {"unk": _token_name(tok_cfg.get("unk_token")), "pad": _token_name(tok_cfg.get("pad_token"))}
    vocab: Optional[Dict[str, int]] = None
    if os.path.isfile(tok_json):
        data = checks.read_json_object(tok_json, finite=False)
        model = data.get("model") or {}
        if not isinstance(model, dict):
            raise checks.HFDirectoryError(f"{tok_json}: model is {type(model).__name__}, not a JSON object with "
                                          "type and vocab; save the tokenizer again")
        kind = model.get("type")
        if kind in ("BPE", "WordLevel", "WordPiece"):
            vocab = checks.check_token_ids(model.get("vocab"), f"{tok_json} (model.vocab)", limit)
        elif kind == "Unigram":
            pieces = model.get("vocab")
            if not isinstance(pieces, list) or not all(
                    isinstance(p, list) and p and isinstance(p[0], str) for p in pieces):
                raise checks.HFDirectoryError(f"{tok_json}: a Unigram model.vocab must be a list of [piece, score] "
                                              "pairs; save the tokenizer again")
            if limit is not None and len(pieces) > limit:
                raise checks.HFDirectoryError(f"{tok_json}: model.vocab has {len(pieces)} pieces, more than the "
                                              f"model's vocab_size={limit}")
            vocab = {}
            for i, piece in enumerate(pieces):
                if piece[0] in vocab:
                    raise checks.HFDirectoryError(f"{tok_json}: piece {piece[0]!r} appears twice in model.vocab "
                                                  f"(ids {vocab[piece[0]]} and {i}); save the tokenizer again")
                vocab[piece[0]] = i
        if vocab is not None:
            added_tokens = data.get("added_tokens") or []
            if not isinstance(added_tokens, list):
                raise checks.HFDirectoryError(f"{tok_json}: added_tokens is {type(added_tokens).__name__}, not a list")
            taken = {i: t for t, i in vocab.items()}
            for n, added in enumerate(added_tokens):
                if not isinstance(added, dict) or not isinstance(added.get("content"), str):
                    raise checks.HFDirectoryError(f"{tok_json}: added_tokens[{n}] is not an object with a string "
                                                  "content; save the tokenizer again")
                content = added["content"]
                if vocab.get(content) is not None and taken.get(vocab[content]) == content:
                    del taken[vocab[content]]  # an added token may move its own id
                checks.check_token_ids({content: added.get("id")}, f"{tok_json} (added_tokens[{n}])", limit, taken)
                vocab[content] = int(added["id"])
        pre = json.dumps(data.get("pre_tokenizer"))
        if kind == "BPE" and "ByteLevel" in pre:
            info.kind = "gpt2"
            info.encoder = {k: v for k, v in model["vocab"].items()}
            info.merges = _merges_of(model.get("merges") or [], tok_json)
        elif kind == "WordLevel":
            info.kind = "words"
        if isinstance(model.get("unk_token"), str) and special_names.get("unk") is None:
            special_names["unk"] = model["unk_token"]
    elif os.path.isfile(vocab_json) and os.path.isfile(merges_txt):
        vocab = checks.check_token_ids(checks.read_json(vocab_json), vocab_json, limit)
        info.kind, info.encoder = "gpt2", dict(vocab)
        with open(merges_txt, encoding="utf-8") as f:
            info.merges = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#version")]
    elif os.path.isfile(encoder_json) and os.path.isfile(vocab_bpe):
        vocab = checks.check_token_ids(checks.read_json(encoder_json), encoder_json, limit)
        info.kind, info.encoder = "gpt2", dict(vocab)
        with open(vocab_bpe, encoding="utf-8") as f:
            info.merges = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#version")]
    if vocab is not None:
        size = max(vocab.values()) + 1 if vocab else 0
        tokens: List[Optional[str]] = [None] * size
        for token, i in vocab.items():
            if 0 <= i < size:
                tokens[i] = token
        info.tokens = tokens
        for name in ("unk", "pad"):
            token = special_names.get(name)
            if token is not None and token in vocab:
                setattr(info, f"{name}_id", vocab[token])
    elif info.fairseq_symbols is None:
        info.notes.append("no tokenizer.json / vocab.json in the directory: dict.txt holds the HF ids as decimal "
                          "numbers (tokenize with the model's own tokenizer and write the ids)")
    return info


@dataclass
class LoadedHF:
    """An HF directory turned into what a fairseq checkpoint needs."""

    directory: str
    hf_config: Dict[str, Any]
    model_values: Dict[str, Any]
    state: Dict[str, Tensor]
    vocab: VocabMap
    tokenizer: TokenizerInfo
    task_values: Dict[str, Any]
    notes: List[str]


VOCAB_KEYS = ("transformer.wte.weight", "wte.weight", "model.embed_tokens.weight", "embed_tokens.weight",
              "lm_head.weight")


def _drop_unk_aliases(hf_config: Dict[str, Any], weights: Dict[str, Tensor]) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """An export's ``<unk>`` alias ids (GPT-2 tokens its dict.txt lacks) removed: the vocabulary
    is the dictionary's again."""
    aliases = int(_meta(hf_config).get("unk_aliases") or 0)
    if aliases <= 0:
        return hf_config, weights
    size = int(hf_config["vocab_size"]) - aliases
    weights = {k: (v[:size] if k in VOCAB_KEYS and v.dim() == 2 and v.size(0) == size + aliases else v)
               for k, v in weights.items()}
    return {**hf_config, "vocab_size": size}, weights


def load_hf_directory(directory: str, allow_nonfinite: bool = False) -> LoadedHF:
    """Read a local GPT2LMHeadModel / XGLMForCausalLM directory and map it (in memory).

    Every file is checked before anything is allocated from it (:mod:`fairseq.hf_validation`):
    config.json against its model type's schema, the weight files inside the directory, the
    weights finite, the tokenizer's ids unique and within the vocabulary.

    Args:
        directory: the directory ``save_pretrained`` wrote.
        allow_nonfinite: accept weights holding NaN or infinity (refused by default).

    Raises:
        MissingPathError: the directory does not exist (a ConfigError and a FileNotFoundError).
        ConfigError: not an HF model directory, or a model that does not map (one line).
        HFDirectoryError: a malformed or unsafe file of the directory (one line).
    """
    directory = checks.require_directory(str(directory), "the model directory")
    config_path = os.path.join(directory, "config.json")
    if not os.path.lexists(config_path):
        raise ConfigError(f"{directory} has no config.json: it is not a transformers model directory (save one "
                          "with model.save_pretrained(DIR))")
    checks.resolve_inside(directory, "config.json", config_path)
    hf_config = checks.read_json_object(config_path, checks.MAX_CONFIG_BYTES)
    if "model_type" not in hf_config:
        raise ConfigError(f"{config_path} has no model_type: it is not a transformers model's config (a fairseq "
                          "save_dir's config.json is the run config); save the model with model.save_pretrained(DIR)")
    checks.check_config(hf_config, config_path)
    if str(hf_config.get("model_type")) not in SUPPORTED_MODEL_TYPES:
        raise UnmappableModelError(f"{directory}: model_type={hf_config.get('model_type')!r}; only gpt2 "
                                   "(GPT2LMHeadModel) and xglm (XGLMForCausalLM) map to transformer_lm")
    weights, st_meta = _read_weights(directory)
    checks.check_vocab_rows(weights, VOCAB_KEYS, int(hf_config["vocab_size"]), config_path)
    nonfinite = checks.check_finite(weights, directory, allow=allow_nonfinite)
    # ids of the tokenizer are the model's, aliases included: checked before those are dropped
    tokenizer = _read_tokenizer(directory, int(hf_config["vocab_size"]))
    hf_config, weights = _drop_unk_aliases(hf_config, weights)
    if nonfinite:
        tokenizer.notes.append(f"{len(nonfinite)} weight tensors hold NaN or infinity (first: {nonfinite[0]}); "
                               "imported as they are (allow_nonfinite): their outputs will be NaN")
    vocab = build_vocab_map(hf_config, tokenizer.tokens, tokenizer.kind, tokenizer.unk_id, tokenizer.pad_id,
                            tokenizer.fairseq_symbols)
    if vocab.kind == "gpt2" and not tokenizer.encoder:
        vocab.kind = "ids"
    model_values, state, notes = hf_to_fairseq(hf_config, weights, vocab, st_meta)
    meta = _meta(hf_config)
    task_meta = meta.get("task") if isinstance(meta.get("task"), dict) else {}
    positions = int(model_values["max_target_positions"])
    task_values = {"add_bos_token": bool(task_meta.get("add_bos_token", False)),
                   "tokens_per_sample": int(task_meta.get("tokens_per_sample") or min(positions, 1024))}
    return LoadedHF(directory, hf_config, model_values, state, vocab, tokenizer, task_values,
                    tokenizer.notes + notes)


def _dictionary(vocab: VocabMap) -> Any:
    from fairseq.data import Dictionary

    d = Dictionary()
    for symbol in vocab.symbols:
        d.add_symbol(symbol, n=1, overwrite=symbol in d.indices)
    return d


def _bpe_payload(loaded: LoadedHF) -> Dict[str, bytes]:
    """fairseq's ``gpt2`` BPE files for the imported vocabulary (``{"encoder.json": ...,
    "vocab.bpe": ...}``), or ``{}`` when its symbols are no GPT-2 ids.

    A GPT-2 vocabulary's symbols are its ids as decimal text, as fairseq's gpt2 BPE writes them:
    ``encoder.json`` is the HF vocabulary, ``vocab.bpe`` its merges. An exported directory
    carries the very ``encoder.json`` and ``vocab.bpe`` its checkpoint was trained with (its
    tokenizer.json maps to dictionary ids instead)."""
    tok = loaded.tokenizer
    if loaded.vocab.kind == "dict":
        files = {name: os.path.join(loaded.directory, name) for name in ("encoder.json", "vocab.bpe")}
        if not all(os.path.isfile(path) for path in files.values()):
            return {}
        payload = {}
        for name, path in files.items():
            with open(path, "rb") as f:
                payload[name] = f.read()
        return payload
    if loaded.vocab.kind == "gpt2" and tok.encoder and tok.merges:
        return {"encoder.json": json.dumps(tok.encoder, ensure_ascii=False).encode("utf-8"),
                "vocab.bpe": ("#version: 0.2\n" + "\n".join(tok.merges) + "\n").encode("utf-8")}
    return {}


def _bpe_config(directory: str) -> Dict[str, str]:
    return {"_name": "gpt2", "gpt2_encoder_json": os.path.abspath(os.path.join(directory, "encoder.json")),
            "gpt2_vocab_bpe": os.path.abspath(os.path.join(directory, "vocab.bpe"))}


def _write_files(directory: str, payload: Dict[str, bytes]) -> None:
    from fairseq.file_io import _atomic_write

    os.makedirs(directory, exist_ok=True)
    for name, data in payload.items():
        _atomic_write(os.path.join(directory, name), lambda f, data=data: f.write(data))


def _run_config(loaded: LoadedHF, data_dir: str, bpe: Dict[str, str]) -> Any:
    """The typed run config of an imported model (the config a training run would have saved)."""
    from fairseq.dataclass.json_io import config_from_dict

    saved: Dict[str, Any] = {
        "model": dict(loaded.model_values),
        "task": {"_name": "language_modeling", "data": os.path.abspath(data_dir), **loaded.task_values},
        "criterion": {"_name": "cross_entropy"},
    }
    if bpe:
        saved["bpe"] = dict(bpe)
    try:
        return config_from_dict(saved, source=f"the config of {loaded.directory}")
    except ConfigError as e:
        raise UnmappableModelError(f"{loaded.directory}: {e}") from None


def _build_model(cfg: Any, dictionary: Any, state: Dict[str, Tensor], source: str, on_meta: bool = False) -> Any:
    """``(task, model)``: the ``transformer_lm`` of ``cfg`` with ``state`` loaded (strictly: every
    key, every shape). ``on_meta`` builds it without memory or initialization and takes the
    tensors of ``state`` as its weights (enough to check the mapping before writing it)."""
    import contextlib

    from fairseq.tasks.language_modeling import LanguageModelingTask

    task = LanguageModelingTask(cfg.task, dictionary)
    try:
        with torch.device("meta") if on_meta else contextlib.nullcontext():
            model = task.build_model(cfg.model)
    except ValueError as e:
        raise UnmappableModelError(f"{source}: cannot build transformer_lm: {e}") from None
    try:
        model.load_state_dict(state, strict=True, assign=on_meta)
    except RuntimeError as e:
        lines = [line.strip().rstrip(".") for line in str(e).splitlines() if line.strip()][1:3]
        raise UnmappableModelError(f"{source}: the mapped weights do not fit transformer_lm: {'; '.join(lines)}") from None
    return task, model.eval()


@dataclass
class ImportReport:
    """What :func:`import_directory` wrote."""

    checkpoint: str
    dictionary: str
    model_type: str
    vocab_size: int
    num_parameters: int
    model_values: Dict[str, Any]
    notes: List[str]
    seconds: float

    def finetune_flags(self) -> str:
        """The ``fairseq-train`` flags that build this model (for ``--finetune-from-model``)."""
        from fairseq.models.transformer_lm import TransformerLanguageModelConfig

        defaults = TransformerLanguageModelConfig()
        flags = ["--arch", "transformer_lm"]
        keys = ("decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_layers", "decoder_attention_heads",
                "activation_fn", "decoder_learned_pos", "no_scale_embedding", "share_decoder_input_output_embed",
                "max_target_positions")
        for key in keys:
            value = self.model_values.get(key)
            default = getattr(defaults, key, None)
            if value is None or value == default:
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    flags.append(flag)
            else:
                flags += [flag, str(value)]
        return " ".join(flags)


def import_directory(directory: str, out: str, data_out: Optional[str] = None, overwrite: bool = False,
                     allow_nonfinite: bool = False) -> ImportReport:
    """Write a GPT-2 / XGLM directory as a checkpoint of this package, with its ``dict.txt``.

    The checkpoint holds the run config (``transformer_lm``, ``language_modeling`` with
    ``task.data`` = ``data_out``), the weights in this package's layout and the integrity
    record, written with :func:`fairseq.checkpoint_utils.torch_persistent_save`; it loads with
    ``load_model_ensemble_and_task``, ``fairseq-eval-lm``, ``fairseq-generate`` and
    ``fairseq-train --finetune-from-model``.

    Args:
        directory: the HF model directory.
        out: the checkpoint file to write.
        data_out: the directory for ``dict.txt`` (and a GPT-2 BPE's ``encoder.json`` and
            ``vocab.bpe``); default: the checkpoint's directory.
        overwrite: replace an existing checkpoint (else that is an error).
        allow_nonfinite: import weights holding NaN or infinity (refused by default).

    Raises:
        ConfigError: see :func:`load_hf_directory`; an existing ``out`` without ``overwrite``.
    """
    from fairseq.checkpoint.state import CHECKPOINT_VERSION, plain_config
    from fairseq.checkpoint_utils import torch_persistent_save

    start = time.perf_counter()
    out = str(out)
    if os.path.isdir(out):
        raise ConfigError(f"--out {out} is a directory: give the checkpoint file to write, e.g. {out}/model.pt")
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"--out {out} exists: remove it, choose another path or pass --overwrite")
    data_dir = str(data_out) if data_out else (os.path.dirname(os.path.abspath(out)) or ".")
    loaded = load_hf_directory(directory, allow_nonfinite=allow_nonfinite)
    dictionary = _dictionary(loaded.vocab)
    source_dict = os.path.join(str(directory), "dict.txt")
    if loaded.vocab.kind == "dict" and os.path.isfile(source_dict):
        with open(source_dict, "rb") as f:
            dict_bytes = f.read()  # as written (overwrite flags included)
    else:
        lines = io.StringIO()
        dictionary.save(lines)
        dict_bytes = lines.getvalue().encode("utf-8")
    payload = {"dict.txt": dict_bytes, **_bpe_payload(loaded)}
    for name, data in payload.items():  # never replace another model's dictionary unasked
        path = os.path.join(data_dir, name)
        if os.path.isfile(path) and not overwrite:
            with open(path, "rb") as f:
                if f.read() != data:
                    raise ConfigError(f"{path} exists and differs from the imported model's: choose another "
                                      "--data-out, or pass --overwrite to replace it")
    cfg = _run_config(loaded, data_dir, _bpe_config(data_dir) if "encoder.json" in payload else {})
    _build_model(cfg, dictionary, dict(loaded.state), directory, on_meta=True)  # checks the mapping
    _write_files(data_dir, payload)
    dict_path = os.path.join(data_dir, "dict.txt")
    state = {
        "cfg": plain_config(cfg), "model": loaded.state, "version": CHECKPOINT_VERSION, "num_updates": 0,
        "extra_state": {"epoch": 1, "imported_from": {"directory": os.path.abspath(str(directory)),
                                                      "model_type": loaded.hf_config.get("model_type")}},
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch_persistent_save(state, out)
    return ImportReport(out, dict_path, str(loaded.hf_config.get("model_type")), len(dictionary),
                        _num_parameters(loaded.state), loaded.model_values, loaded.notes, time.perf_counter() - start)


def _num_parameters(state: Mapping[str, Tensor]) -> int:
    """Elements of the distinct tensors of ``state`` (a tied table counted once)."""
    seen, total = set(), 0
    for value in state.values():
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if key not in seen:
            seen.add(key)
            total += value.numel()
    return total


class _TextWriter:
    """A text face on a binary file (``Dictionary.save`` writes str)."""

    def __init__(self, f: Any):
        self.f = f

    def write(self, text: str) -> None:
        self.f.write(text.encode("utf-8"))


def from_pretrained_hf(directory: str, allow_nonfinite: bool = False, **kwargs: Any) -> Any:
    """``TransformerLanguageModel.from_pretrained`` for a local GPT-2 / XGLM directory: the
    model converted in memory, as a hub object (``score``, ``sample``, ``generate``).

    ``fairseq.models`` sits below this module (``setup.cfg``'s layers), so ``from_pretrained``
    itself cannot convert; this function is its counterpart, and ``fairseq-import-hf`` writes
    the same model as a checkpoint. ``kwargs`` go to the hub interface (``bpe=...``, ...).
    Files a GPT-2 BPE needs (encoder.json, vocab.bpe) are taken from the directory or, from a
    tokenizer.json, written to a temporary directory. ``allow_nonfinite`` accepts weights
    holding NaN or infinity (refused by default, see :func:`load_hf_directory`).
    """
    from fairseq.hub_utils import GeneratorHubInterface

    loaded = load_hf_directory(directory, allow_nonfinite=allow_nonfinite)
    dictionary = _dictionary(loaded.vocab)
    bpe: Dict[str, str] = {}
    pairs = (("encoder.json", "vocab.bpe"),) if loaded.vocab.kind == "dict" else \
        (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")) if loaded.vocab.kind == "gpt2" else ()
    for enc, merges in pairs:  # the directory's own files, in place
        if os.path.isfile(os.path.join(directory, enc)) and os.path.isfile(os.path.join(directory, merges)):
            bpe = {"_name": "gpt2", "gpt2_encoder_json": os.path.abspath(os.path.join(directory, enc)),
                   "gpt2_vocab_bpe": os.path.abspath(os.path.join(directory, merges))}
            break
    else:
        payload = _bpe_payload(loaded)
        if payload:  # a tokenizer.json's BPE, written out for fairseq's gpt2 encoder
            temporary = tempfile.mkdtemp(prefix="fairseq_hf_bpe_")
            _write_files(temporary, payload)
            bpe = _bpe_config(temporary)
    cfg = _run_config(loaded, directory, bpe)
    task, model = _build_model(cfg, dictionary, loaded.state, directory)
    return GeneratorHubInterface(cfg, task, [model], **kwargs)


# -- export: files ----------------------------------------------------------------------------
@dataclass
class ExportReport:
    """What :func:`export_model` wrote."""

    directory: str
    architecture: str
    vocab_size: int
    num_parameters: int
    tokenizer: str
    start_token_id: int
    notes: List[str]
    seconds: float


def _gpt2_tokenizer(dictionary: Any, encoder_path: str, merges_path: str) -> Tuple[Any, int]:
    """A byte-level BPE ``tokenizers.Tokenizer`` that yields the *dictionary's* ids, and the
    number of ``<unk>`` aliases it needs.

    The dictionary's symbols are GPT-2 ids as decimal text. The BPE keeps every GPT-2 token and
    every merge: a merge chain may pass through tokens the dictionary lacks (a dictionary counted
    on a small corpus). Those tokens get the ids after the dictionary's, in GPT-2 id order: the
    exported model gives these ids ``<unk>``'s rows (:func:`fairseq_to_hf`'s ``unk_aliases``),
    so a token the dictionary lacks is ``<unk>`` to the model, as fairseq's lookup makes it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from fairseq.data.encoders.gpt2_bpe import load_merges

    encoder = _read_json(encoder_path)
    ours = {int(s): i for s, i in dictionary.indices.items() if s.isdigit()}
    vocab: Dict[str, int] = {}
    aliases = 0
    for token, gpt2_id in sorted(encoder.items(), key=lambda item: int(item[1])):
        if int(gpt2_id) in ours:
            vocab[token] = ours[int(gpt2_id)]
        else:
            vocab[token] = len(dictionary) + aliases
            aliases += 1
    for i in range(dictionary.nspecial):  # the specials (<unk> first of all) belong to the model too
        vocab[dictionary[i]] = i
    merges = [(a, b) for a, b in load_merges(merges_path) if a in vocab and b in vocab and a + b in vocab]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=dictionary[dictionary.unk()],
                                     fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer, aliases


def _word_tokenizer(dictionary: Any) -> Any:
    """A word-level ``tokenizers.Tokenizer`` over the dictionary's symbols, split on whitespace
    as fairseq's ``tokenize_line`` splits."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {s: i for s, i in dictionary.indices.items()}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_SYMBOLS["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


@dataclass
class _Tokenizer:
    tokenizer: Any
    kind: str
    notes: List[str]
    unk_aliases: int = 0
    bpe_files: Tuple[str, ...] = ()


def _build_tokenizer(dictionary: Any, cfg: Any, start_token_id: int) -> _Tokenizer:
    """The tokenizer of an export: GPT-2 byte-level BPE for a ``bpe=gpt2`` checkpoint whose files
    are here, else word-level over dict.txt; it prepends ``start_token_id`` as fairseq does."""
    from tokenizers import AddedToken, processors

    notes: List[str] = []
    bpe = _get(cfg, "bpe")
    bpe_name = str(_get(bpe, "_name", "")) if bpe is not None else ""
    encoder_path = str(_get(bpe, "gpt2_encoder_json", "")) if bpe_name == "gpt2" else ""
    merges_path = str(_get(bpe, "gpt2_vocab_bpe", "")) if bpe_name == "gpt2" else ""
    if bpe_name == "gpt2" and os.path.isfile(encoder_path) and os.path.isfile(merges_path):
        tokenizer, aliases = _gpt2_tokenizer(dictionary, encoder_path, merges_path)
        result = _Tokenizer(tokenizer, "GPT-2 byte-level BPE (ids of dict.txt)", notes, aliases,
                            (encoder_path, merges_path))
        if aliases:
            notes.append(f"{aliases} GPT-2 tokens are not in dict.txt: they get ids {len(dictionary)}.."
                         f"{len(dictionary) + aliases - 1}, which the model reads and predicts as <unk> "
                         "(their rows are <unk>'s)")
    else:
        if bpe_name == "gpt2":
            notes.append(f"the checkpoint's gpt2 BPE files are not here ({encoder_path or 'unset'}): the tokenizer "
                         "is word-level over dict.txt's symbols (GPT-2 ids as decimal text)")
        elif bpe_name:
            notes.append(f"the checkpoint's bpe={bpe_name} is not carried: the tokenizer is word-level over "
                         f"dict.txt's symbols; apply {bpe_name} to text before tokenizing")
        result = _Tokenizer(_word_tokenizer(dictionary), "word-level (WordLevel over dict.txt, whitespace split)",
                            notes)
    specials = [dictionary[i] for i in range(dictionary.nspecial)]
    extra = [s for s in dictionary.symbols[dictionary.nspecial:] if s.startswith("madeupword")]
    result.tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials + extra])
    start = dictionary[start_token_id]
    result.tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A", pair=f"{start} $A $B", special_tokens=[(start, start_token_id)])
    return result


def _write_tokenizer(out_dir: str, built: _Tokenizer, dictionary: Any, model_max_length: int,
                     data_dir: Optional[str]) -> None:
    """tokenizer.json, tokenizer_config.json, dict.txt (and a gpt2 BPE's encoder.json, vocab.bpe)."""
    from fairseq.file_io import _atomic_write

    text = built.tokenizer.to_str(pretty=False).encode("utf-8")
    _atomic_write(os.path.join(out_dir, "tokenizer.json"), lambda f: f.write(text))
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": dictionary[dictionary.bos()],
               "eos_token": dictionary[dictionary.eos()], "unk_token": dictionary[dictionary.unk()],
               "pad_token": dictionary[dictionary.pad()], "model_max_length": model_max_length,
               "clean_up_tokenization_spaces": False}
    cfg_text = (json.dumps(tok_cfg, indent=2) + "\n").encode("utf-8")
    _atomic_write(os.path.join(out_dir, "tokenizer_config.json"), lambda f: f.write(cfg_text))
    for source, name in zip(built.bpe_files, ("encoder.json", "vocab.bpe")):
        shutil.copyfile(source, os.path.join(out_dir, name))
    source = os.path.join(data_dir, "dict.txt") if data_dir else ""
    if source and os.path.isfile(source) and _dictionary_from(source) == dictionary:
        shutil.copyfile(source, os.path.join(out_dir, "dict.txt"))  # as written (overwrite flags kept)
    else:
        _atomic_write(os.path.join(out_dir, "dict.txt"), lambda f: dictionary.save(_TextWriter(f)))


def _dictionary_from(path: str) -> Any:
    from fairseq.data import Dictionary

    return Dictionary.load(path)


def _plain(node: Any) -> Dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        try:
            return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 -- an interpolation that cannot resolve alone
            return OmegaConf.to_container(node, resolve=False, enum_to_str=True)  # type: ignore[return-value]
    return dict(node)


def _save_safetensors(tensors: Dict[str, Tensor], metadata: Dict[str, str], path: str) -> None:
    """``safetensors`` ``save_file`` made atomic (:func:`fairseq.file_io._atomic_write_path`)."""
    from safetensors.torch import save_file

    from fairseq.file_io import _atomic_write_path

    _atomic_write_path(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def export_model(model: Any, cfg: Any, dictionary: Any, out_dir: str, data_dir: Optional[str] = None,
                 overwrite: bool = False, checkpoint: Optional[str] = None) -> ExportReport:
    """Write ``model`` (a ``transformer_lm``) as a transformers model directory.

    Args:
        model: the loaded model (``cfg.model`` built with ``dictionary``).
        cfg: the run config (``model``, ``task``, ``bpe``).
        dictionary: the task's dictionary (the model's vocabulary, ids unchanged).
        out_dir: the directory to write (created; an existing non-empty one needs ``overwrite``).
        data_dir: the data directory whose dict.txt is copied as is.
        checkpoint: the checkpoint path, recorded in config.json.

    Raises:
        UnmappableModelError: the model maps to neither GPT-2 nor XGLM (one line naming why).
        ConfigError: ``out_dir`` exists and is not empty, without ``overwrite``.
    """
    from fairseq.file_io import _atomic_write

    start = time.perf_counter()
    model_cfg = cfg.model
    hf_target(model_cfg)  # refuse before touching the directory
    out_dir = str(out_dir)
    if os.path.isfile(out_dir):
        raise ConfigError(f"--out {out_dir} is a file: give a directory to write the model into")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise ConfigError(f"--out {out_dir} exists and is not empty: remove it, choose another directory or "
                          "pass --overwrite")
    add_bos = bool(_get(_get(cfg, "task"), "add_bos_token", False))
    start_token = dictionary.bos() if add_bos else dictionary.eos()
    special_ids = {"bos": dictionary.bos(), "pad": dictionary.pad(), "eos": dictionary.eos(), "unk": dictionary.unk()}
    built = _build_tokenizer(dictionary, cfg, start_token)
    state = model.state_dict()
    config, tensors, metadata = fairseq_to_hf(state, model_cfg, len(dictionary), dictionary.pad(), special_ids,
                                              start_token, unk_aliases=built.unk_aliases)
    scale = 1.0 if _get(model_cfg, "no_scale_embedding", False) else math.sqrt(int(_get(model_cfg, "decoder_embed_dim")))
    embed_w = state.get("decoder.embed_tokens.weight")
    out_w = state.get("decoder.output_projection.weight")
    tied = embed_w is not None and out_w is not None and out_w.data_ptr() == embed_w.data_ptr()
    plain_model = _plain(model_cfg)
    plain_model["decoder_layers"] = len(model.decoder.layers)
    plain_model["decoder_layers_to_keep"] = None
    task_node = _get(cfg, "task")
    config[META_KEY] = {
        "version": META_VERSION, "embed_scale": scale, "tied": bool(tied), "start_token_id": start_token,
        "model": plain_model,
        "task": {"add_bos_token": add_bos, "tokens_per_sample": _get(task_node, "tokens_per_sample")},
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None, "unk_aliases": built.unk_aliases,
    }
    notes: List[str] = []
    if config["model_type"] == "gpt2" and scale != 1.0:
        notes.append(f"GPT-2 has no embedding scale: wte holds the table x {scale:g} and lm_head the table "
                     "(tie_word_embeddings=false); fairseq-import-hf ties them again")
    os.makedirs(out_dir, exist_ok=True)
    config_text = (json.dumps(config, indent=2, sort_keys=False) + "\n").encode("utf-8")
    _save_safetensors(tensors, metadata, os.path.join(out_dir, "model.safetensors"))
    _write_tokenizer(out_dir, built, dictionary, config.get("n_positions") or config.get("max_position_embeddings"),
                     data_dir)
    gen = {"bos_token_id": special_ids["bos"], "eos_token_id": special_ids["eos"],
           "pad_token_id": special_ids["pad"], "decoder_start_token_id": start_token}
    gen_text = (json.dumps(gen, indent=2) + "\n").encode("utf-8")
    _atomic_write(os.path.join(out_dir, "generation_config.json"), lambda f: f.write(gen_text))
    _atomic_write(os.path.join(out_dir, "config.json"), lambda f: f.write(config_text))  # last: marks it whole
    n_params = sum(int(t.numel()) for t in tensors.values())
    return ExportReport(out_dir, config["architectures"][0], len(dictionary), n_params, built.kind, start_token,
                        notes + built.notes, time.perf_counter() - start)


def _check_fit(weights: Mapping[str, Any], model_node: Mapping[str, Any], dict_size: int, path: str,
               data_dir: str) -> None:
    """Say what is wrong when a checkpoint and its dictionary or config disagree, before the
    strict load (whose message would blame the config for a wrong dict.txt).

    Raises:
        ConfigError: the dictionary's size is not the embedding's rows (exit 2: another --data).
        CheckpointError: the config's layer count is not the weights' (a damaged checkpoint).
    """
    embed = weights.get("decoder.embed_tokens.weight")
    if isinstance(embed, Tensor) and embed.dim() == 2 and int(embed.shape[0]) != dict_size:
        raise ConfigError(f"{data_dir}/dict.txt has {dict_size} types but the model in {path} was trained with "
                          f"{int(embed.shape[0])}: give --data the directory with the dictionary it was trained "
                          "with")
    layers = model_node.get("decoder_layers") if isinstance(model_node, Mapping) else None
    found = len(_layer_ids(weights))
    if isinstance(layers, int) and not isinstance(layers, bool) and layers != found and \
            not model_node.get("decoder_layers_to_keep"):
        raise CheckpointError(f"{path}: its config says decoder_layers={layers} but its weights hold {found} "
                              "layers: the checkpoint is damaged or was edited; use another checkpoint")


def export_checkpoint(path: str, out_dir: str, data: Optional[str] = None, overwrite: bool = False) -> ExportReport:
    """Load a checkpoint (this package's or fairseq 0.12's) and write it with :func:`export_model`.

    Args:
        path: the checkpoint file.
        out_dir: the directory to write.
        data: the data directory with the model's dict.txt (default: the checkpoint's task.data).
    """
    from fairseq import tasks
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu
    from fairseq.checkpoint.loading import config_from_checkpoint

    start = time.perf_counter()
    path = str(path)
    if not os.path.exists(path):
        raise checks.MissingPathError(f"--path {path} does not exist: give the checkpoint file to export (e.g. "
                                      "checkpoints/checkpoint_best.pt)")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, ".metadata")):  # not a sharded one
        raise ConfigError(f"--path {path} is a directory: give the checkpoint file in it (e.g. "
                          f"{os.path.join(path, 'checkpoint_best.pt')})")
    if data is not None:
        if not os.path.isdir(str(data).split(":")[0]):
            raise checks.MissingPathError(f"--data {data} is not a directory: give the data directory with the "
                                          "dict.txt the model was trained with")
    state = load_checkpoint_to_cpu(path)
    model_node = (state.get("cfg") or {}).get("model") or {}
    hf_target(model_node)  # refuse before building the model
    if data is None:
        saved_data = (state.get("cfg", {}).get("task") or {}).get("data")
        if not saved_data or not os.path.isfile(os.path.join(str(saved_data).split(":")[0], "dict.txt")):
            raise ConfigError(f"{path} records task.data={saved_data!r}, which holds no dict.txt: give --data, the "
                              "directory with the dictionary the model was trained with")
    cfg = config_from_checkpoint(state, path)
    if data:
        cfg.task.data = data
    task = tasks.setup_task(cfg.task)
    _check_fit(state["model"], model_node, len(task.source_dictionary), path, str(cfg.task.data).split(":")[0])
    # the weights come from the checkpoint: the model is built without memory or random
    # initialization (seconds for a large model) and takes the checkpoint's tensors, as
    # load_model_ensemble_and_task would copy them (same keys, same upgrades of old layouts)
    try:
        with torch.device("meta"):
            model = task.build_model(cfg.model)
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot build its model: {e}") from None
    try:
        model.load_state_dict(state["model"], strict=True, assign=True)
    except RuntimeError as e:
        lines = [line.strip().rstrip(".") for line in str(e).splitlines() if line.strip()][1:3]
        raise CheckpointError(f"{path} does not fit the model built from its own config: {'; '.join(lines)} "
                              f"(is --data's dict.txt the one it was trained with? {len(task.source_dictionary)} "
                              "types there)") from None
    data_dir = str(cfg.task.data).split(":")[0]
    report = export_model(model.eval(), cfg, task.source_dictionary, out_dir, data_dir, overwrite, checkpoint=path)
    report.seconds = time.perf_counter() - start
    return report
