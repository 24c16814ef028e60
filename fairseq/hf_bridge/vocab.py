"""The vocabulary mapping between a Hugging Face model and a fairseq dictionary."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor


from fairseq.hf_bridge.common import FAIRSEQ_SPECIALS, SILENT_LOGIT, SILENT_ROW_LIMIT, SPECIAL_SYMBOLS, UnmappableModelError


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


def special_id(value: Any) -> Optional[int]:
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
    # optional: config.json leaves a special token id out (or null) when the model has none; checked below
    bos = special_id(hf_config.get("bos_token_id"))
    eos = special_id(hf_config.get("eos_token_id"))  # optional: as above
    pad = special_id(hf_config.get("pad_token_id"))  # optional: as above
    pad = pad if pad is not None else pad_id
    unk = special_id(hf_config.get("unk_token_id"))  # optional: as above
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
