"""The registry: names, presets, and presets losing to explicit values in both doors."""
import pytest
from omegaconf import OmegaConf


def test_unknown_name_suggests_the_closest():
    from fairseq.models import MODEL_REGISTRY
    from fairseq.registry import UnknownChoiceError

    with pytest.raises(UnknownChoiceError, match="Did you mean 'transformer_lm_gpt'"):
        MODEL_REGISTRY.get("transformer_lm_gtp")


def test_duplicate_registration_is_refused():
    from fairseq.criterions import register_criterion
    from fairseq.criterions.fairseq_criterion import FairseqCriterion

    with pytest.raises(ValueError, match="duplicate"):
        register_criterion("cross_entropy")(type("Again", (FairseqCriterion,), {}))


def test_preset_with_unknown_field_is_refused():
    from fairseq.models import register_model_architecture

    with pytest.raises(ValueError, match="unknown fields"):
        register_model_architecture("transformer_lm", "bad_preset", {"decoder_layerz": 3})


def test_explicit_value_beats_the_preset_in_both_doors(data_bin):
    from fairseq import options
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import check_overrides
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models import MODEL_REGISTRY

    preset = MODEL_REGISTRY.get("transformer_lm_gpt").preset
    hydra_cfg = compose_config(check_overrides([f"task.data={data_bin}", "model=transformer_lm_gpt",
                                                "model.decoder_layers=2"]))
    argv = [data_bin, "--arch", "transformer_lm_gpt", "--decoder-layers", "2"]
    legacy_cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(input_args=argv), argv))
    for cfg in (hydra_cfg, legacy_cfg):
        model = cfg.model
        assert model._name == "transformer_lm_gpt"
        assert model.decoder_layers == 2
        for key, value in preset.items():
            if key != "decoder_layers":
                assert model[key] == value, key
    assert OmegaConf.to_container(hydra_cfg.model) == OmegaConf.to_container(legacy_cfg.model)


def test_preset_builds_the_base_model_class(data_bin):
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.models.transformer_lm import TransformerLanguageModel

    cfg = compose_config([f"task.data={data_bin}", "model=transformer_lm_gpt", "model.decoder_layers=1",
                          "model.decoder_embed_dim=24", "model.decoder_input_dim=24",
                          "model.decoder_output_dim=24", "model.decoder_ffn_embed_dim=48",
                          "model.decoder_attention_heads=2"])
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    assert isinstance(model, TransformerLanguageModel)
    assert len(model.decoder.layers) == 1


PLUGIN = '''
from dataclasses import dataclass, field
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig

@dataclass
class SmoothConfig(CrossEntropyCriterionConfig):
    smoothing_strength: float = field(default=0.1, metadata={"help": "how much to smooth"})

@register_criterion("my_smooth_ce", dataclass=SmoothConfig)
class SmoothCE(CrossEntropyCriterion):
    pass
'''


@pytest.mark.slow
def test_user_dir_plugins_are_visible_to_both_doors(data_bin, tmp_path):
    import os

    from conftest import ROOT, run_forked

    plugin = tmp_path / "team_plugins"
    plugin.mkdir()
    (plugin / "__init__.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(*args):
        return run_forked("module", args[0], args[1:], tmp_path, env=env, base_timeout=120)

    hydra = run("fairseq_cli.train_hydra", f"common.user_dir={plugin}", f"task.data={data_bin}",
                "criterion=my_smooth_ce", "criterion.smoothing_strength=0.3", "--cfg", "job")
    assert hydra.returncode == 0, hydra.stderr
    assert "_name: my_smooth_ce" in hydra.stdout and "smoothing_strength: 0.3" in hydra.stdout
    legacy = run("fairseq_cli.train", data_bin, "--user-dir", str(plugin), "--criterion", "my_smooth_ce",
                 "--help")
    assert legacy.returncode == 0 and "--smoothing-strength" in legacy.stdout
    assert "how much to smooth" in legacy.stdout
