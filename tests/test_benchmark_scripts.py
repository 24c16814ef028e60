"""The peer benchmark scripts (benchmarks/vs_fairseq.py, vs_hf.py, vs_hf_llama.py) and their shared
helpers: what they would install, how they read a corpus and a command line, what they report.
Nothing here is timed and nothing is built; the benchmarks themselves are run by hand."""
import sys

import pytest

from conftest import ROOT, tiny_task

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_common  # noqa: E402
import vs_fairseq  # noqa: E402

PY = "/venv/bin/python"


# -- vs_fairseq: what goes into the fairseq venv ---------------------------------------------------
def test_pins_follow_our_interpreter_when_it_has_the_packages():
    ours = {"torch": "2.13.0+cpu", "numpy": "2.1.0", "hydra-core": "1.3.2", "omegaconf": "2.3.0"}
    assert vs_fairseq.dependency_pins(ours) == ours


def test_pins_without_our_packages_are_the_cpu_torch_of_install_sh_and_the_tested_versions():
    pins = vs_fairseq.dependency_pins({}, gpu=False)
    assert pins["torch"] == vs_fairseq.install_sh_torch_version() + "+cpu"
    assert {k: pins[k] for k in vs_fairseq.FALLBACK_PINS} == vs_fairseq.FALLBACK_PINS
    # hydra-core 1.0.x (fairseq 0.12's own pin) does not import on Python 3.11
    assert pins["hydra-core"].startswith("1.3.") and pins["omegaconf"].startswith("2.3.")
    assert vs_fairseq.dependency_pins({}, gpu=True)["torch"] == vs_fairseq.install_sh_torch_version()


@pytest.mark.parametrize("reachable", [False, True])
def test_torch_goes_in_alone_pinned_to_a_cpu_build(reachable):
    pins = vs_fairseq.dependency_pins({}, gpu=False)
    cmds = vs_fairseq.install_commands(PY, ["torch", "numpy", "hydra-core", "omegaconf", "cython"], pins,
                                       cpu_index_reachable=reachable)
    assert len(cmds) == 2
    torch_cmd, rest = cmds
    assert torch_cmd[:5] == [PY, "-m", "pip", "install", "-q"]
    assert torch_cmd[5] == f"torch=={pins['torch']}" and torch_cmd[5].endswith("+cpu")
    # the CPU index only when it answers, and only as an extra index (never replacing pip's own)
    assert ("--extra-index-url" in torch_cmd) is reachable
    assert "--index-url" not in torch_cmd
    if reachable:
        assert torch_cmd[torch_cmd.index("--extra-index-url") + 1] == vs_fairseq.TORCH_CPU_INDEX
    assert rest[5:] == [f"numpy=={pins['numpy']}", f"hydra-core=={pins['hydra-core']}",
                        f"omegaconf=={pins['omegaconf']}", "cython"]
    assert not any(a.startswith("torch") for a in rest)


def test_nothing_missing_installs_nothing_and_build_tools_are_not_pinned():
    pins = vs_fairseq.dependency_pins({})
    assert vs_fairseq.install_commands(PY, [], pins, cpu_index_reachable=True) == []
    assert vs_fairseq.install_commands(PY, ["wheel", "bitarray"], pins, False) == [
        [PY, "-m", "pip", "install", "-q", "wheel", "bitarray"]]


def test_missing_packages_of_this_interpreter_leaves_out_what_it_has():
    missing = vs_fairseq.missing_packages(sys.executable)
    assert not {"torch", "numpy", "hydra-core", "omegaconf"} & set(missing)
    assert set(missing) <= {pkg for _, pkg in vs_fairseq.VENV_MODULES}


def test_print_install_plan_builds_nothing(tmp_path, capsys):
    assert vs_fairseq.main(["--print-install-plan", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pins: torch==" in out and "hydra-core==" in out
    assert not (tmp_path / "venv").exists() and not (tmp_path / "sdist").exists()


def test_vs_fairseq_help_names_the_new_options(capsys):
    with pytest.raises(SystemExit) as exc:
        vs_fairseq.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--text", "--dtypes", "--print-install-plan", "--build-only"):
        assert flag in out


# -- vs_fairseq: --text ---------------------------------------------------------------------------
def test_split_lines_is_contiguous_90_5_5():
    lines = [f"line {i}" for i in range(100)]
    train, valid, test = vs_fairseq.split_lines(lines)
    assert (len(train), len(valid), len(test)) == (90, 5, 5)
    assert train + valid + test == lines
    assert [len(p) for p in vs_fairseq.split_lines(["a", "b", "c"])] == [1, 1, 1]
    with pytest.raises(ValueError, match="2 lines"):
        vs_fairseq.split_lines(["a", "b"])


def test_prepare_text_splits_a_file_once_and_reuses_it(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(f"word{i} and more" if i % 7 else "" for i in range(200)) + "\n", encoding="utf-8")
    out = vs_fairseq.prepare_text(tmp_path / "work", src)
    parts = [(out / f"{n}.txt").read_text(encoding="utf-8").splitlines() for n in ("train", "valid", "test")]
    kept = [ln for ln in src.read_text().splitlines() if ln.strip()]  # blank lines dropped
    assert sum(parts, []) == kept and [len(p) for p in parts] == [153, 9, 9]
    assert out.name.startswith("text-corpus-")
    assert vs_fairseq.prepare_text(tmp_path / "work", src) == out
    src.write_text("other text\n" * 30)
    assert vs_fairseq.prepare_text(tmp_path / "work", src) != out  # keyed on the content


def test_prepare_text_takes_a_split_directory_and_refuses_an_incomplete_one(tmp_path):
    for n in ("train", "valid"):
        (tmp_path / f"{n}.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="without test.txt"):
        vs_fairseq.prepare_text(tmp_path / "work", tmp_path)
    (tmp_path / "test.txt").write_text("a b\n")
    assert vs_fairseq.prepare_text(tmp_path / "work", tmp_path) == tmp_path.resolve()
    with pytest.raises(ValueError, match="does not exist"):
        vs_fairseq.prepare_text(tmp_path / "work", tmp_path / "nope.txt")


def test_main_refuses_a_missing_text_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(vs_fairseq, "build_fairseq", lambda *a, **k: None)
    rc = vs_fairseq.main(["--work", str(tmp_path), "--text", str(tmp_path / "nope.txt"), "--systems", "ours"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 2 and len(out) == 1 and "nope.txt does not exist" in out[0]


# -- vs_fairseq: the report -----------------------------------------------------------------------
def test_report_compares_our_bf16_with_fairseq_fp32_and_mfu_uses_each_precisions_peak():
    results = {"train words/s, 4x": {"ours": [2000.0, 1800.0], "fairseq": [1000.0, 1000.0]},
               "train words/s, 4x, bf16": {"ours": [3000.0, 3200.0]}}
    loads = {"train words/s, 4x": [1.5, 1.7], "train words/s, 4x, bf16": [1.6]}
    peaks = {"fp32": [180.0, 190.0], "bf16": [400.0, 410.0]}
    rows = vs_fairseq.report_rows(results, loads, peaks, vocab_rows=1000)
    fpt = vs_fairseq.train_flops_per_token("4x", 1000) / 1e9
    assert "**1.90**" in rows[0] and f"{1900 * fpt / 190:.0%} / {1000 * fpt / 190:.0%}" in rows[0]
    assert "ours --bf16 / fairseq fp32" in rows[1] and "**3.10**" in rows[1] and "3.00, 3.20" in rows[1]
    assert f"{3100 * fpt / 410:.0%} / {1000 * fpt / 190:.0%}" in rows[1]
    # a CPU without bf16 matmul support has no bf16 ceiling: no bf16 MFU, the fp32 side still shown
    slow = vs_fairseq.report_rows(results, loads, {"fp32": peaks["fp32"]}, vocab_rows=1000)
    assert f"| - / {1000 * fpt / 190:.0%} |" in slow[1]


def test_train_args_add_bf16_only_when_asked():
    assert "--bf16" not in vs_fairseq.train_args("d", "demo", 5, "s", False)
    assert vs_fairseq.train_args("d", "demo", 5, "s", False, bf16=True)[-1] == "--bf16"


# -- bench_common ---------------------------------------------------------------------------------
def test_flops_per_token_of_a_gated_grouped_query_model_counts_its_matmul_weights():
    from fairseq.models.transformer_lm import ARCHITECTURES, TransformerLanguageModel, TransformerLanguageModelConfig

    layers, dim, heads, kv, ffn, vocab, context = 2, 32, 4, 2, 48, 104, 16
    cfg = TransformerLanguageModelConfig(**{**ARCHITECTURES["transformer_lm_llama_tiny"], "decoder_layers": layers,
                                            "decoder_embed_dim": dim, "decoder_input_dim": dim,
                                            "decoder_output_dim": dim, "decoder_attention_heads": heads,
                                            "decoder_kv_attention_heads": kv, "decoder_ffn_embed_dim": ffn})
    model = TransformerLanguageModel.build_model(cfg, tiny_task(vocab))
    in_layers = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2)
    n = in_layers + model.decoder.output_projection.weight.numel()
    got = bench_common.flops_per_token(layers, dim, ffn, context, vocab, kv_dim=kv * dim // heads, gated=True)
    assert got == 6 * n + 12 * layers * context * dim
    # the defaults are the plain (two-matrix, full attention) count bench_mfu.py relies on
    assert bench_common.flops_per_token(2, 8, 32, 4, 10) == 3 * (2 * (2 * (4 * 64 + 2 * 8 * 32) + 80) + 4 * 2 * 4 * 8)


def test_slow_bf16_note_only_when_bf16_is_below_fp32():
    assert bench_common.slow_bf16_note({"fp32": 180.0, "bf16": 400.0}) is None
    note = bench_common.slow_bf16_note({"fp32": 180.0, "bf16": 12.0})
    assert "no fast bf16 matmul" in note and "12" in note and "180" in note and "\n" not in note


def test_matmul_peaks_measures_both_precisions():
    peaks = bench_common.matmul_peaks(size=64, repeats=1)
    assert set(peaks) == {"fp32", "bf16"} and all(v > 0 for v in peaks.values())
    assert len(bench_common.load_text().split()) in (1, 3)


# -- vs_hf.py and vs_hf_llama.py -------------------------------------------------------------------
def test_vs_hf_dry_run_plans_every_model_shape_and_precision(capsys):
    import vs_hf

    assert vs_hf.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 * 2 * 2
    assert any(ln.startswith("gpt2 4x bf16: 2 layers x 512, ffn 2048, 8 heads,") and "GPT2LMHeadModel" in ln
               for ln in lines)
    assert any(ln.startswith("llama demo fp32:") and "2 kv heads" in ln and "LlamaForCausalLM" in ln for ln in lines)
    assert all("16 x 128 tokens per update" in ln for ln in lines)


@pytest.mark.parametrize("argv, message", [
    (["--model", "gpt3"], "--model 'gpt3'"),
    (["--layers", "2"], "needs all of --layers"),
    (["--dtypes", "fp16"], "--dtypes 'fp16'"),
    (["--shapes", "8x"], "--shapes '8x'"),
    (["--text", "/nonexistent/corpus.txt"], "no such file"),
])
def test_vs_hf_refuses_bad_flags_in_one_line(argv, message, capsys):
    import vs_hf

    with pytest.raises(SystemExit) as exc:
        vs_hf.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_vs_hf_overrides_make_the_gpt2_side_exportable_as_a_tied_gpt2():
    import vs_hf

    args = vs_hf.parse_args(["--model", "gpt2"])
    o = vs_hf.model_overrides("gpt2", vs_hf.SHAPES["4x"], args)
    for item in ("model.decoder_learned_pos=true", "model.activation_fn=relu", "model.no_scale_embedding=true",
                 "model.share_decoder_input_output_embed=true", "model.decoder_ffn_embed_dim=2048"):
        assert item in o
    llama = vs_hf.model_overrides("llama", vs_hf.SHAPES["4x"], args)
    assert llama[0] == "model=transformer_lm_llama_tiny" and "model.decoder_kv_attention_heads=4" in llama


def test_vs_hf_llama_keeps_its_default_shape_unless_told():
    import vs_hf_llama

    argv = vs_hf_llama.llama_argv([])
    assert argv[:2] == ["--model", "llama"] and "--dim" in argv and argv[argv.index("--dim") + 1] == "256"
    args = __import__("vs_hf").parse_args(vs_hf_llama.llama_argv(["--batch=8"]))
    assert (args.model, args.dim, args.ffn, args.kv_heads, args.batch) == ("llama", 256, 688, 2, 8)
    args = __import__("vs_hf").parse_args(vs_hf_llama.llama_argv(["--shapes", "4x"]))
    assert args.layers is None and args.shapes == "4x" and args.batch == 4
