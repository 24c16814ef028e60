"""Reading a Hugging Face model directory: config, weights and tokenizer, validated."""
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from fairseq import hf_validation as checks
from fairseq.errors import ConfigError, DataError

from fairseq.hf_bridge.common import SUPPORTED_MODEL_TYPES, UnmappableModelError
from fairseq.hf_bridge.import_weights import export_meta, hf_to_fairseq
from fairseq.hf_bridge.vocab import VocabMap, build_vocab_map


# -- files: reading an HF directory -------------------------------------------------------------
def read_json(path: str) -> Any:
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


def read_weights(directory: str) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
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


def token_name(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def merges_of(merges: Any, where: str) -> List[str]:
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


def read_tokenizer(directory: str, limit: Optional[int] = None) -> TokenizerInfo:
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
        # optional: tokenizer_config.json names unk/pad tokens only when the tokenizer has them
        special_names = {"unk": token_name(tok_cfg.get("unk_token")), "pad": token_name(tok_cfg.get("pad_token"))}
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
            info.merges = merges_of(model.get("merges") or [], tok_json)
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


def drop_unk_aliases(hf_config: Dict[str, Any], weights: Dict[str, Tensor]) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """An export's ``<unk>`` alias ids (GPT-2 tokens its dict.txt lacks) removed: the vocabulary
    is the dictionary's again."""
    # optional: only an export whose vocabulary needed <unk> aliases records them
    aliases = int(export_meta(hf_config).get("unk_aliases") or 0)
    if aliases <= 0:
        return hf_config, weights
    size = int(hf_config["vocab_size"]) - aliases
    weights = {k: (v[:size] if k in VOCAB_KEYS and v.dim() == 2 and v.size(0) == size + aliases else v)
               for k, v in weights.items()}
    return {**hf_config, "vocab_size": size}, weights


def check_tokenizer_coverage(tokenizer: TokenizerInfo, rows: int, directory: str) -> None:
    """Refuse a tokenizer that names far fewer tokens than the model has rows.

    A model's vocabulary may be padded past its tokenizer (GPT-2's 50,257 tokens in 50,304 rows,
    a few hundred unused rows in larger models), but a tokenizer that leaves more than 1% of the
    rows (and more than 256) without a token is the wrong file: the import would succeed and the
    data would then binarize to ``<unk>``.

    Raises:
        HFDirectoryError: naming the numbers and the two ways out.
    """
    if tokenizer.tokens is None:
        return
    named = sum(token is not None for token in tokenizer.tokens)
    unnamed = rows - named
    if unnamed > max(256, rows // 100):
        raise checks.HFDirectoryError(
            f"{directory}: the tokenizer names {named:,} tokens but the model has {rows:,} rows "
            f"({unnamed:,} rows would have no token, and text would binarize to <unk>): the tokenizer files "
            "are not this model's; put its own tokenizer.json (or vocab.json + merges.txt) in the directory, "
            "or remove them to import with the HF ids as the dictionary")


def load_hf_directory(directory: str, allow_nonfinite: bool = False) -> LoadedHF:
    """Read a local GPT2LMHeadModel / XGLMForCausalLM / LlamaForCausalLM directory and map it (in memory).

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
    if str(hf_config["model_type"]) not in SUPPORTED_MODEL_TYPES:
        raise UnmappableModelError(f"{directory}: model_type={hf_config['model_type']!r}; only gpt2 "
                                   "(GPT2LMHeadModel), xglm (XGLMForCausalLM) and llama (LlamaForCausalLM) map to "
                                   "transformer_lm")
    weights, st_meta = read_weights(directory)
    checks.check_vocab_rows(weights, VOCAB_KEYS, int(hf_config["vocab_size"]), config_path)
    nonfinite = checks.check_finite(weights, directory, allow=allow_nonfinite)
    # ids of the tokenizer are the model's, aliases included: checked before those are dropped
    tokenizer = read_tokenizer(directory, int(hf_config["vocab_size"]))
    check_tokenizer_coverage(tokenizer, int(hf_config["vocab_size"]), directory)
    hf_config, weights = drop_unk_aliases(hf_config, weights)
    if nonfinite:
        tokenizer.notes.append(f"{len(nonfinite)} weight tensors hold NaN or infinity (first: {nonfinite[0]}); "
                               "imported as they are (allow_nonfinite): their outputs will be NaN")
    vocab = build_vocab_map(hf_config, tokenizer.tokens, tokenizer.kind, tokenizer.unk_id, tokenizer.pad_id,
                            tokenizer.fairseq_symbols)
    if vocab.kind == "gpt2" and not tokenizer.encoder:
        vocab.kind = "ids"
    try:
        model_values, state, notes = hf_to_fairseq(hf_config, weights, vocab, st_meta)
    except UnmappableModelError as e:  # the message names the key; the path says which file
        raise UnmappableModelError(f"{config_path}: {e}") from None
    meta = export_meta(hf_config)
    task_meta = meta.get("task") if isinstance(meta.get("task"), dict) else {}
    positions = int(model_values["max_target_positions"])
    task_values = {"add_bos_token": bool(task_meta.get("add_bos_token", False)),
                   "tokens_per_sample": int(task_meta.get("tokens_per_sample") or min(positions, 1024))}
    return LoadedHF(directory, hf_config, model_values, state, vocab, tokenizer, task_values,
                    tokenizer.notes + notes)
