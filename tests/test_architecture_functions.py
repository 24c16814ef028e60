"""fairseq 0.12's architecture functions: ``@register_model_architecture`` over a function that
fills ``args`` gives a preset, the same in both doors, beneath explicit values; fairseq's named
functions (``base_lm_architecture``) fill what a namespace lacks."""
from argparse import Namespace

import pytest

from conftest import registrations_forgotten, write_plugin

PLUGIN = '''
from fairseq.models import register_model_architecture
from fairseq.models.transformer_lm import base_lm_architecture


@register_model_architecture("transformer_lm", "fn_tiny_lm")
def fn_tiny_lm(args):
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 32)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", args.decoder_embed_dim * 2)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 2)
    base_lm_architecture(args)


@register_model_architecture("transformer_lm", "fn_follows")
def fn_follows(args):
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 96)
    args.decoder_input_dim = getattr(args, "decoder_input_dim", args.decoder_embed_dim)
    args.decoder_output_dim = getattr(args, "decoder_output_dim", args.decoder_embed_dim)


@register_model_architecture("transformer_lm", "fn_tiny_lm_wide")
def fn_tiny_lm_wide(args):
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 48)
    fn_tiny_lm(args)
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """One plugin directory for the module (a plugin is imported under its directory's name);
    its architectures are removed afterwards."""
    with registrations_forgotten():
        yield write_plugin(tmp_path_factory.mktemp("fn_arch"), "fn_arch_plugin", PLUGIN)


def _model_cfg(door, data_bin, plugin, arch, *explicit):
    from fairseq import options
    from fairseq.dataclass.compose import import_plugins_of_overrides
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    if door == "legacy":
        argv = [data_bin, "--user-dir", plugin, "--arch", arch,
                *[w for key, value in explicit for w in (f"--{key.replace('_', '-')}", str(value))]]
        parser = options.get_training_parser(input_args=argv)  # imports --user-dir, as fairseq's does
        return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv)).model
    overrides = [f"task.data={data_bin}", f"common.user_dir={plugin}", f"model={arch}",
                 *[f"model.{key}={value}" for key, value in explicit]]
    import_plugins_of_overrides(overrides)
    return compose_config(overrides, check=True).model


@pytest.mark.parametrize("door", ["legacy", "hydra"])
def test_an_architecture_function_is_a_preset_beneath_explicit_values(plugin, data_bin, door):
    from fairseq.models import MODEL_REGISTRY

    cfg = _model_cfg(door, data_bin, plugin, "fn_tiny_lm")
    assert (cfg.decoder_layers, cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim) == (2, 32, 64)
    assert cfg.decoder_input_dim == cfg.decoder_output_dim == 32  # they follow the embedding dim
    # what base_lm_architecture filled in equals the model's defaults and is not in the preset
    assert MODEL_REGISTRY.get("fn_tiny_lm").preset == {
        "decoder_layers": 2, "decoder_embed_dim": 32, "decoder_ffn_embed_dim": 64, "decoder_attention_heads": 2}
    explicit = _model_cfg(door, data_bin, plugin, "fn_tiny_lm", ("decoder_layers", 3))
    assert (explicit.decoder_layers, explicit.decoder_embed_dim) == (3, 32)
    # the decorator returns the function: another architecture function builds on it
    wide = _model_cfg(door, data_bin, plugin, "fn_tiny_lm_wide")
    assert (wide.decoder_layers, wide.decoder_embed_dim, wide.decoder_ffn_embed_dim) == (2, 48, 96)


def test_a_plugin_architecture_function_trains(plugin, data_bin, tmp_path):
    import torch

    from fairseq_cli.train import cli_main

    cli_main([data_bin, "--user-dir", plugin, "--arch", "fn_tiny_lm", "--optimizer", "adam", "--lr", "0.001",
              "--max-tokens", "256", "--tokens-per-sample", "32", "--max-update", "1", "--num-workers", "0",
              "--save-dir", str(tmp_path / "ck"), "--disable-validation"])
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True, map_location="cpu")
    assert state["cfg"]["model"]["_name"] == "fn_tiny_lm" and state["cfg"]["model"]["decoder_layers"] == 2
    assert state["model"]["decoder.layers.1.fc1.weight"].shape == (64, 32)


def test_a_function_reading_a_field_it_did_not_set_is_one_line_and_not_registered():
    from fairseq.errors import ConfigError
    from fairseq.models import MODEL_REGISTRY, register_model_architecture

    with registrations_forgotten():
        with pytest.raises(ConfigError, match=r"'reads_first' reads args.decoder_embed_dim before setting it.*"
                                              r"getattr\(args, 'decoder_embed_dim', DEFAULT\)"):
            @register_model_architecture("transformer_lm", "reads_first")
            def reads_first(args):
                args.decoder_ffn_embed_dim = args.decoder_embed_dim * 4
        assert "reads_first" not in MODEL_REGISTRY
        with pytest.raises(ValueError, match=r"unknown fields \['decoder_layerz'\]"):
            @register_model_architecture("transformer_lm", "misspelt")
            def misspelt(args):
                args.decoder_layerz = 3
        assert "misspelt" not in MODEL_REGISTRY
        with pytest.raises(ConfigError, match="use one form"):
            register_model_architecture("transformer_lm", "both_forms", {"decoder_layers": 2})(lambda args: None)


def test_fairseqs_named_functions_fill_only_what_a_namespace_lacks():
    from fairseq.models.transformer_lm import TRANSFORMER_LM_GPT, base_lm_architecture, transformer_lm_gpt

    args = Namespace(decoder_layers=5, dropout=None)
    base_lm_architecture(args)
    assert args.decoder_layers == 5 and args.dropout == 0.1 and args.decoder_embed_dim == 512
    assert not hasattr(args, "decoder_input_dim")  # it follows decoder_embed_dim in the config
    gpt = Namespace(decoder_layers=4)
    transformer_lm_gpt(gpt)
    assert gpt.decoder_layers == 4 and gpt.decoder_embed_dim == TRANSFORMER_LM_GPT["decoder_embed_dim"] == 768
    assert gpt.activation_fn == "gelu" and not hasattr(gpt, "decoder_input_dim")



@pytest.mark.parametrize("door", ["legacy", "hydra"])
def test_a_named_architectures_input_and_output_dims_follow_a_changed_embed_dim(plugin, data_bin, door):
    """PITFALLS #18 for presets: ``--arch transformer_lm_gpt --decoder-embed-dim 128`` is 128 wide
    throughout, not a 768-wide embedding with projections; likewise for a function that sets
    the two dims to its embed dim, as fairseq's base_lm_architecture does."""
    from fairseq.models import MODEL_REGISTRY

    gpt = _model_cfg(door, data_bin, plugin, "transformer_lm_gpt", ("decoder_embed_dim", 128),
                     ("decoder_attention_heads", 4))
    assert (gpt.decoder_embed_dim, gpt.decoder_input_dim, gpt.decoder_output_dim) == (128, 128, 128)
    assert _model_cfg(door, data_bin, plugin, "transformer_lm_gpt").decoder_input_dim == 768
    assert "decoder_input_dim" not in MODEL_REGISTRY.get("fn_follows").preset
    follows = _model_cfg(door, data_bin, plugin, "fn_follows", ("decoder_embed_dim", 64))
    assert (follows.decoder_input_dim, follows.decoder_output_dim) == (64, 64)


def test_every_fairseq_transformer_lm_function_is_importable_and_gives_its_preset():
    from fairseq.models import transformer_lm

    fairseq_names = ["transformer_lm_big", "transformer_lm_baevski_wiki103", "transformer_lm_baevski_gbw",
                     "transformer_lm_gpt", "transformer_lm_gpt2_small", "transformer_lm_gpt2_tiny",
                     "transformer_lm_gpt2_medium", "transformer_lm_gpt2_big", "transformer_lm_gpt2_big_wide",
                     "transformer_lm_gpt2_bigger", "transformer_lm_gpt3_small", "transformer_lm_gpt3_medium",
                     "transformer_lm_gpt3_large", "transformer_lm_gpt3_xl", "transformer_lm_gpt3_2_7",
                     "transformer_lm_gpt3_6_7", "transformer_lm_gpt3_13", "transformer_lm_gpt3_175"]
    for name in fairseq_names:
        args = Namespace()
        getattr(transformer_lm, name)(args)
        preset = transformer_lm.ARCHITECTURES[name]
        assert {key: getattr(args, key) for key in preset} == preset, name


OLD_API_PLUGIN = '''
from fairseq.models import FairseqLanguageModel, register_model


@register_model("old_api_lm")
class OldApiLM(FairseqLanguageModel):
    @staticmethod
    def add_args(parser):
        parser.add_argument("--old-dim", type=int)
'''


def test_a_model_without_a_config_dataclass_is_one_line_in_both_doors(tmp_path, data_bin, capsys):
    """fairseq's older API (flags from add_args, no dataclass) declares no fields to configure:
    one line naming the fix, where Hydra's "Could not find 'model/old_api_lm'" was a traceback."""
    from conftest import in_process
    from fairseq.dataclass.compose import import_plugins_of_overrides
    from fairseq.dataclass.initialize import compose_config
    from fairseq.errors import ConfigError
    from fairseq_cli import train

    with registrations_forgotten():
        plugin = write_plugin(tmp_path, "old_api_plugin", OLD_API_PLUGIN)
        code, err = in_process(train.cli_main, [data_bin, "--user-dir", plugin, "--arch", "old_api_lm",
                                                "--old-dim", "16", "--optimizer", "adam"], capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert ("model=old_api_lm: OldApiLM is registered without a config dataclass" in err
                and "register_model('old_api_lm', dataclass=...)" in err)
        overrides = [f"task.data={data_bin}", f"common.user_dir={plugin}", "model=old_api_lm"]
        import_plugins_of_overrides(overrides)
        with pytest.raises(ConfigError, match="OldApiLM is registered without a config dataclass"):
            compose_config(overrides)
