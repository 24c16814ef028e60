"""Packaging: every package is listed in setup.cfg and the config tree ships with it."""
import configparser

from setuptools import find_packages

from conftest import ROOT


def listed_packages():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return {p.strip() for p in parser["options"]["packages"].split() if p.strip()}


def test_setup_cfg_lists_every_package():
    found = set(find_packages(str(ROOT), include=["fairseq", "fairseq.*", "fairseq_cli"]))
    assert found <= listed_packages(), sorted(found - listed_packages())


def test_config_tree_has_one_yaml_per_default_and_each_only_extends_its_schema():
    from omegaconf import OmegaConf

    tree = ROOT / "config"
    defaults = OmegaConf.to_container(OmegaConf.load(tree / "config.yaml"))["defaults"]
    choices = {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}
    assert choices == {"task": "language_modeling", "model": "transformer_lm",
                       "criterion": "cross_entropy", "optimizer": "adam", "lr_scheduler": "inverse_sqrt",
                       "bpe": None, "tokenizer": None}  # optional groups: none chosen
    for group_file in tree.glob("*/*.yaml"):
        group, name = group_file.parent.name, group_file.stem
        node = OmegaConf.to_container(OmegaConf.load(group_file))
        # a shipped YAML never re-declares a dataclass field: it only extends the schema
        assert node == {"defaults": [f"/schema/{group}/{name}@_here_", "_self_"]}, group_file
    # fairseq 0.12's layout, G/BASE/PRESET.yaml: each extends the preset's schema
    for preset_file in tree.glob("*/*/*.yaml"):
        group, name = preset_file.parent.parent.name, preset_file.stem
        node = OmegaConf.to_container(OmegaConf.load(preset_file))
        assert node == {"defaults": [f"/schema/{group}/{name}@_here_", "_self_"]}, preset_file


def test_preset_config_files_are_up_to_date():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_config_presets", ROOT / "scripts" / "gen_config_presets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.preset_files()
    shipped = {p.relative_to(ROOT / "config").as_posix(): p.read_text(encoding="utf-8")
               for p in (ROOT / "config").glob("*/*/*.yaml")}
    assert shipped == expected, "run: python scripts/gen_config_presets.py"
    assert "model/transformer_lm/transformer_lm_gpt.yaml" in shipped


def test_setup_cfg_ships_the_nested_config_files():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    patterns = parser["options.package_data"]["fairseq.config"].replace(",", " ").split()
    assert "*/*/*.yaml" in patterns
