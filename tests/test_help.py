"""--help of both doors and docs/components.md list every component, from the dataclasses."""
import dataclasses
import subprocess
import sys

import pytest

from conftest import ROOT


def _registries():
    from fairseq.dataclass.initialize import import_components
    from fairseq.registry import ALL_REGISTRIES

    import_components()
    return ALL_REGISTRIES


def test_docs_components_md_is_up_to_date():
    from fairseq.dataclass.help import markdown_reference

    current = (ROOT / "docs" / "components.md").read_text(encoding="utf-8")
    assert current == markdown_reference(), "run: python scripts/gen_component_docs.py"


@pytest.mark.parametrize("module, style", [("fairseq_cli.train_hydra", "hydra"), ("fairseq_cli.train", "legacy")])
def test_help_lists_every_member_and_field(module, style):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for group, registry in _registries().items():
        if group not in ("task", "model", "criterion", "optimizer", "lr_scheduler"):
            continue
        for name in registry.choices():
            assert name in text, (group, name)
            entry = registry.get(name)
            if entry.base is not None or entry.dataclass is None:
                continue
            for f in dataclasses.fields(entry.dataclass):
                if f.name.startswith("_"):
                    continue
                key = f"{group}.{f.name}=" if style == "hydra" else "--" + f.name.replace("_", "-")
                assert key in text, (name, key)
                if f.metadata.get("help"):
                    assert f.metadata["help"] in text, (name, f.name)
