"""The run config is read as typed attributes.

A checkpoint's config is completed from the schema once, when it is loaded
(``fairseq.dataclass.json_io.config_from_dict``): every declared key is present afterwards, so
code reads ``cfg.model.dropout`` and a misspelt key fails loudly instead of quietly returning a
default. A read with a default (``cfg.get("k", d)``, ``getattr(cfg, "k", d)``, or ``.get("k")``
whose default is None) stays only where the key is truly optional, and says why in a
``# optional:`` comment on its line or the line before: that comment is the only allow-list.
"""
import ast
import dataclasses
import logging
import re
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent
CKPT_0_12 = ROOT / "tests" / "fixtures" / "fairseq_0_12" / "checkpoint_last.pt"

# receivers that hold a run config, a node of it, a legacy Namespace or a foreign model config
CONFIG_RECEIVER = re.compile(r"cfg|config|args|ckpt", re.IGNORECASE)
MARK = "# optional:"


def default_reads(source: str) -> List[Tuple[int, int, str]]:
    """``(first line, last line, code)`` of every read with a default from a config-like object
    in ``source``; the lines span the statement the read is part of (its innermost one)."""
    tree = ast.parse(source)
    statement_of = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.stmt):
            for child in ast.walk(stmt):
                # walk visits outer statements first, so the innermost one is set last
                statement_of[id(child)] = stmt
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and node.args:
            receiver = ast.unparse(func.value)
        elif isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) == 3:
            receiver = ast.unparse(node.args[0])
        else:
            continue
        # registries have a get(name) that raises for an unknown name: not a read with a default
        if CONFIG_RECEIVER.search(receiver) and not receiver.endswith(("REGISTRY", "REGISTRIES")):
            stmt = statement_of.get(id(node), node)
            first = min(stmt.lineno, node.lineno)
            found.append((first, max(stmt.end_lineno or node.lineno, node.lineno), ast.unparse(node)))
    return found


def unmarked_reads(source: str) -> List[Tuple[int, str]]:
    """The reads of :func:`default_reads` with no ``# optional:`` comment on a line of their
    statement or on the line just before it. (A compound statement's lines include its body,
    so a comment there counts only up to the read itself.)"""
    lines = source.splitlines()
    out = []
    for first, last, code in default_reads(source):
        nearby = lines[max(first - 2, 0):last]
        if not any(MARK in line for line in nearby):
            out.append((first, code))
    return out


def package_files() -> List[Path]:
    return sorted(p for top in ("fairseq", "fairseq_cli") for p in (ROOT / top).rglob("*.py"))


def test_every_read_with_a_default_says_why_the_key_is_optional():
    offenders = [f"{path.relative_to(ROOT)}:{line}: {code}"
                 for path in package_files()
                 for line, code in unmarked_reads(path.read_text(encoding="utf-8"))]
    assert not offenders, (
        "read these keys as attributes (the schema declares them and loaded configs are complete), "
        f"or say why the key may be absent with '{MARK} ...' on the line or the line before:\n"
        + "\n".join(offenders))


@pytest.mark.parametrize("code, flagged", [
    ('x = cfg.get("dropout", 0.1)\n', True),
    ('x = cfg.task.get("data")\n', True),
    ('x = getattr(self.cfg, "compile", False)\n', True),
    ('x = getattr(args, "data", None)\n', True),
    ('x = cfg.get("bpe")  # optional: no BPE chosen\n', False),
    ('# optional: the node exists only for language_modeling\nx = cfg.task.get("add_bos_token", False)\n', False),
    ('x = cfg.dropout\n', False),
    ('x = state_dict.get("epoch", 0)\n', False),
    ('x = MODEL_REGISTRY.get(name)\n', False),
    ('x = getattr(cfg, name)\n', False),
])
def test_the_check_sees_default_reads_and_the_comment(code, flagged):
    assert bool(unmarked_reads(code)) is flagged


# -- loaded configs are complete ---------------------------------------------------------------
def assert_complete(cfg: DictConfig) -> None:
    """Every key the schema declares for each node of ``cfg`` is present and typed."""
    from fairseq.dataclass.json_io import node_dataclass

    assert isinstance(cfg, DictConfig)
    for group in cfg.keys():
        node = cfg[group]
        if not isinstance(node, DictConfig):
            continue
        dc_type = node_dataclass(str(group), node.get("_name"))  # optional: a node of no schema is skipped
        if dc_type is None:
            continue
        assert OmegaConf.get_type(node) is dc_type, f"{group} is not typed as {dc_type.__name__}"
        keys = set(node.keys())
        for f in dataclasses.fields(dc_type):
            assert f.name in keys, f"{group}.{f.name} missing"
            if not OmegaConf.is_missing(node, f.name):
                # a plain attribute read works for every declared key (no default needed)
                getattr(node, f.name)


def test_a_fairseq_0_12_checkpoint_config_loads_complete(caplog):
    from fairseq.checkpoint_utils import config_from_checkpoint, load_checkpoint_to_cpu

    with caplog.at_level(logging.WARNING):
        state = load_checkpoint_to_cpu(str(CKPT_0_12))
        cfg = config_from_checkpoint(state, str(CKPT_0_12))
    assert_complete(cfg)
    # fairseq 0.12 writes its own keys, not ours: ours come from the schema's defaults, typed
    assert "fused_output_loss" not in state["cfg"]["criterion"]
    assert cfg.criterion.fused_output_loss is True
    assert "amsgrad" not in state["cfg"]["optimizer"]
    assert cfg.optimizer.amsgrad is False
    # and what fairseq wrote is kept, in its type
    assert cfg.model.decoder_embed_dim == 32 and cfg.task.tokens_per_sample == 32
    assert list(cfg.optimizer.adam_betas) == [0.9, 0.98]


def test_an_older_checkpoint_of_ours_missing_newer_keys_loads_complete(tmp_path):
    from fairseq.checkpoint_utils import config_from_checkpoint, plain_config
    from fairseq.dataclass.compose import compose_config

    cfg = compose_config(["task=language_modeling", "model=transformer_lm", "criterion=cross_entropy",
                          "optimizer=adam", "lr_scheduler=inverse_sqrt"])
    saved = plain_config(cfg)
    # keys added after a checkpoint was written: absent from its dict
    for group, key in (("criterion", "fused_output_loss"), ("optimizer", "amsgrad"),
                       ("model", "scale_attn"), ("model", "offload_activations"),
                       ("checkpoint", "save_on_interrupt"), ("common", "compile")):
        del saved[group][key]
    del saved["eval_lm"]  # a whole node a version did not have
    state = {"cfg": saved, "model": {}}
    loaded = config_from_checkpoint(state, "old.pt")
    assert_complete(loaded)
    assert loaded.criterion.fused_output_loss is True and loaded.optimizer.amsgrad is False
    assert loaded.model.scale_attn is False and loaded.model.offload_activations is False
    assert loaded.checkpoint.save_on_interrupt is False and loaded.common.compile is False
    assert loaded.eval_lm.context_window == 0
    with pytest.raises(Exception):
        loaded.model.scale_atn  # a misspelt key fails instead of reading a default


def test_the_fairseq_fixture_loads_a_model_that_reads_attributes():
    """The model built from the fairseq 0.12 config reads the newer keys as attributes."""
    from fairseq.checkpoint_utils import load_model_for_inference

    model, _, cfg = load_model_for_inference(str(CKPT_0_12), data=str(CKPT_0_12.parent / "data-bin"))
    assert cfg.model.scale_attn is False
    assert not model.decoder.offload_activations
    assert isinstance(next(model.parameters()), torch.Tensor)
