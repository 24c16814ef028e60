"""--help of both doors and docs/components.md list every component, from the dataclasses."""
import dataclasses
import os

import pytest

from conftest import ROOT, run_forked


def _registries():
    from fairseq.dataclass.initialize import import_components
    from fairseq.registry import ALL_REGISTRIES

    import_components()
    return ALL_REGISTRIES


def test_docs_components_md_is_up_to_date():
    from fairseq.dataclass.help import markdown_reference

    current = (ROOT / "docs" / "components.md").read_text(encoding="utf-8")
    assert current == markdown_reference(), "run: python scripts/gen_component_docs.py"


@pytest.mark.slow
@pytest.mark.parametrize("module, style", [("fairseq_cli.train_hydra", "hydra"), ("fairseq_cli.train", "legacy")])
def test_help_lists_every_member_and_field(module, style):
    out = run_forked("module", module, ["--help"], ROOT, env=dict(os.environ), base_timeout=120)
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


def test_evaluation_commands_show_only_what_applies_to_them():
    from fairseq import options

    def flags(parser):
        return {s for a in parser._actions for s in a.option_strings}

    eval_lm = flags(options.get_eval_lm_parser())
    generate = flags(options.get_generation_parser())
    validate = flags(options.get_validation_parser())
    train = flags(options.get_training_parser())
    for training_only in ("--tensorboard-logdir", "--fp16-init-scale", "--validate-interval",
                          "--train-subset", "--disable-validation"):
        assert training_only in train
        assert training_only not in eval_lm | generate | validate
    assert "--valid-subset" in validate and "--valid-subset" not in eval_lm | generate
    assert {"--path", "--context-window", "--gen-subset", "--max-sentences", "--cpu"} <= eval_lm
    help_text = options.get_eval_lm_parser().format_help()
    assert "train on the CPU" not in help_text and "run on the CPU" in help_text
