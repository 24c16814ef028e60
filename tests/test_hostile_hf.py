"""Hostile Hugging Face directories and the HF / lm-eval commands (issue 25, part B).

Each damaged directory goes through the real command (``fairseq-import-hf``'s ``cli_main``, in
this process) and must end with exit code 2, exactly one line on stderr naming the file or key,
no traceback, and no checkpoint written. Tiny GPT-2 and XGLM directories are saved once with
transformers and copied per case.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch

from fairseq import hf_bridge, hf_validation
from fairseq.errors import ConfigError

V = 64  # the tiny models' vocabulary


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """``{"gpt2": DIR, "xglm": DIR}``: tiny models saved by transformers, never modified."""
    from transformers import GPT2Config, GPT2LMHeadModel, XGLMConfig, XGLMForCausalLM

    root = tmp_path_factory.mktemp("hf_pristine")
    torch.manual_seed(0)
    gpt2 = GPT2Config(vocab_size=V, n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
                      pad_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(gpt2).save_pretrained(root / "gpt2")
    xglm = XGLMConfig(vocab_size=V, max_position_embeddings=32, d_model=16, num_layers=1, attention_heads=2,
                      ffn_dim=32, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    XGLMForCausalLM(xglm).save_pretrained(root / "xglm")
    return {"gpt2": root / "gpt2", "xglm": root / "xglm"}


@pytest.fixture
def hf_dir(pristine, tmp_path):
    """A fresh copy of the tiny GPT-2 directory (``hf_dir("xglm")`` for the other)."""
    def copy(kind: str = "gpt2") -> Path:
        target = tmp_path / f"hf_{kind}"
        if not target.exists():
            shutil.copytree(pristine[kind], target)
        return target
    return copy


def import_hf(argv, capsys):
    """``fairseq-import-hf ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    from fairseq_cli import import_hf

    code = 0
    try:
        import_hf.cli_main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(argv, capsys, *named, code=2):
    """The command ends with ``code`` and one line on stderr naming each of ``named``."""
    rc, _, err = import_hf(argv, capsys) if argv[0] != "export" else export_hf(argv[1:], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for word in named:
        assert word in lines[0], err
    return lines[0]


def export_hf(argv, capsys):
    from fairseq_cli import export_hf as command

    code = 0
    try:
        command.cli_main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is DELETE:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))  # NaN / Infinity written as Python's json writes them


DELETE = object()


# -- config.json: the schema ----------------------------------------------------------------------
CONFIG_VALUES = [
    ("gpt2", {"vocab_size": "abc"}, "vocab_size"),
    ("gpt2", {"vocab_size": 1e12}, "vocab_size"),
    ("gpt2", {"vocab_size": 10 ** 12}, "vocab_size"),
    ("gpt2", {"vocab_size": True}, "vocab_size"),
    ("gpt2", {"vocab_size": DELETE}, "vocab_size"),
    ("gpt2", {"n_positions": 64.5}, "n_positions"),
    ("gpt2", {"n_positions": 2 ** 21}, "n_positions"),
    ("gpt2", {"n_head": 0}, "n_head"),
    ("gpt2", {"n_head": 3}, "divisible"),
    ("gpt2", {"n_layer": -1}, "n_layer"),
    ("gpt2", {"n_embd": 10 ** 9}, "n_embd"),
    ("gpt2", {"n_inner": "64"}, "n_inner"),
    ("gpt2", {"resid_pdrop": float("nan")}, "resid_pdrop"),
    ("gpt2", {"attn_pdrop": 1.0}, "attn_pdrop"),
    ("gpt2", {"embd_pdrop": -0.1}, "embd_pdrop"),
    ("gpt2", {"layer_norm_epsilon": -1e-5}, "layer_norm_epsilon"),
    ("gpt2", {"layer_norm_epsilon": float("inf")}, "layer_norm_epsilon"),
    ("gpt2", {"eos_token_id": -1}, "eos_token_id"),
    ("gpt2", {"eos_token_id": "2"}, "eos_token_id"),
    ("gpt2", {"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ("gpt2", {"model_type": ["gpt2"]}, "model_type"),
    ("gpt2", {"fairseq": {"version": 1, "task": {"tokens_per_sample": "many"}}}, "tokens_per_sample"),
    ("gpt2", {"fairseq": {"version": 1, "unk_aliases": V}}, "unk_aliases"),
    ("gpt2", {"fairseq": {"version": 1, "embed_scale": 0}}, "embed_scale"),
    ("xglm", {"d_model": 16, "attention_heads": 3}, "divisible"),
    ("xglm", {"dropout": 1.5}, "dropout"),
    ("xglm", {"max_position_embeddings": 2 ** 40}, "max_position_embeddings"),
    ("xglm", {"ffn_dim": 0}, "ffn_dim"),
    ("xglm", {"layerdrop": float("nan")}, "layerdrop"),
]


@pytest.mark.parametrize("kind, changes, named", CONFIG_VALUES,
                         ids=[f"{k}-{next(iter(c))}-{n}" for k, c, n in CONFIG_VALUES])
def test_a_config_value_out_of_its_schema_is_one_line(kind, changes, named, hf_dir, tmp_path, capsys):
    directory = hf_dir(kind)
    edit_config(directory, **changes)
    out = tmp_path / "out" / "model.pt"
    refused([directory, "--out", out], capsys, named, "config.json")
    assert not out.exists()


CONFIG_FILES = [
    ("list", "[1, 2, 3]", "holds a list"),
    ("string", '"gpt2"', "holds a string"),
    ("invalid", '{"model_type": "gpt2", "vocab_size": 64,', "not valid JSON"),
    ("deep", '{"model_type": "gpt2", "x": ' + "[" * 100000 + "]" * 100000 + "}", "nested"),
    ("deep-but-parsable", '{"model_type": "gpt2", "x": ' + "[" * 200 + "]" * 200 + "}", "nested"),
    ("no-model-type", '{"vocab_size": 64}', "no model_type"),
    ("bare-nan", '{"model_type": "gpt2", "vocab_size": 64, "x": NaN}', "x is nan"),
]


@pytest.mark.parametrize("name, text, named", CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_a_malformed_config_json_is_one_line_saying_what_is_wrong(name, text, named, hf_dir, tmp_path, capsys):
    directory = hf_dir()
    (directory / "config.json").write_text(text)
    line = refused([directory, "--out", tmp_path / "m.pt"], capsys, named, "config.json")
    if name == "invalid":
        assert "line 1 column" in line


def test_a_config_json_that_is_not_utf8_or_a_directory_is_one_line(hf_dir, tmp_path, capsys):
    directory = hf_dir()
    (directory / "config.json").write_bytes(b'{"model_type": "gpt2", "x": "\xff\xfe"}')
    refused([directory, "--out", tmp_path / "m.pt"], capsys, "not UTF-8", "config.json")
    (directory / "config.json").unlink()
    (directory / "config.json").mkdir()
    refused([directory, "--out", tmp_path / "m.pt"], capsys, "is a directory", "config.json")


def test_a_missing_or_non_directory_model_path_exits_2(tmp_path, capsys):
    refused([tmp_path / "nowhere", "--out", tmp_path / "m.pt"], capsys, "nowhere", "does not exist")
    (tmp_path / "file").write_text("x")
    refused([tmp_path / "file", "--out", tmp_path / "m.pt"], capsys, "file", "not a directory")
    with pytest.raises(FileNotFoundError):  # in Python: a ConfigError that is also FileNotFoundError
        hf_bridge.load_hf_directory(str(tmp_path / "nowhere"))


# -- weight files: inside the directory, readable, finite --------------------------------------------
def shard_index(directory: Path, source: Path, target: str) -> None:
    """An index whose every tensor (those of ``source``) lives in ``target``."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        keys = list(f.keys())
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: target for k in keys}}))


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_an_index_naming_a_file_outside_the_directory_is_refused(where, hf_dir, tmp_path, capsys):
    directory = hf_dir()
    other = tmp_path / "other"
    other.mkdir()
    shutil.move(str(directory / "model.safetensors"), str(other / "model.safetensors"))
    target = str(other / "model.safetensors") if where == "absolute" else "../other/model.safetensors"
    shard_index(directory, other / "model.safetensors", target)
    refused([directory, "--out", tmp_path / "m.pt"], capsys, "model.safetensors.index.json", "model.safetensors")


def test_a_symlink_out_of_the_directory_is_refused_but_the_hub_cache_layout_is_not(hf_dir, tmp_path, capsys):
    directory = hf_dir()
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(str(directory / "model.safetensors"), str(outside))
    (directory / "model.safetensors").symlink_to(outside)
    refused([directory, "--out", tmp_path / "m.pt"], capsys, "outside the model directory")

    # the Hugging Face cache: snapshots/REV/FILE -> ../../blobs/HASH is the directory's own file
    cache = tmp_path / "models--tiny"
    (cache / "blobs").mkdir(parents=True)
    snapshot = cache / "snapshots" / "abc123"
    shutil.copytree(directory, snapshot, symlinks=True)
    (snapshot / "model.safetensors").unlink()
    shutil.copyfile(outside, cache / "blobs" / "0123abcd")
    (snapshot / "model.safetensors").symlink_to(Path("..") / ".." / "blobs" / "0123abcd")
    rc, out, err = import_hf([snapshot, "--out", tmp_path / "cached.pt"], capsys)
    assert rc == 0, err
    assert (tmp_path / "cached.pt").is_file()


@pytest.mark.parametrize("index, named", [
    ([1, 2], "holds a list"),
    ({"weight_map": ["model.safetensors"]}, "weight_map"),
    ({"weight_map": {"transformer.wte.weight": 3}}, "weight_map"),
    ({"weight_map": {}}, "weight_map"),
    ({"weight_map": {"transformer.wte.weight": "missing.safetensors"}}, "missing.safetensors"),
])
def test_a_malformed_index_is_one_line(index, named, hf_dir, tmp_path, capsys):
    directory = hf_dir()
    (directory / "model.safetensors").unlink()
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    refused([directory, "--out", tmp_path / "m.pt"], capsys, named)


def test_a_truncated_weights_file_is_one_line_exit_2(hf_dir, tmp_path, capsys):
    directory = hf_dir()
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[:len(data) // 2])
    refused([directory, "--out", tmp_path / "m.pt"], capsys, "model.safetensors", "cannot be read as safetensors")


def write_weights(directory: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    path = str(directory / "model.safetensors")
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_weights_are_refused_unless_allowed(value, hf_dir, tmp_path, capsys):
    directory = hf_dir()

    def poison(tensors):
        tensors["transformer.h.0.mlp.c_fc.weight"][3, 5] = value

    write_weights(directory, poison)
    out = tmp_path / "m.pt"
    refused([directory, "--out", out], capsys, "transformer.h.0.mlp.c_fc.weight", "--allow-nonfinite")
    assert not out.exists()
    with pytest.raises(hf_validation.HFDirectoryError, match="allow_nonfinite"):
        hf_bridge.from_pretrained_hf(str(directory))
    rc, stdout, err = import_hf([directory, "--out", out, "--allow-nonfinite"], capsys)
    assert rc == 0 and out.is_file(), err
    assert "NaN or infinity" in stdout


def test_vocab_size_that_disagrees_with_the_weights_is_refused_before_the_vocabulary_is_mapped(
        hf_dir, tmp_path, capsys, monkeypatch):
    directory = hf_dir()
    edit_config(directory, vocab_size=2 ** 24)

    def never(*args, **kwargs):
        raise AssertionError("the vocabulary was mapped before vocab_size was checked")

    # patched where the reader looks it up, so the test fails if the mapping runs first
    import fairseq.hf_bridge.reading as reading

    monkeypatch.setattr(reading, "build_vocab_map", never)
    refused([directory, "--out", tmp_path / "m.pt"], capsys, "vocab_size=16777216", "rows")


# -- tokenizer files -------------------------------------------------------------------------------
def tokenizer_json(vocab, model_type="WordLevel", added=None, **model):
    return json.dumps({"version": "1.0", "added_tokens": added or [], "pre_tokenizer": None,
                       "model": {"type": model_type, "vocab": vocab, "unk_token": "<unk>", **model}})


GOOD_VOCAB = {f"w{i}": i for i in range(V)}
TOKENIZERS = [
    ("string-ids", tokenizer_json({"a": "1", "b": 2}), "'a' has id \"1\""),
    ("model-list", json.dumps({"model": ["WordLevel", {}]}), "model is list"),
    ("tokenizer-list", json.dumps([1, 2]), "holds a list"),
    ("negative", tokenizer_json({**GOOD_VOCAB, "neg": -1}), "id -1"),
    ("duplicate", tokenizer_json({**GOOD_VOCAB, "twin": 5}), "id 5 is given to both"),
    ("beyond-vocab", tokenizer_json({**GOOD_VOCAB, "big": V}), f"vocab_size={V}"),
    ("bool-id", tokenizer_json({"a": True}), "not an integer"),
    ("vocab-list", tokenizer_json(["a", "b"]), "not a mapping of tokens to ids"),
    ("added-collides", tokenizer_json(GOOD_VOCAB, added=[{"id": 7, "content": "<new>"}]), "id 7 is given to both"),
    ("added-negative", tokenizer_json(GOOD_VOCAB, added=[{"id": -3, "content": "<new>"}]), "id -3"),
    ("added-no-content", tokenizer_json(GOOD_VOCAB, added=[{"id": 3}]), "added_tokens[0]"),
    ("unigram-bad", tokenizer_json([[1, 0.0]], model_type="Unigram"), "Unigram"),
    ("merges-bad", tokenizer_json(GOOD_VOCAB, model_type="BPE", merges=[1, 2]), "merges[0]"),
]


@pytest.mark.parametrize("name, text, named", TOKENIZERS, ids=[t[0] for t in TOKENIZERS])
def test_a_malformed_tokenizer_is_one_line(name, text, named, hf_dir, tmp_path, capsys):
    directory = hf_dir()
    if name == "merges-bad":  # merges are read for a byte-level BPE only
        text = json.dumps({**json.loads(text), "pre_tokenizer": {"type": "ByteLevel"}})
    (directory / "tokenizer.json").write_text(text)
    refused([directory, "--out", tmp_path / "m.pt"], capsys, named, "tokenizer.json")


@pytest.mark.parametrize("vocab, named", [({"a": 0, "b": 0}, "id 0 is given to both"),
                                          ({"a": -2}, "id -2"), ({"a": "x"}, "not an integer")])
def test_a_malformed_vocab_json_is_one_line(vocab, named, hf_dir, tmp_path, capsys):
    directory = hf_dir()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    refused([directory, "--out", tmp_path / "m.pt"], capsys, named, "vocab.json")


def test_a_well_formed_tokenizer_still_imports(hf_dir, tmp_path, capsys):
    directory = hf_dir()
    added = [{"id": 2, "content": "w2", "special": True}]  # an added token repeating its vocab entry
    (directory / "tokenizer.json").write_text(tokenizer_json(GOOD_VOCAB, added=added))
    rc, _, err = import_hf([directory, "--out", tmp_path / "m.pt"], capsys)
    assert rc == 0, err


# -- fairseq-export-hf and the lm-eval adapter: missing paths exit 2 ----------------------------------
def test_export_hf_missing_paths_and_a_foreign_dictionary_are_one_line(tiny_checkpoint, data_bin, tmp_path, capsys):
    refused(["export", "--path", tmp_path / "nope.pt", "--data", data_bin, "--out", tmp_path / "o"], capsys,
            "nope.pt", "does not exist")
    checkpoint = tiny_checkpoint / "checkpoint_last.pt"
    refused(["export", "--path", checkpoint, "--data", tmp_path / "no_data", "--out", tmp_path / "o"], capsys,
            "--data", "no_data")
    other = tmp_path / "other_data"
    other.mkdir()
    (other / "dict.txt").write_text("".join(f"tok{i} 1\n" for i in range(7)))
    line = refused(["export", "--path", checkpoint, "--data", other, "--out", tmp_path / "o"], capsys,
                   "dict.txt has 11 types", "--data")
    assert "does not fit the model built from its own config" not in line
    assert not (tmp_path / "o").exists()


def test_export_hf_names_a_damaged_layer_count(tiny_checkpoint, data_bin, tmp_path, capsys):
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu, torch_persistent_save

    state = load_checkpoint_to_cpu(str(tiny_checkpoint / "checkpoint_last.pt"))
    state["cfg"]["model"]["decoder_layers"] = 3  # valid, but not the weights' count
    torch_persistent_save(state, str(tmp_path / "edited.pt"))
    line = refused(["export", "--path", tmp_path / "edited.pt", "--data", data_bin, "--out", tmp_path / "o"],
                   capsys, "decoder_layers=3", "1 layers", code=1)
    assert "dict.txt" not in line


def test_lm_eval_adapter_missing_path_or_data_exit_2(tiny_checkpoint, data_bin, tmp_path, capsys, monkeypatch):
    from fairseq.lm_eval_adapter import FairseqLM, main
    from test_lm_eval_adapter import fast_task_index, write_tasks

    checkpoint = str(tiny_checkpoint / "checkpoint_last.pt")
    with pytest.raises(FileNotFoundError) as e:
        FairseqLM(path=checkpoint, data="/nonexistent/data-bin")
    assert isinstance(e.value, ConfigError) and "data=/nonexistent/data-bin" in str(e.value)
    with pytest.raises(hf_validation.MissingPathError, match="path="):
        FairseqLM(path=str(tmp_path / "gone.pt"))  # without data: exit 2 too, not a failed load

    fast_task_index(monkeypatch)
    tasks = write_tasks(tmp_path / "tasks", data_bin)
    rc = main(["--model", "fairseq", "--model_args", f"path={checkpoint},data=/nonexistent/data-bin",
               "--include_path", str(tasks), "--tasks", "local_mc", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "data=/nonexistent/data-bin" in errors[0], err
    assert "Traceback" not in err


# -- the schema is data --------------------------------------------------------------------------------
def test_every_supported_model_type_has_a_schema_table_and_pristine_configs_pass(pristine):
    assert set(hf_bridge.SUPPORTED_MODEL_TYPES) <= set(hf_validation.SCHEMAS)
    for kind, directory in pristine.items():
        config = hf_validation.read_json_object(str(directory / "config.json"))
        hf_validation.check_config(config, str(directory / "config.json"))


def test_lm_eval_adapter_unknown_task_is_one_line(tiny_checkpoint, data_bin, tmp_path, capsys, monkeypatch):
    from fairseq.lm_eval_adapter import main
    from test_lm_eval_adapter import fast_task_index

    fast_task_index(monkeypatch)
    checkpoint = str(tiny_checkpoint / "checkpoint_last.pt")
    rc = main(["--model", "fairseq", "--model_args", f"path={checkpoint},data={data_bin}",
               "--tasks", "no_such_task_here", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "no_such_task_here" in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("named_tokens, refused_", [(1, True), (600 - 257, True), (600 - 256, False)])
def test_a_tokenizer_covering_far_fewer_tokens_than_rows_is_refused(named_tokens, refused_, tmp_path, capsys):
    """A 1-token tokenizer for a 600-row model would import and then binarize text to <unk>; a
    vocabulary padded a little past its tokenizer (up to 256 rows, or 1%) still imports."""
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path / "wide"
    GPT2LMHeadModel(GPT2Config(vocab_size=600, n_positions=16, n_embd=8, n_layer=1, n_head=2, bos_token_id=0,
                               pad_token_id=1, eos_token_id=2)).save_pretrained(directory)
    (directory / "tokenizer.json").write_text(tokenizer_json({f"w{i}": i for i in range(named_tokens)}))
    capsys.readouterr()  # transformers' progress bar while saving
    if refused_:
        refused([directory, "--out", tmp_path / "m.pt"], capsys, f"names {named_tokens:,} tokens", "600 rows",
                "tokenizer")
    else:
        rc, _, err = import_hf([directory, "--out", tmp_path / "m.pt"], capsys)
        assert rc == 0, err
