"""The shape probe of a checkpoint's config (built on the ``meta`` device before the real model)
must not pull in ``torch._dynamo``: meta ops that PyTorch runs through Python decompositions
import it on first use, which added 1-2.6 s to the start of every evaluation command."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys, torch
sys.path.insert(0, "tests")
from conftest import tiny_task
from fairseq.checkpoint.loading import _NoRandomInit
from fairseq.dataclass.compose import compose_config
from fairseq.models import build_model
for arch in ("transformer_lm", "transformer_lm_llama_tiny", "transformer_lm_gpt2_tiny"):
    cfg = compose_config([f"model={arch}", "task=language_modeling"])
    with torch.device("meta"), _NoRandomInit():
        model = build_model(cfg.model, tiny_task(100))
    assert all(p.is_meta for p in model.parameters()), arch
    print(arch, "torch._dynamo" in sys.modules)
"""


def test_the_meta_probe_imports_no_dynamo_and_allocates_no_parameters():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert [line.split()[-1] for line in lines if line] == ["False"] * 3, out.stdout


def test_random_init_runs_as_usual_outside_the_probe():
    import torch

    from fairseq.checkpoint.loading import _NoRandomInit

    with torch.device("meta"), _NoRandomInit():
        torch.nn.Embedding(10, 4)
    real = torch.nn.Embedding(10, 4)
    assert not real.weight.is_meta and float(real.weight.detach().std()) > 0
    assert torch.arange(3).device.type == "cpu"
