"""The notebook door: docs/notebook.ipynb runs on a real Jupyter kernel and trains a model.

The kernel is started from a kernel spec written into a temporary JUPYTER_PATH that runs this
interpreter (``sys.executable -m ipykernel_launcher``), so the test needs no ``ipykernel install``
and always runs the notebook against the installed package.
"""
import base64
import json
import math
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient
from omegaconf import OmegaConf

from conftest import ROOT, scaled_timeout

NOTEBOOK = ROOT / "docs" / "notebook.ipynb"
KERNEL = "fairseq-notebook-test"

# appended to the notebook: reports its variables as one JSON line
REPORT = """\
import json
print("REPORT " + json.dumps({"valid_curve": valid_curve, "train_curve": train_curve,
                              "vocab_size": vocab_size, "ppl": ppl, "prompt": prompt,
                              "samples": samples, "beam": [lm.decode(h["tokens"]) for h in hypos],
                              "checkpoints": sorted(os.listdir(save_dir)), "max_updates": MAX_UPDATES}))"""


def load_generator():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_notebook
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return make_notebook


def test_notebook_is_generated_from_the_script_and_has_no_outputs():
    make_notebook = load_generator()
    assert NOTEBOOK.read_text(encoding="utf-8") == nbformat.writes(make_notebook.build()) + "\n", \
        "docs/notebook.ipynb is out of date: run python scripts/make_notebook.py"
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_demo_corpus_can_be_cut_to_a_few_topics(tmp_path):
    from fairseq.data.demo_corpus import write_demo_corpus

    small = write_demo_corpus(str(tmp_path / "small"), max_topics=3)
    full = write_demo_corpus(str(tmp_path / "full"))
    assert 0 < small["train"] < full["train"]
    lines = (tmp_path / "small" / "train.txt").read_text(encoding="utf-8").splitlines()
    assert sum(len(line.split()) for line in lines) == small["train"]
    # the first topics of the full corpus are the small corpus, line for line
    full_lines = (tmp_path / "full" / "train.txt").read_text(encoding="utf-8").splitlines()
    assert full_lines[:len(lines)] == lines
    with pytest.raises(ValueError, match="max_topics"):
        write_demo_corpus(str(tmp_path / "none"), max_topics=0)


@pytest.fixture
def kernel_spec(tmp_path, monkeypatch):
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fairseq test", "language": "python",
    }), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # one intra-op thread: as fast as two for this small model, and no spinning threads fighting
    # over the cores when other jobs share the machine
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return KERNEL


@pytest.mark.slow
def test_notebook_trains_saves_reloads_and_plots(tmp_path, kernel_spec):
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    params = nb.cells[1]
    assert "WORK_DIR = None" in params.source, "the first code cell holds the parameters"
    work = tmp_path / "work"
    params.source = params.source.replace("WORK_DIR = None", f"WORK_DIR = {str(work)!r}")
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))

    start = time.perf_counter()
    NotebookClient(nb, timeout=int(scaled_timeout(300)), kernel_name=kernel_spec,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.perf_counter() - start
    print(f"notebook executed in {elapsed:.1f} s")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    report = next(line for o in nb.cells[-1].outputs if o.output_type == "stream"
                  for line in o.text.splitlines() if line.startswith("REPORT "))
    r = json.loads(report[len("REPORT "):])

    # training: every update logged, validation at the start and at the end, and it went down
    assert [u for u, _ in r["train_curve"]] == list(range(1, r["max_updates"] + 1))
    valid = [loss for _, loss in r["valid_curve"]]
    assert r["valid_curve"][0][0] == 0 and r["valid_curve"][-1][0] == r["max_updates"]
    assert valid[-1] < valid[0] - 2.0, valid
    assert valid[0] == pytest.approx(math.log2(r["vocab_size"]), abs=2.0)  # untrained: near uniform

    # a normal checkpoint, reloaded by the hub interface: finite, far better than uniform
    assert {"checkpoint_last.pt", "checkpoint_best.pt"} <= set(r["checkpoints"])
    assert math.isfinite(r["ppl"]) and r["ppl"] < r["vocab_size"] / 4, r["ppl"]
    assert all(s.startswith(r["prompt"]) and len(s) > len(r["prompt"]) for s in r["samples"])
    assert all(b.startswith(r["prompt"]) for b in r["beam"])

    # the loss curves: a PNG shown inline and one saved beside the checkpoints
    pngs = [o.data["image/png"] for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(b"\x89PNG")
    assert (work / "loss.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_compose_config_can_check_overrides_as_the_hydra_door_does():
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import ConfigError

    cfg = compose_config(["optimizer.adam_betas='(0.9, 0.98)'", "model.decoder_layers=2"], check=True)
    assert list(cfg.optimizer.adam_betas) == [0.9, 0.98] and cfg.model.decoder_layers == 2
    assert OmegaConf.is_missing(cfg.task, "data")  # required values may stay unset in a notebook
    with pytest.raises(ConfigError, match="did you mean 'model.decoder_layers'"):
        compose_config(["model.decoder_layer=2"], check=True)
    with pytest.raises(ConfigError, match="clip_norm"):
        compose_config(["optimization.clip_norm=-1"], check=True)
    # unchecked, the same typo is Hydra's own error
    with pytest.raises(Exception) as unchecked:
        compose_config(["model.decoder_layer=2"])
    assert not isinstance(unchecked.value, ConfigError)
