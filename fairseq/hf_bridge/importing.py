"""Writing an imported model as a checkpoint (and its data directory) of this package, or loading it
in memory as a hub object."""
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from fairseq.errors import ConfigError

from fairseq.hf_bridge.common import UnmappableModelError
from fairseq.hf_bridge.reading import LoadedHF, load_hf_directory
from fairseq.hf_bridge.vocab import VocabMap


def dictionary_of(vocab: VocabMap) -> Any:
    from fairseq.data import Dictionary

    d = Dictionary()
    for symbol in vocab.symbols:
        d.add_symbol(symbol, n=1, overwrite=symbol in d.indices)
    return d


def bpe_payload(loaded: LoadedHF) -> Dict[str, bytes]:
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


def bpe_config(directory: str) -> Dict[str, str]:
    return {"_name": "gpt2", "gpt2_encoder_json": os.path.abspath(os.path.join(directory, "encoder.json")),
            "gpt2_vocab_bpe": os.path.abspath(os.path.join(directory, "vocab.bpe"))}


def write_files(directory: str, payload: Dict[str, bytes]) -> None:
    from fairseq.file_io import atomic_write

    os.makedirs(directory, exist_ok=True)
    for name, data in payload.items():
        atomic_write(os.path.join(directory, name), lambda f, data=data: f.write(data))


def run_config(loaded: LoadedHF, data_dir: str, bpe: Dict[str, str]) -> Any:
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


def build_model(cfg: Any, dictionary: Any, state: Dict[str, Tensor], source: str, on_meta: bool = False) -> Any:
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
                "max_target_positions", "rope", "rope_theta", "decoder_norm", "norm_eps", "decoder_ffn_gated",
                "decoder_kv_attention_heads", "no_decoder_bias")
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
    """Write a GPT-2 / XGLM / Llama directory as a checkpoint of this package, with its ``dict.txt``.

    The checkpoint holds the run config (``transformer_lm``, ``language_modeling`` with
    ``task.data`` = ``data_out``), the weights and the integrity record, in the layout a trained
    checkpoint has (the one fairseq 0.12.2 reads too, see ``docs/design.md``), written with
    :func:`fairseq.checkpoint_utils.torch_persistent_save`; it loads with
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
    from fairseq.checkpoint.fairseq_layout import to_fairseq_layout, to_fairseq_weights
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
    dictionary = dictionary_of(loaded.vocab)
    source_dict = os.path.join(str(directory), "dict.txt")
    if loaded.vocab.kind == "dict" and os.path.isfile(source_dict):
        with open(source_dict, "rb") as f:
            dict_bytes = f.read()  # as written (overwrite flags included)
    else:
        lines = io.StringIO()
        dictionary.save(lines)
        dict_bytes = lines.getvalue().encode("utf-8")
    payload = {"dict.txt": dict_bytes, **bpe_payload(loaded)}
    for name, data in payload.items():  # never replace another model's dictionary unasked
        path = os.path.join(data_dir, name)
        if os.path.isfile(path) and not overwrite:
            with open(path, "rb") as f:
                if f.read() != data:
                    raise ConfigError(f"{path} exists and differs from the imported model's: choose another "
                                      "--data-out, or pass --overwrite to replace it")
    cfg = run_config(loaded, data_dir, bpe_config(data_dir) if "encoder.json" in payload else {})
    _, model = build_model(cfg, dictionary, dict(loaded.state), directory, on_meta=True)  # checks the mapping
    write_files(data_dir, payload)
    dict_path = os.path.join(data_dir, "dict.txt")
    state = {
        "cfg": plain_config(cfg), "model": loaded.state, "version": CHECKPOINT_VERSION, "num_updates": 0,
        "extra_state": {"epoch": 1, "imported_from": {"directory": os.path.abspath(str(directory)),
                                                      "model_type": loaded.hf_config["model_type"]}},
    }
    # in the layout fairseq 0.12.2 reads, as a trained checkpoint is (our loader undoes it); a
    # model using what fairseq lacks (rope, RMSNorm, ...) gets a model name fairseq refuses
    state = to_fairseq_layout(state)
    to_fairseq_weights(state, model)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch_persistent_save(state, out)
    return ImportReport(out, dict_path, str(loaded.hf_config["model_type"]), len(dictionary),
                        num_parameters(loaded.state), loaded.model_values, loaded.notes, time.perf_counter() - start)


def num_parameters(state: Mapping[str, Tensor]) -> int:
    """Elements of the distinct tensors of ``state`` (a tied table counted once)."""
    seen, total = set(), 0
    for value in state.values():
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if key not in seen:
            seen.add(key)
            total += value.numel()
    return total


class TextWriter:
    """A text face on a binary file (``Dictionary.save`` writes str)."""

    def __init__(self, f: Any):
        self.f = f

    def write(self, text: str) -> None:
        self.f.write(text.encode("utf-8"))


def from_pretrained_hf(directory: str, allow_nonfinite: bool = False, **kwargs: Any) -> Any:
    """``TransformerLanguageModel.from_pretrained`` for a local GPT-2 / XGLM / Llama directory: the
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
    dictionary = dictionary_of(loaded.vocab)
    bpe: Dict[str, str] = {}
    pairs = (("encoder.json", "vocab.bpe"),) if loaded.vocab.kind == "dict" else \
        (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")) if loaded.vocab.kind == "gpt2" else ()
    for enc, merges in pairs:  # the directory's own files, in place
        if os.path.isfile(os.path.join(directory, enc)) and os.path.isfile(os.path.join(directory, merges)):
            bpe = {"_name": "gpt2", "gpt2_encoder_json": os.path.abspath(os.path.join(directory, enc)),
                   "gpt2_vocab_bpe": os.path.abspath(os.path.join(directory, merges))}
            break
    else:
        payload = bpe_payload(loaded)
        if payload:  # a tokenizer.json's BPE, written out for fairseq's gpt2 encoder
            temporary = tempfile.mkdtemp(prefix="fairseq_hf_bpe_")
            write_files(temporary, payload)
            bpe = bpe_config(temporary)
    cfg = run_config(loaded, directory, bpe)
    task, model = build_model(cfg, dictionary, loaded.state, directory)
    return GeneratorHubInterface(cfg, task, [model], **kwargs)
