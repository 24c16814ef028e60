"""``transformer_lm``: a decoder-only transformer language model and its named architectures."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from omegaconf import II
from torch import Tensor

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.formats import FAIRSEQ_LM, from_ours, to_ours
from fairseq.models import architecture_function, register_model, register_model_architecture
from fairseq.models.fairseq_model import FairseqLanguageModel
from fairseq.modules.activations import ACTIVATION_NAMES
from fairseq.modules.adaptive_input import AdaptiveInput, normalize_cutoff
from fairseq.modules.normalization import NORM_NAMES
from fairseq.modules.transformer_decoder import DEFAULT_MAX_TARGET_POSITIONS, TransformerDecoder, dim_of

# the longest positions table a config may ask for: 2**20 positions (a sinusoidal table of 1M x 512
# floats is 2 GiB); a typo such as 10**9 would otherwise hang allocating it
MAX_POSITIONS = 1 << 20

ACTIVATION_FN_CHOICES = ChoiceEnum(ACTIVATION_NAMES, "ActivationFn")
DECODER_NORM_CHOICES = ChoiceEnum(NORM_NAMES, "DecoderNorm")


@dataclass
class TransformerLanguageModelConfig(FairseqDataclass):
    activation_fn: ACTIVATION_FN_CHOICES = field(  # type: ignore[valid-type]
        default="relu", metadata={"help": "activation function of the feed-forward networks"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and residuals",
                                                             "min": 0, "max": 1})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights",
                                                                       "min": 0, "max": 1})
    activation_dropout: float = field(
        default=0.0, metadata={"help": "dropout after the activation of the feed-forward networks",
                                "min": 0, "max": 1}
    )
    relu_dropout: float = field(
        default=0.0, metadata={"help": "old name of activation_dropout, used when that one is 0",
                                "min": 0, "max": 1}
    )
    decoder_embed_dim: int = field(default=512, metadata={"help": "model (hidden) dimension",
                                                                  "min": 1})
    # both follow decoder_embed_dim unless given (fairseq 0.12's architecture functions do the
    # same for its legacy flags; its Hydra door kept 512, a plain bug: docs/design.md)
    decoder_output_dim: int = field(
        default=II(".decoder_embed_dim"),
        metadata={"help": "dimension of the features fed to the output layer (default: decoder_embed_dim)",
                  "min": 1}
    )
    decoder_input_dim: int = field(default=II(".decoder_embed_dim"),
                                   metadata={"help": "dimension of the token embeddings (default: "
                                             "decoder_embed_dim)", "min": 1})
    decoder_ffn_embed_dim: int = field(
        default=2048, metadata={"help": "hidden dimension of the feed-forward networks", "min": 1}
    )
    decoder_layers: int = field(default=6, metadata={"help": "number of decoder layers", "min": 0})
    decoder_attention_heads: int = field(default=8, metadata={"help": "number of attention heads",
                                                                       "min": 1})
    decoder_normalize_before: bool = field(
        default=True,
        metadata={"help": "apply LayerNorm before each block (pre-norm; as every transformer_lm "
                  "architecture trains); --no-decoder-normalize-before gives post-norm"},
    )
    no_decoder_final_norm: bool = field(
        default=False, metadata={"help": "no LayerNorm after the last block of a pre-norm decoder"}
    )
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated vocabulary cutoffs of an adaptive softmax, e.g. 10000,50000"},
    )
    adaptive_softmax_dropout: float = field(
        default=0.0, metadata={"help": "dropout inside the adaptive softmax tails", "min": 0, "max": 1}
    )
    adaptive_softmax_factor: float = field(
        default=4, metadata={"help": "each adaptive softmax tail shrinks the dimension by this factor",
                              "above": 0}
    )
    no_token_positional_embeddings: bool = field(
        default=False, metadata={"help": "do not add position embeddings"}
    )
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "tie the output projection to the input embedding"}
    )
    adaptive_input: bool = field(default=False, metadata={"help": "use adaptive input embeddings"})
    adaptive_input_factor: float = field(
        default=4, metadata={"help": "each adaptive input band shrinks the dimension by this factor",
                              "above": 0}
    )
    adaptive_input_cutoff: Optional[str] = field(
        default=None, metadata={"help": "comma-separated vocabulary cutoffs of the adaptive input"}
    )
    tie_adaptive_weights: bool = field(
        default=False, metadata={"help": "share the adaptive input and adaptive softmax word tables"}
    )
    tie_adaptive_proj: bool = field(
        default=False, metadata={"help": "also share the adaptive input and softmax projections"}
    )
    decoder_learned_pos: bool = field(
        default=False, metadata={"help": "learned position embeddings instead of sinusoids"}
    )
    layernorm_embedding: bool = field(default=False, metadata={"help": "LayerNorm the embeddings"})
    no_scale_embedding: bool = field(
        default=False, metadata={"help": "do not scale token embeddings by sqrt(decoder_embed_dim)"}
    )
    checkpoint_activations: bool = field(
        default=False,
        metadata={"help": "keep only each layer's input during the forward and recompute the layer "
                  "in backward (same losses and gradients, dropout masks replayed; less activation "
                  "memory for about one more forward of compute)"},
    )
    offload_activations: bool = field(
        default=False,
        metadata={"help": "checkpoint_activations, and keep the saved layer inputs in CPU memory until "
                  "backward needs them (implies checkpoint_activations; no effect when training on the CPU)"},
    )
    decoder_layerdrop: float = field(
        default=0.0, metadata={"help": "probability of skipping each layer while training (LayerDrop)",
                                "min": 0, "max": 1}
    )
    decoder_layers_to_keep: Optional[str] = field(
        default=None, metadata={"help": "comma-separated layers to keep, pruning the others, e.g. 0,2,4"}
    )
    scale_fc: bool = field(
        default=False, metadata={"help": "NormFormer: LayerNorm the feed-forward hidden layer"}
    )
    scale_attn: bool = field(
        default=False, metadata={"help": "NormFormer: LayerNorm the self-attention output"}
    )
    scale_heads: bool = field(
        default=False, metadata={"help": "NormFormer: learn a scale for each attention head"}
    )
    scale_resids: bool = field(
        default=False, metadata={"help": "NormFormer: learn a per-channel scale of the feed-forward residual"}
    )
    # -- the parts of Llama-style decoders (all off by default: fairseq 0.12's model) --
    rope: bool = field(
        default=False,
        metadata={"help": "rotary position embeddings (RoPE) in every self-attention layer, instead of a "
                  "position table (no table is built; --no-token-positional-embeddings is implied)"},
    )
    rope_theta: float = field(
        default=10000.0, metadata={"help": "base of the rotary frequencies (Llama 1/2: 10000, Llama 3: 500000)",
                                   "above": 0}
    )
    decoder_norm: DECODER_NORM_CHOICES = field(  # type: ignore[valid-type]
        default="layernorm",
        metadata={"help": "kind of every norm of the decoder: layernorm, or rmsnorm (no centring, no bias)"},
    )
    norm_eps: float = field(
        default=1e-5, metadata={"help": "epsilon of every norm of the decoder", "above": 0}
    )
    decoder_ffn_gated: bool = field(
        default=False,
        metadata={"help": "gated feed-forward fc2(act(fc1(x)) * fc3(x)); with --activation-fn silu: SwiGLU"},
    )
    decoder_kv_attention_heads: int = field(
        default=0,
        metadata={"help": "key/value heads of the self-attention: 0 = as many as the attention heads, "
                  "fewer = grouped-query attention, 1 = multi-query; must divide --decoder-attention-heads",
                  "min": 0},
    )
    no_decoder_bias: bool = field(
        default=False,
        metadata={"help": "no bias in the attention and feed-forward linear layers nor in the norms"},
    )
    max_target_positions: Optional[int] = field(
        default=II("task.tokens_per_sample"),
        metadata={"help": f"longest sequence the model accepts (unset: {DEFAULT_MAX_TARGET_POSITIONS})",
                  "min": 1, "max": MAX_POSITIONS},
    )

    @classmethod
    def check_config(cls, node: Any, prefix: str = "model") -> None:
        """Checks relating several fields, called by ``check_values`` before a run starts.

        Raises:
            ConfigError: ``decoder_embed_dim`` not divisible by ``decoder_attention_heads`` (each
                head gets ``decoder_embed_dim / heads`` dimensions); ``decoder_kv_attention_heads``
                not dividing ``decoder_attention_heads``; ``rope`` with an odd head dimension, or
                with ``decoder_learned_pos`` (a learned table and rotary embeddings both position
                the tokens). ``no_token_positional_embeddings`` is ignored under ``rope``: its
                ``false`` is the default and cannot ask for a table.
        """
        from fairseq.errors import ConfigError

        dim, heads = node.get("decoder_embed_dim"), node.get("decoder_attention_heads")
        if isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads:
            fits = [h for h in range(1, min(dim, 64) + 1) if dim % h == 0]
            raise ConfigError(f"{prefix}.decoder_embed_dim={dim} is not divisible by "
                              f"{prefix}.decoder_attention_heads={heads} (--decoder-attention-heads): "
                              f"each head gets decoder_embed_dim / heads dimensions; accepted heads for "
                              f"{dim}: {', '.join(map(str, fits))}")
        kv_heads = node.get("decoder_kv_attention_heads")
        if isinstance(heads, int) and heads > 0 and isinstance(kv_heads, int) and kv_heads > 0 \
                and heads % kv_heads:
            fits = [h for h in range(1, heads + 1) if heads % h == 0]
            raise ConfigError(f"{prefix}.decoder_kv_attention_heads={kv_heads} does not divide "
                              f"{prefix}.decoder_attention_heads={heads} (--decoder-kv-attention-heads): "
                              f"each key/value head serves the same number of query heads; accepted for "
                              f"{heads} heads: {', '.join(map(str, fits))} (or 0: one per head)")
        if node.get("rope") is True:
            if isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads == 0 \
                    and (dim // heads) % 2:
                raise ConfigError(f"{prefix}.rope=true needs an even head dimension, but "
                                  f"{prefix}.decoder_embed_dim={dim} / {prefix}.decoder_attention_heads={heads} "
                                  f"is {dim // heads} (rotary embeddings turn pairs of features): choose "
                                  f"--decoder-attention-heads so that the quotient is even")
            if node.get("decoder_learned_pos") is True:
                raise ConfigError(f"{prefix}.rope=true and {prefix}.decoder_learned_pos=true both ask for "
                                  f"position embeddings (rotary ones replace the table): drop "
                                  f"--decoder-learned-pos, or set {prefix}.decoder_learned_pos=false over a "
                                  f"preset that sets it")


@register_model("transformer_lm", dataclass=TransformerLanguageModelConfig)
class TransformerLanguageModel(FairseqLanguageModel):
    """A decoder-only transformer LM (``--arch transformer_lm`` and its presets below)."""

    @classmethod
    def build_model(cls, cfg: Any, task: Any) -> "TransformerLanguageModel":
        """Build the model.

        Args:
            cfg: a ``TransformerLanguageModelConfig`` (dataclass instance or DictConfig).
            task: provides ``source_dictionary`` (input embedding) and ``target_dictionary``
                (output layer).

        Raises:
            ValueError: for inconsistent adaptive input/softmax options.
        """
        if cfg.tie_adaptive_weights:
            if not cfg.adaptive_input or cfg.adaptive_softmax_cutoff is None:
                raise ValueError("tie_adaptive_weights needs adaptive_input and adaptive_softmax_cutoff")
            if cfg.adaptive_input_factor != cfg.adaptive_softmax_factor:
                raise ValueError(f"tie_adaptive_weights needs adaptive_input_factor "
                                 f"({cfg.adaptive_input_factor}) == adaptive_softmax_factor "
                                 f"({cfg.adaptive_softmax_factor})")
        elif cfg.tie_adaptive_proj:
            raise ValueError("tie_adaptive_proj needs tie_adaptive_weights")

        dictionary = task.source_dictionary
        if cfg.adaptive_input:
            if cfg.adaptive_input_cutoff is None:
                raise ValueError("adaptive_input needs adaptive_input_cutoff, e.g. 20000,60000")
            embed_tokens: nn.Module = AdaptiveInput(
                len(dictionary), dictionary.pad(), dim_of(cfg, "decoder_input_dim"), cfg.adaptive_input_factor,
                cfg.decoder_embed_dim, normalize_cutoff(cfg.adaptive_input_cutoff, len(dictionary)),
            )
        else:
            embed_tokens = cls.build_embedding(cfg, dictionary, dim_of(cfg, "decoder_input_dim"))
        return cls(TransformerDecoder(cfg, task.target_dictionary, embed_tokens))

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "model.pt",
                        data_name_or_path: str = ".", **kwargs: Any):
        """Load a local checkpoint as a hub object (see ``FairseqLanguageModel.from_pretrained``).

        A Hugging Face model directory (a ``config.json`` with a ``model_type`` and no
        ``checkpoint_file``) is refused with the two ways to load it: converted in memory by
        ``fairseq.hf_bridge.from_pretrained_hf(DIR)``, or once to a checkpoint by
        ``fairseq-import-hf`` (the converter sits above the models, so this method cannot call
        it; docs/huggingface.md).
        """
        _refuse_hf_directory(str(model_name_or_path), checkpoint_file)
        return super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)

    # fairseq 0.12 options that change what the model computes and that this package does not
    # implement: (option, the value that means "off").
    FAIRSEQ_ONLY_OPTIONS = (("character_embeddings", False), ("base_layers", 0),
                            ("quant_noise_pq", 0.0), ("cross_self_attention", False))

    @classmethod
    def unsupported_options(cls, model_cfg: Dict[str, Any]) -> List[str]:
        """``["key=value", ...]`` for the options of a saved model config (fairseq's) that
        would compute differently here; empty when the checkpoint can be read faithfully."""
        found = []
        for key, off in cls.FAIRSEQ_ONLY_OPTIONS:
            # optional: fairseq's saved model dict (not ours) has these keys only when fairseq wrote them
            value = model_cfg.get(key)
            if value is not None and value != off:
                found.append(f"model.{key}={value!r}")
        return found

    @classmethod
    def upgrade_legacy_args(cls, values: Dict[str, Any]) -> None:
        """Update, in place, the flags of a pre-0.10 fairseq checkpoint (``args``), as fairseq's
        ``base_lm_architecture`` does when it loads one.

        Every ``transformer_lm`` architecture of that era was pre-norm (the architecture
        function forced ``decoder_normalize_before``); ``--no-tie-adaptive-proj`` marks the
        oldest ones (no final LayerNorm, projections tied unless it was set);
        ``decoder_final_norm`` is the older opposite of ``no_decoder_final_norm``; input and
        output dimensions default to the embedding dimension.
        """
        if "no_tie_adaptive_proj" in values:
            values["no_decoder_final_norm"] = True
            if values["no_tie_adaptive_proj"] is False:
                values["tie_adaptive_proj"] = True
        if "decoder_final_norm" in values:
            values["no_decoder_final_norm"] = not values["decoder_final_norm"]
        values["decoder_normalize_before"] = True
        if "decoder_embed_dim" in values:
            values.setdefault("decoder_input_dim", values["decoder_embed_dim"])
            values.setdefault("decoder_output_dim", values["decoder_embed_dim"])

    def fairseq_layout_context(self) -> Dict[str, Any]:
        """What the fairseq layout's rows read from this model (:mod:`fairseq.formats.fairseq_lm`)."""
        softmax = self.decoder.adaptive_softmax
        attention = self.decoder.layers[0].self_attn if len(self.decoder.layers) else None
        return {"adaptive_softmax": softmax is not None,
                "adaptive_tied": bool(softmax is not None and softmax.tied),
                "tie_proj": bool(softmax is not None and softmax.tie_proj),
                "head_words": softmax.cutoff[0] if softmax is not None else 0,
                "q_rows": attention.embed_dim if attention is not None else 0,
                "kv_rows": attention.kv_dim if attention is not None else 0}

    def fairseq_state_dict(self) -> Dict[str, Tensor]:
        """The weights in fairseq 0.12's layout (what its ``TransformerLanguageModel`` saves).

        Separate ``q_proj``/``k_proj``/``v_proj``, ``embeddings.{i}.{0,1}`` for an adaptive
        input, ``head``/``tail.{i}.{0,2}`` for an adaptive softmax, and fairseq's ``version``
        buffers (an adaptive input's one-element ``_float_tensor`` included, which fairseq's
        strict load wants). ``load_state_dict`` of this model accepts it as well as its own layout.
        """
        return self.to_fairseq_layout(self.state_dict())

    def to_fairseq_layout(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``state_dict`` (this model's keys) in fairseq 0.12's layout; see :meth:`fairseq_state_dict`."""
        converted = from_ours(state_dict, FAIRSEQ_LM, self.fairseq_layout_context())
        buffer = "decoder.embed_tokens._float_tensor"
        if buffer not in converted and any(k.startswith("decoder.embed_tokens.embeddings.") for k in converted):
            # the layout table drops it on the way to ours and writes none back
            converted[buffer] = torch.zeros(1)
        return converted

    def upgrade_state_dict(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``state_dict`` in this model's layout: a fairseq checkpoint's keys (0.12's and older)
        converted through the fairseq layout table, a checkpoint of the whole stack cut down to
        the layers a pruned model keeps (``decoder_layers_to_keep``). Keys of neither layout
        are left for ``load_state_dict`` to report.

        Two upgrades change the model rather than the keys, as fairseq does: a checkpoint of
        ``version`` 2 or older without a final LayerNorm removes this model's; a tied output
        projection absent from the file is the embedding.
        """
        decoder = self.decoder
        version = state_dict.get("decoder.version")
        if (version is not None and float(version.reshape(-1)[0]) <= 2 and decoder.layer_norm is not None
                and "decoder.layer_norm.weight" not in state_dict):
            decoder.layer_norm = None
        state = to_ours(state_dict, FAIRSEQ_LM, self.fairseq_layout_context(), unmapped="keep")
        out_key = "decoder.output_projection.weight"
        if (decoder.output_projection is not None and out_key not in state
                and decoder.output_projection.weight is getattr(decoder.embed_tokens, "weight", None)
                and "decoder.embed_tokens.weight" in state):
            state[out_key] = state["decoder.embed_tokens.weight"]
        return self._keep_layers(state)

    def _keep_layers(self, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """A whole stack's weights renumbered onto the layers this model keeps (the others dropped)."""
        kept, prefix = self.decoder.kept_layers, "decoder.layers."
        if kept == list(range(len(self.decoder.layers))):
            return state
        saved_ids = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
        if not saved_ids or max(saved_ids) < len(self.decoder.layers):
            return state  # already the pruned stack
        new_id = {old: new for new, old in enumerate(kept)}
        out = {}
        for key, value in state.items():
            if key.startswith(prefix):
                old, rest = key[len(prefix):].split(".", 1)
                if int(old) in new_id:
                    out[f"{prefix}{new_id[int(old)]}.{rest}"] = value
            else:
                out[key] = value
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, **kwargs: Any) -> Any:
        """``nn.Module.load_state_dict`` of :meth:`upgrade_state_dict`'s result, so that fairseq's
        layouts load as well as this package's."""
        return super().load_state_dict(self.upgrade_state_dict(dict(state_dict)), strict=strict, **kwargs)

    @classmethod
    def build_embedding(cls, cfg: Any, dictionary: Any, embed_dim: int) -> nn.Embedding:
        """A token embedding for ``dictionary``: N(0, embed_dim**-0.5), zero pad row."""
        embedding = nn.Embedding(len(dictionary), embed_dim, padding_idx=dictionary.pad())
        nn.init.normal_(embedding.weight, mean=0.0, std=embed_dim**-0.5)
        nn.init.zeros_(embedding.weight[dictionary.pad()])
        return embedding


def _refuse_hf_directory(path: str, checkpoint_file: str) -> None:
    """Raise one line when ``path`` is a transformers model directory without ``checkpoint_file``."""
    import json
    import os

    config = os.path.join(path, "config.json")
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, checkpoint_file.split(os.pathsep)[0])) \
            or not os.path.isfile(config):
        return
    try:
        with open(config, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        return
    if model_type is None:
        return  # a save_dir's run config
    from fairseq.errors import ConfigError

    converted = os.path.join(os.path.normpath(path) + "-fairseq", "model.pt")
    raise ConfigError(f"{path} is a Hugging Face transformers model (model_type={model_type}), not a fairseq "
                      f"checkpoint: load it with fairseq.hf_bridge.from_pretrained_hf({path!r}), or convert it "
                      f"once with `fairseq-import-hf {path} --out {converted}` and call "
                      f"from_pretrained({os.path.dirname(converted)!r})")


# -- named architectures: presets of the config above ------------------------------------------

def _width(embed_dim: int, ffn_embed_dim: int) -> Dict[str, int]:
    """Model width. The input and output dims are not set: they follow the embedding dim (their
    defaults interpolate it), also when ``--decoder-embed-dim`` changes it (PITFALLS #18)."""
    return {"decoder_embed_dim": embed_dim, "decoder_ffn_embed_dim": ffn_embed_dim}


# Every named transformer_lm architecture is pre-norm: post-norm LMs of this depth train unstably.
_PRE_NORM = {"decoder_normalize_before": True}

_GPT_REGULARIZATION = {"dropout": 0.1, "attention_dropout": 0.1, "activation_fn": "gelu"}

TRANSFORMER_LM_BIG = {
    **_PRE_NORM, **_width(1024, 4096), "decoder_layers": 12, "decoder_attention_heads": 16,
}
TRANSFORMER_LM_BAEVSKI_WIKI103 = {
    **TRANSFORMER_LM_BIG,
    "decoder_layers": 16, "decoder_attention_heads": 8,
    "dropout": 0.3, "attention_dropout": 0.1, "activation_dropout": 0.1,
    "adaptive_input": True, "adaptive_input_cutoff": "20000,60000",
    "adaptive_softmax_cutoff": "20000,60000", "adaptive_softmax_dropout": 0.2,
    "tie_adaptive_weights": True, "tie_adaptive_proj": True,
    "no_decoder_final_norm": True,
}
TRANSFORMER_LM_BAEVSKI_GBW = {
    **TRANSFORMER_LM_BIG, **_width(512, 4096),
    "dropout": 0.1, "attention_dropout": 0.1, "no_decoder_final_norm": True,
}
TRANSFORMER_LM_GPT = {
    **_PRE_NORM, **_width(768, 3072), "decoder_layers": 12, "decoder_attention_heads": 12,
    **_GPT_REGULARIZATION,
}
TRANSFORMER_LM_GPT2_SMALL = {
    **_PRE_NORM, **_width(1024, 4096), "decoder_layers": 24, "decoder_attention_heads": 16,
    **_GPT_REGULARIZATION,
}
TRANSFORMER_LM_GPT2_MEDIUM = {
    **_PRE_NORM, **_width(1280, 5120), "decoder_layers": 36, "decoder_attention_heads": 20,
    **_GPT_REGULARIZATION,
}
TRANSFORMER_LM_GPT2_TINY = {
    **_PRE_NORM, **_width(64, 64), "decoder_layers": 2, "decoder_attention_heads": 1,
    **_GPT_REGULARIZATION,
}
TRANSFORMER_LM_GPT2_BIG = {
    **_PRE_NORM, **_width(1600, 6400), "decoder_layers": 48, "decoder_attention_heads": 25,
    **_GPT_REGULARIZATION,
}
TRANSFORMER_LM_GPT2_BIG_WIDE = {
    **_PRE_NORM, **_width(2048, 8192), "decoder_layers": 24, "decoder_attention_heads": 32,
    **_GPT_REGULARIZATION,
}
TRANSFORMER_LM_GPT2_BIGGER = {
    **_PRE_NORM, **_width(2048, 8192), "decoder_layers": 48, "decoder_attention_heads": 32,
    **_GPT_REGULARIZATION,
}


def _gpt3(layers: int, embed_dim: int, heads: int) -> Dict[str, Any]:
    """GPT-3 shapes: feed-forward 4x wide, learned positions, no dropout, tied output."""
    return {
        **_PRE_NORM, **_width(embed_dim, 4 * embed_dim), "decoder_layers": layers,
        "decoder_attention_heads": heads, "decoder_learned_pos": True, "dropout": 0.0,
        "attention_dropout": 0.0, "activation_fn": "gelu", "share_decoder_input_output_embed": True,
    }

def _llama(layers: int, embed_dim: int, heads: int, kv_heads: int, ffn_embed_dim: int) -> Dict[str, Any]:
    """Llama shapes: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases, unscaled and untied
    embeddings, no dropout."""
    return {
        **_PRE_NORM, **_width(embed_dim, ffn_embed_dim), "decoder_layers": layers,
        "decoder_attention_heads": heads, "decoder_kv_attention_heads": kv_heads,
        "activation_fn": "silu", "decoder_ffn_gated": True, "decoder_norm": "rmsnorm", "norm_eps": 1e-5,
        "rope": True, "rope_theta": 10000.0, "no_decoder_bias": True, "no_scale_embedding": True,
        "share_decoder_input_output_embed": False, "dropout": 0.0, "attention_dropout": 0.0,
        "activation_dropout": 0.0,
    }


ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    "transformer_lm_big": TRANSFORMER_LM_BIG,
    "transformer_lm_baevski_wiki103": TRANSFORMER_LM_BAEVSKI_WIKI103,
    "transformer_lm_wiki103": TRANSFORMER_LM_BAEVSKI_WIKI103,
    "transformer_lm_baevski_gbw": TRANSFORMER_LM_BAEVSKI_GBW,
    "transformer_lm_gbw": TRANSFORMER_LM_BAEVSKI_GBW,
    "transformer_lm_gpt": TRANSFORMER_LM_GPT,
    "transformer_lm_gpt2_small": TRANSFORMER_LM_GPT2_SMALL,
    "transformer_lm_gpt2_medium": TRANSFORMER_LM_GPT2_MEDIUM,
    "transformer_lm_gpt2_tiny": TRANSFORMER_LM_GPT2_TINY,
    "transformer_lm_gpt2_big": TRANSFORMER_LM_GPT2_BIG,
    "transformer_lm_gpt2_big_wide": TRANSFORMER_LM_GPT2_BIG_WIDE,
    "transformer_lm_gpt2_bigger": TRANSFORMER_LM_GPT2_BIGGER,
    "transformer_lm_gpt3_small": _gpt3(12, 768, 12),  # 125M parameters
    "transformer_lm_gpt3_medium": _gpt3(24, 1024, 16),  # 350M
    "transformer_lm_gpt3_large": _gpt3(24, 1536, 16),  # 760M
    "transformer_lm_gpt3_xl": _gpt3(24, 2048, 32),  # 1.3B
    "transformer_lm_gpt3_2_7": _gpt3(32, 2560, 32),  # 2.7B
    "transformer_lm_gpt3_6_7": _gpt3(32, 4096, 32),  # 6.7B
    "transformer_lm_gpt3_13": _gpt3(40, 5120, 40),  # 13B
    "transformer_lm_gpt3_175": _gpt3(96, 12288, 96),  # 175B
    "transformer_lm_llama_tiny": _llama(2, 64, 4, 2, 172),  # 0.04M + 2 x 64 x vocabulary
    "transformer_lm_llama_small": _llama(12, 768, 12, 4, 2048),  # 124.7M at a 32000 vocabulary
}
for _name, _preset in ARCHITECTURES.items():
    register_model_architecture("transformer_lm", _name, _preset)

# fairseq's architecture functions, for plugins whose own architecture function ends with one
# (``base_lm_architecture(args)``): each fills what ``args`` lacks with that preset's values
base_lm_architecture = architecture_function("transformer_lm")
transformer_lm_big = architecture_function("transformer_lm_big")
transformer_lm_baevski_wiki103 = architecture_function("transformer_lm_baevski_wiki103")
transformer_lm_baevski_gbw = architecture_function("transformer_lm_baevski_gbw")
transformer_lm_gpt = architecture_function("transformer_lm_gpt")
transformer_lm_gpt2_small = architecture_function("transformer_lm_gpt2_small")
transformer_lm_gpt2_tiny = architecture_function("transformer_lm_gpt2_tiny")
transformer_lm_gpt2_medium = architecture_function("transformer_lm_gpt2_medium")
transformer_lm_gpt2_big = architecture_function("transformer_lm_gpt2_big")
transformer_lm_gpt2_big_wide = architecture_function("transformer_lm_gpt2_big_wide")
transformer_lm_gpt2_bigger = architecture_function("transformer_lm_gpt2_bigger")
transformer_lm_gpt3_small = architecture_function("transformer_lm_gpt3_small")
transformer_lm_gpt3_medium = architecture_function("transformer_lm_gpt3_medium")
transformer_lm_gpt3_large = architecture_function("transformer_lm_gpt3_large")
transformer_lm_gpt3_xl = architecture_function("transformer_lm_gpt3_xl")
transformer_lm_gpt3_2_7 = architecture_function("transformer_lm_gpt3_2_7")
transformer_lm_gpt3_6_7 = architecture_function("transformer_lm_gpt3_6_7")
transformer_lm_gpt3_13 = architecture_function("transformer_lm_gpt3_13")
transformer_lm_gpt3_175 = architecture_function("transformer_lm_gpt3_175")


__all__ = ["ARCHITECTURES", "TransformerLanguageModel", "TransformerLanguageModelConfig", "base_lm_architecture",
           "transformer_lm_baevski_gbw", "transformer_lm_baevski_wiki103", "transformer_lm_big",
           "transformer_lm_gpt", "transformer_lm_gpt2_big", "transformer_lm_gpt2_big_wide",
           "transformer_lm_gpt2_bigger", "transformer_lm_gpt2_medium", "transformer_lm_gpt2_small",
           "transformer_lm_gpt2_tiny", "transformer_lm_gpt3_13", "transformer_lm_gpt3_175",
           "transformer_lm_gpt3_2_7", "transformer_lm_gpt3_6_7", "transformer_lm_gpt3_large",
           "transformer_lm_gpt3_medium", "transformer_lm_gpt3_small", "transformer_lm_gpt3_xl"]
