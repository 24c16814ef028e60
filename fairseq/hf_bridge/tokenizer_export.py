"""The tokenizer files of an export (GPT-2 BPE or a word-level vocabulary)."""
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple



from fairseq.hf_bridge.common import SPECIAL_SYMBOLS, cfg_value
from fairseq.hf_bridge.importing import TextWriter
from fairseq.hf_bridge.reading import read_json


def gpt2_tokenizer(dictionary: Any, encoder_path: str, merges_path: str) -> Tuple[Any, int]:
    """A byte-level BPE ``tokenizers.Tokenizer`` that yields the *dictionary's* ids, and the
    number of ``<unk>`` aliases it needs.

    The dictionary's symbols are GPT-2 ids as decimal text. The BPE keeps every GPT-2 token and
    every merge: a merge chain may pass through tokens the dictionary lacks (a dictionary counted
    on a small corpus). Those tokens get the ids after the dictionary's, in GPT-2 id order: the
    exported model gives these ids ``<unk>``'s rows (:func:`fairseq.hf_bridge.export_weights.fairseq_to_hf`'s ``unk_aliases``),
    so a token the dictionary lacks is ``<unk>`` to the model, as fairseq's lookup makes it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from fairseq.data.encoders.gpt2_bpe import load_merges

    encoder = read_json(encoder_path)
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


def word_tokenizer(dictionary: Any) -> Any:
    """A word-level ``tokenizers.Tokenizer`` over the dictionary's symbols, split on whitespace
    as fairseq's ``tokenize_line`` splits."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {s: i for s, i in dictionary.indices.items()}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_SYMBOLS["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


@dataclass
class BuiltTokenizer:
    tokenizer: Any
    kind: str
    notes: List[str]
    unk_aliases: int = 0
    bpe_files: Tuple[str, ...] = ()


def build_tokenizer(dictionary: Any, cfg: Any, start_token_id: int) -> BuiltTokenizer:
    """The tokenizer of an export: GPT-2 byte-level BPE for a ``bpe=gpt2`` checkpoint whose files
    are here, else word-level over dict.txt; it prepends ``start_token_id`` as fairseq does."""
    from tokenizers import AddedToken, processors

    notes: List[str] = []
    bpe = cfg_value(cfg, "bpe")
    bpe_name = str(cfg_value(bpe, "_name", "")) if bpe is not None else ""
    encoder_path = str(cfg_value(bpe, "gpt2_encoder_json", "")) if bpe_name == "gpt2" else ""
    merges_path = str(cfg_value(bpe, "gpt2_vocab_bpe", "")) if bpe_name == "gpt2" else ""
    if bpe_name == "gpt2" and os.path.isfile(encoder_path) and os.path.isfile(merges_path):
        tokenizer, aliases = gpt2_tokenizer(dictionary, encoder_path, merges_path)
        result = BuiltTokenizer(tokenizer, "GPT-2 byte-level BPE (ids of dict.txt)", notes, aliases,
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
        result = BuiltTokenizer(word_tokenizer(dictionary), "word-level (WordLevel over dict.txt, whitespace split)",
                            notes)
    specials = [dictionary[i] for i in range(dictionary.nspecial)]
    extra = [s for s in dictionary.symbols[dictionary.nspecial:] if s.startswith("madeupword")]
    result.tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials + extra])
    start = dictionary[start_token_id]
    result.tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A", pair=f"{start} $A $B", special_tokens=[(start, start_token_id)])
    return result


def write_tokenizer(out_dir: str, built: BuiltTokenizer, dictionary: Any, model_max_length: int,
                     data_dir: Optional[str]) -> None:
    """tokenizer.json, tokenizer_config.json, dict.txt (and a gpt2 BPE's encoder.json, vocab.bpe)."""
    from fairseq.file_io import atomic_write

    text = built.tokenizer.to_str(pretty=False).encode("utf-8")
    atomic_write(os.path.join(out_dir, "tokenizer.json"), lambda f: f.write(text))
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": dictionary[dictionary.bos()],
               "eos_token": dictionary[dictionary.eos()], "unk_token": dictionary[dictionary.unk()],
               "pad_token": dictionary[dictionary.pad()], "model_max_length": model_max_length,
               "clean_up_tokenization_spaces": False}
    cfg_text = (json.dumps(tok_cfg, indent=2) + "\n").encode("utf-8")
    atomic_write(os.path.join(out_dir, "tokenizer_config.json"), lambda f: f.write(cfg_text))
    for source, name in zip(built.bpe_files, ("encoder.json", "vocab.bpe")):
        shutil.copyfile(source, os.path.join(out_dir, name))
    source = os.path.join(data_dir, "dict.txt") if data_dir else ""
    if source and os.path.isfile(source) and dictionary_from(source) == dictionary:
        shutil.copyfile(source, os.path.join(out_dir, "dict.txt"))  # as written (overwrite flags kept)
    else:
        atomic_write(os.path.join(out_dir, "dict.txt"), lambda f: dictionary.save(TextWriter(f)))


def dictionary_from(path: str) -> Any:
    from fairseq.data import Dictionary

    return Dictionary.load(path)
