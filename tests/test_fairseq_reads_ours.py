"""What our checkpoint writer promises fairseq 0.12.2's readers (CI has no fairseq: the contract).

fairseq 0.12.2 reads a checkpoint through ``_upgrade_state_dict`` (it needs ``optimizer_history``
and ``extra_state["train_iterator"]``), merges ``cfg.task`` (and, when it trains, the criterion,
optimizer and scheduler nodes) into its dataclasses in struct mode, reads some keys of the
generic nodes (``generation.print_alignment``), and loads the weights in its own key layout
(separate ``q_proj``/``k_proj``/``v_proj``). ``scripts/check_fairseq_reads_ours.py`` checks the
same with a real fairseq 0.12.2; these tests check the file against the table of fairseq's keys
(``fairseq/checkpoint/fairseq_keys.py``), and that our own reader gets back what it always did.
"""
import dataclasses
import json
from typing import Any, Optional

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from fairseq.checkpoint.fairseq_keys import COMPONENTS, GENERIC, GENERIC_DEFAULTS
from fairseq.checkpoint.fairseq_layout import OWN_CFG_KEY, restore_own_layout, split_config

# Our config fields that fairseq 0.12.2 does not have (docs/design.md, "What fairseq 0.12.2 can
# read"): per component dataclass, and per generic node.
OUR_ADDITIONS = {
    ("model", "transformer_lm"): {"decoder_ffn_gated", "decoder_kv_attention_heads", "decoder_norm",
                                  "no_decoder_bias", "norm_eps", "rope", "rope_theta"},
    ("criterion", "cross_entropy"): {"fused_output_loss"},
    ("optimizer", "adam"): {"amsgrad"},
    ("task", "language_modeling"): {"train_subset"},
    ("checkpoint", None): {"save_consolidated", "save_format", "save_on_interrupt"},
    ("common", None): {"compile", "cpu_threads", "log_seconds", "print_config"},
}


def _raw(save_dir):
    return torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=True)


def _fairseq_node(keys) -> Any:
    """A struct-mode config with exactly ``keys`` (any values), as fairseq's dataclass merge sees it."""
    fields = [(k, Optional[Any], dataclasses.field(default=None)) for k in sorted(keys)]
    return OmegaConf.structured(dataclasses.make_dataclass("FairseqNode", fields))


def test_our_fields_beyond_fairseqs_are_exactly_our_documented_additions():
    from fairseq.dataclass.json_io import node_dataclass

    found = {}
    for group, by_name in COMPONENTS.items():
        for name, known in by_name.items():
            extra = {f.name for f in dataclasses.fields(node_dataclass(group, name))} - known
            if extra:
                found[(group, "transformer_lm" if group == "model" else name)] = extra
    for group, known in GENERIC.items():
        extra = {f.name for f in dataclasses.fields(node_dataclass(group, None))} - known
        if extra:
            found[(group, None)] = extra
        # the generic keys fairseq has and we lack are the ones written with fairseq's defaults
        ours = {f.name for f in dataclasses.fields(node_dataclass(group, None))}
        assert set(GENERIC_DEFAULTS.get(group, {})) == known - ours - {"_name"}, group
    assert found == OUR_ADDITIONS


def test_a_checkpoint_carries_the_entries_fairseqs_loader_reads(tiny_checkpoint):
    raw = _raw(tiny_checkpoint)
    assert "args" in raw and raw["args"] is None
    (last,) = raw["optimizer_history"]
    assert last == {"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                    "lr_scheduler_state": raw["lr_scheduler"], "num_updates": 30}
    assert "optimizer" not in last and "best_loss" not in raw  # else fairseq takes it for a pre-0.6 file
    assert raw["extra_state"]["train_iterator"]["epoch"] >= 1
    assert raw["task_state"] == {}
    # fairseq's weight names, instead of ours (never both: see the size check below)
    model = raw["model"]
    assert not any(".in_proj." in k for k in model)
    assert all(f"decoder.layers.0.self_attn.{n}_proj.weight" in model for n in "qkv")


def test_each_component_node_merges_into_fairseqs_own_keys_in_struct_mode(tiny_checkpoint):
    cfg = _raw(tiny_checkpoint)["cfg"]
    merged = 0
    for group, by_name in COMPONENTS.items():
        node = cfg.get(group)
        if isinstance(node, dict) and node.get("_name") in by_name:
            assert set(node) <= by_name[node["_name"]], group
            OmegaConf.merge(_fairseq_node(by_name[node["_name"]]), node)
            merged += 1
    assert merged == 5  # task, model, criterion, optimizer, lr_scheduler
    for group, keys in GENERIC.items():  # fairseq reads some generic keys: all are there
        assert keys - {"_name"} <= set(cfg[group]), group


def test_a_model_fairseq_lacks_keeps_its_keys_under_a_name_fairseq_refuses(tiny_checkpoint):
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu

    full = load_checkpoint_to_cpu(str(tiny_checkpoint / "checkpoint_last.pt"))["cfg"]
    full["model"].update(rope=True, decoder_norm="rmsnorm")
    stored, own = split_config(full)
    model = stored["model"]
    assert model["rope"] is True and model["decoder_norm"] == "rmsnorm"
    # fairseq drops a model's unknown keys when it loads a checkpoint: the name refuses it
    assert model["_name"] not in COMPONENTS["model"]
    assert "rope=True" in model["_name"] and "decoder_norm=rmsnorm" in model["_name"]
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(_fairseq_node(COMPONENTS["model"]["transformer_lm"]), model)
    state = {"cfg": stored, OWN_CFG_KEY: own}
    restore_own_layout(state)
    assert state["cfg"] == full


def test_our_reader_gets_the_whole_config_and_the_same_model_from_new_and_old_files(tiny_checkpoint, tmp_path):
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu, load_model_ensemble_and_task, torch_persistent_save

    new_path = tiny_checkpoint / "checkpoint_last.pt"
    state = load_checkpoint_to_cpu(str(new_path))
    assert state["cfg"] == json.loads((tiny_checkpoint / "config.json").read_text())  # the run's config
    assert state["cfg"]["model"]["rope"] is False and state["cfg"]["criterion"]["fused_output_loss"] is True
    assert "generation" in state["cfg"] and "print_alignment" not in state["cfg"]["generation"]
    (model,), cfg, _task = load_model_ensemble_and_task([str(new_path)])
    # our weight names again, the very tensors the model holds
    ours = model.state_dict()
    assert state["model"].keys() == ours.keys() and all(torch.equal(state["model"][k], ours[k]) for k in ours)

    # the layout written before these entries existed: our weight names, the full config only
    old = {k: v for k, v in state.items() if k not in ("args", "optimizer_history", "task_state")}
    old["model"] = model.state_dict()
    old_path = tmp_path / "old.pt"
    torch_persistent_save(old, str(old_path))
    assert "in_proj" in " ".join(torch.load(old_path, weights_only=True)["model"])
    (old_model,), old_cfg, _ = load_model_ensemble_and_task([str(old_path)])
    assert old_cfg == cfg
    tokens = torch.tensor([[2, 10, 11, 12, 13]])
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], old_model(tokens)[0])
    # no second copy of any tensor: the new file is the old one plus a few small entries
    assert new_path.stat().st_size - old_path.stat().st_size < 32 * 1024


def test_adaptive_input_weights_carry_the_buffer_fairseqs_strict_load_wants():
    from conftest import tiny_task

    from fairseq.checkpoint.fairseq_layout import fairseq_model_state
    from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

    cfg = TransformerLanguageModelConfig(decoder_layers=1, decoder_embed_dim=16, decoder_input_dim=16,
                                         decoder_output_dim=16, decoder_ffn_embed_dim=32, decoder_attention_heads=2,
                                         adaptive_input=True, adaptive_input_cutoff="20,40",
                                         adaptive_softmax_cutoff="20,40", tie_adaptive_weights=True)
    model = TransformerLanguageModel.build_model(cfg, tiny_task(64)).eval()
    converted = fairseq_model_state(model, model.state_dict())
    assert torch.equal(converted["decoder.embed_tokens._float_tensor"], torch.zeros(1))
    public = model.fairseq_state_dict()  # the model's own method gives the same keys
    assert public.keys() == converted.keys() and torch.equal(public["decoder.embed_tokens._float_tensor"],
                                                             torch.zeros(1))
    assert "decoder.layers.0.self_attn.q_proj.weight" in converted
    copy = TransformerLanguageModel.build_model(cfg, tiny_task(64)).eval()
    copy.load_state_dict(converted)  # our model reads fairseq's layout back
    tokens = torch.tensor([[2, 10, 30, 50]])
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], copy(tokens)[0])
