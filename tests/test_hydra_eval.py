"""fairseq-hydra-eval-lm / -validate / -generate / -interactive: the evaluation commands on a
composed config give what the legacy commands give."""
import subprocess
import sys

import pytest

from conftest import ROOT, scaled_timeout
from fairseq_cli import eval_lm, generate, hydra_eval, interactive


def _lines(text: str, kinds=("S-", "T-", "H-", "D-", "P-")):
    return [line for line in text.splitlines() if line[:2] in kinds]


def test_hydra_eval_lm_equals_legacy(tiny_checkpoint, data_bin):
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    hydra = hydra_eval.eval_lm_main([f"common_eval.path={path}", f"task.data={data_bin}",
                                     "task.tokens_per_sample=32", "eval_lm.context_window=16",
                                     "dataset.max_tokens=1024"])
    legacy = eval_lm.main([data_bin, "--path", path, "--tokens-per-sample", "32",
                           "--context-window", "16", "--max-tokens", "1024"])
    assert hydra["loss"] == pytest.approx(legacy["loss"]) and hydra["ntokens"] == legacy["ntokens"]


def test_hydra_validate_scores_the_valid_subset(tiny_checkpoint, data_bin):
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    stats = hydra_eval.validate_main([f"common_eval.path={path}", f"task.data={data_bin}",
                                      "dataset.valid_subset=valid", "dataset.max_tokens=1024"])
    assert list(stats) == ["valid"] and stats["valid"]["loss"] > 0


def test_hydra_generate_prints_the_legacy_lines(tiny_checkpoint, data_bin, capsys):
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    hydra_eval.generate_main([f"common_eval.path={path}", f"task.data={data_bin}", "generation.beam=3",
                              "generation.max_len_b=5", "dataset.gen_subset=valid",
                              "task.sample_break_mode=eos", "task.tokens_per_sample=128",
                              "dataset.batch_size=4", "dataset.skip_invalid_size_inputs_valid_test=true"])
    hydra = _lines(capsys.readouterr().out)
    generate.main([data_bin, "--path", path, "--beam", "3", "--max-len-b", "5", "--gen-subset", "valid",
                   "--sample-break-mode", "eos", "--tokens-per-sample", "128", "--batch-size", "4",
                   "--skip-invalid-size-inputs-valid-test"])
    legacy = _lines(capsys.readouterr().out)
    assert hydra and hydra == legacy


def test_hydra_interactive_reads_prompts_and_takes_generation_settings(tiny_checkpoint, data_bin,
                                                                       tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the function returns\nthe value\n", encoding="utf-8")
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    hydra_eval.interactive_main([f"common_eval.path={path}", f"task.data={data_bin}",
                                 f"interactive.input={prompts}", "generation.beam=2",
                                 "generation.nbest=2", "generation.max_len_b=3"])
    hydra = _lines(capsys.readouterr().out)
    interactive.main([data_bin, "--path", path, "--input", str(prompts), "--beam", "2", "--nbest", "2",
                      "--max-len-b", "3"])
    legacy = _lines(capsys.readouterr().out)
    assert hydra == legacy and hydra[0] == "S-0\tthe function returns"
    assert len(_lines("\n".join(hydra), ("H-",))) > 2  # nbest=2 reached the generator


def test_hydra_eval_commands_fail_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "fairseq_cli" / "hydra_eval.py"), "generate",
                           "generation.bem=3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "generation.beam" in proc.stderr.strip().splitlines()[-1]
    with pytest.raises(SystemExit) as e:
        hydra_eval.interactive_main(["generation.beam=2"])
    assert e.value.code == 2


PLUGIN_MODEL = '''
from fairseq.models import register_model
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

@register_model("eval_plugin_lm", dataclass=TransformerLanguageModelConfig)
class EvalPluginLM(TransformerLanguageModel):
    pass
'''


@pytest.mark.slow
def test_hydra_eval_imports_a_user_dir_set_only_in_yaml(tiny_checkpoint, data_bin, tmp_path, capsys):
    """A checkpoint of a plugin model evaluates when the plugin's common.user_dir is set in the
    user's YAML only (as fairseq-hydra-train reads it), and not without it."""
    import os

    import torch

    from fairseq.checkpoint_utils import load_checkpoint_to_cpu, torch_persistent_save

    plugin = tmp_path / "eval_plugins"
    plugin.mkdir()
    (plugin / "__init__.py").write_text(PLUGIN_MODEL)
    state = load_checkpoint_to_cpu(str(tiny_checkpoint / "checkpoint_last.pt"))
    state["cfg"]["model"]["_name"] = "eval_plugin_lm"  # the same weights, held by the plugin's model
    torch_persistent_save(state, str(tmp_path / "plugin.pt"))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "exp.yaml").write_text("common:\n  user_dir: eval_plugins\n")
    base = [f"common_eval.path={tmp_path / 'plugin.pt'}", f"task.data={data_bin}", "task.tokens_per_sample=32",
            "dataset.max_tokens=1024"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def hydra_eval_lm(*args):
        return subprocess.run([sys.executable, str(ROOT / "fairseq_cli" / "hydra_eval.py"), "eval-lm", *args],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=scaled_timeout(180))

    proc = hydra_eval_lm("--config-dir", "conf", "--config-name", "exp", "--allow-config-code", *base)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Loss (base 2)" in proc.stdout + proc.stderr
    # without the YAML the plugin is not imported: one line naming the missing plugin (in this
    # process, which never imports the plugin)
    with pytest.raises(SystemExit) as e:
        hydra_eval.eval_lm_main(base)
    err = capsys.readouterr().err
    assert e.value.code != 0 and "Traceback" not in err and "eval_plugin_lm" in err.strip().splitlines()[-1]
    assert torch.load(tmp_path / "plugin.pt", weights_only=True)["cfg"]["model"]["_name"] == "eval_plugin_lm"


@pytest.mark.slow
def test_a_value_given_for_one_group_reaches_only_that_group(data_bin, tmp_path):
    """The Hydra door's values win over the checkpoint's by their full key: task.max_target_positions
    limits the task's samples and leaves the model's learned positions alone (flattened to a bare
    name it reached the model too, which then no longer fit its own weights)."""
    from fairseq_cli import train

    train.cli_main([data_bin, "--task", "language_modeling", "--arch", "transformer_lm", "--decoder-layers", "1",
                    "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
                    "--decoder-learned-pos", "--tokens-per-sample", "32", "--max-tokens", "512",
                    "--optimizer", "adam", "--lr", "0.005", "--max-update", "3", "--save-dir", str(tmp_path),
                    "--no-epoch-checkpoints", "--log-format", "none"])
    base = [f"common_eval.path={tmp_path / 'checkpoint_last.pt'}", f"task.data={data_bin}",
            "dataset.gen_subset=valid", "dataset.num_workers=0"]
    plain = hydra_eval.eval_lm_main(base)
    limited = hydra_eval.eval_lm_main(base + ["task.max_target_positions=64"])
    assert limited["loss"] == plain["loss"] and limited["ntokens"] == plain["ntokens"]
