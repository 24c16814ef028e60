"""A config file never runs code or writes outside the run's directories unless the command
line says --allow-config-code; a YAML alias bomb is refused before it is expanded."""
import os

import pytest

from conftest import ROOT, run_forked


def hydra_train(args, cwd, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return run_forked("module", "fairseq_cli.train_hydra", args, cwd, env=env, base_timeout=timeout)


def one_line(result, *needles):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def experiment(tmp_path, text, name="exp"):
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / f"{name}.yaml").write_text(text, encoding="utf-8")
    return ["--config-dir", str(conf), "--config-name", name]


CODE_CASES = {
    "callback": """
hydra:
  callbacks:
    pwn:
      _target_: builtins.open
      file: {victim}
      mode: w
""",
    "log file outside the run": """
hydra:
  job_logging:
    handlers:
      file:
        class: logging.FileHandler
        filename: {victim}
        mode: w
""",
    "logging factory": """
hydra:
  job_logging:
    handlers:
      evil:
        (): builtins.open
        file: {victim}
""",
    "logging class": """
hydra:
  job_logging:
    handlers:
      file:
        class: builtins.open
""",
    "launcher": """
hydra:
  launcher:
    _target_: builtins.print
""",
    "target in the job config": """
common:
  plugin:
    _target_: os.system
    command: touch {victim}
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CODE_CASES))
def test_code_in_a_config_file_is_refused_and_nothing_is_written(case, tmp_path, data_bin):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    args = experiment(tmp_path, CODE_CASES[case].format(victim=victim)) + [f"task.data={data_bin}",
                                                                           "optimization.max_update=1"]
    result = hydra_train(args, tmp_path)
    if case == "target in the job config":  # an unknown key of the typed config is refused first
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    elif case == "log file outside the run":  # a path, not code: the path rule's message
        one_line(result, "--allow-config-code", "would write outside the run's own directory")
    else:
        one_line(result, "--allow-config-code", "would run code")
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_the_opt_in_flag_lets_a_trusted_config_through(tmp_path, data_bin):
    victim = tmp_path / "victim.txt"
    args = experiment(tmp_path, CODE_CASES["log file outside the run"].format(victim=victim))
    refused = hydra_train(args + [f"task.data={data_bin}", "--cfg", "job"], tmp_path)
    one_line(refused, "hydra.job_logging.handlers.file.filename")
    allowed = hydra_train(args + [f"task.data={data_bin}", "--cfg", "job", "--allow-config-code"], tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert "task:" in allowed.stdout


def test_hydra_plugins_and_the_built_in_logging_pass_without_the_flag(tmp_path, data_bin):
    result = hydra_train([f"task.data={data_bin}", "hydra/launcher=joblib", "--cfg", "hydra"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hydra_plugins.hydra_joblib_launcher" in result.stdout


def test_a_target_anywhere_in_the_job_config_is_refused():
    """Where a node takes any keys (a plugin's untyped node), ``_target_`` still is refused."""
    from omegaconf import OmegaConf

    from fairseq.dataclass.config_code import check_config_code
    from fairseq.errors import ConfigError

    cfg = OmegaConf.create({"task": {"data": "x"}, "hydra_free": {"_target_": "os.system"}})
    with pytest.raises(ConfigError, match=r"hydra_free\._target_=os\.system.*--allow-config-code"):
        check_config_code(cfg, allowed=False, where="the config")
    check_config_code(cfg, allowed=True, where="the config")


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path, data_bin):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    args = experiment(tmp_path, "\n".join(levels) + "\n")
    # an expansion (10**9 items) would run past the (scaled) timeout: the refusal comes first
    result = hydra_train(args + [f"task.data={data_bin}"], tmp_path, timeout=60)
    one_line(result, "exp.yaml", "aliases expand to more than")


def test_a_peer_ranks_fresh_hydra_file_is_the_jobs_own_under_torchrun_only(tmp_path, monkeypatch):
    """Under torchrun every rank's Hydra app writes the same .hydra/; a config.yaml a peer wrote
    since this process started is not a user's file to protect, an older one still is."""
    import os
    import time

    from fairseq.dataclass.config_code import _written_by_a_peer_rank

    fresh, old = tmp_path / "config.yaml", tmp_path / "overrides.yaml"
    fresh.write_text("{}")
    old.write_text("{}")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not _written_by_a_peer_rank(str(fresh))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    assert _written_by_a_peer_rank(str(fresh)) and not _written_by_a_peer_rank(str(old))
