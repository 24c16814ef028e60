"""Config files name neither code nor paths the run writes outside its own directory.

Every case runs through the real commands in-process (``fairseq-hydra-train``'s ``cli_main`` and
the Hydra evaluation commands), and asserts exit code 2, one stderr line naming the key, no
traceback, and that the harm did not happen: the plugin's ``__init__`` (which writes a marker
file) never ran, the file outside the run is untouched, no run directory was made. The refusal
happens before Hydra's app starts, so no test here trains.
"""
import os
import sys
import uuid
from pathlib import Path

import pytest

from fairseq_cli import hydra_eval, train_hydra

ALLOW = "--allow-config-code"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test in its own directory (the run directories land there); ``sys.argv`` restored
    (the Hydra door rewrites it for Hydra's app)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["fairseq-hydra-train"])


def hydra_train(argv):
    train_hydra.cli_main(list(argv))


def hydra_eval_lm(argv):
    hydra_eval.eval_lm_main(list(argv))


DOORS = {"hydra-train": hydra_train, "hydra-eval-lm": hydra_eval_lm}


def refused(capsys, door, argv, *needles):
    """Run ``door``; assert one line on stderr with ``needles``, exit code 2; return the line."""
    with pytest.raises(SystemExit) as stop:
        door(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2, lines
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def experiment(tmp_path, text, name="exp"):
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / f"{name}.yaml").write_text(text, encoding="utf-8")
    return ["--config-dir", str(conf), "--config-name", name]


def plugin_dir(tmp_path):
    """A plugin directory (a unique package name) whose import writes ``marker``."""
    name = f"doorplug_{uuid.uuid4().hex[:8]}"
    plugin = tmp_path / name
    plugin.mkdir()
    marker = tmp_path / f"{name}.imported"
    (plugin / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n", encoding="utf-8")
    return plugin, marker


def base_args(door, data_bin):
    common = [f"task.data={data_bin}"]
    return common + (["common_eval.path=/nonexistent/ck.pt"] if door is hydra_eval_lm else [])


# -- code: common.user_dir ----------------------------------------------------------------------
@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("printing", [False, True], ids=["run", "--cfg job"])
def test_a_user_dir_set_only_in_yaml_is_refused_before_import(door, printing, tmp_path, data_bin, capsys):
    plugin, marker = plugin_dir(tmp_path)
    args = experiment(tmp_path, f"common:\n  user_dir: {plugin}\n") + base_args(DOORS[door], data_bin)
    line = refused(capsys, DOORS[door], args + (["--cfg", "job"] if printing else []),
                   f"common.user_dir={plugin}", "exp.yaml", ALLOW, f"(common.user_dir={plugin})")
    assert "on the command line" in line
    assert not marker.exists() and plugin.name not in sys.modules
    assert not (tmp_path / "outputs").exists()


def test_a_user_dir_in_a_group_file_is_refused_too(tmp_path, data_bin, capsys):
    """Set in a file the primary config pulls in: the message names the directory of files."""
    plugin, marker = plugin_dir(tmp_path)
    args = experiment(tmp_path, "defaults:\n  - config\n  - extra\n  - _self_\n")
    (tmp_path / "conf" / "extra.yaml").write_text(f"common:\n  user_dir: {plugin}\n", encoding="utf-8")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}", "--cfg", "job"], "common.user_dir", ALLOW)
    assert not marker.exists()


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("how", ["command line", "flag"])
def test_a_user_dir_is_imported_when_the_command_line_says_so(door, how, tmp_path, data_bin, capsys):
    plugin, marker = plugin_dir(tmp_path)
    args = experiment(tmp_path, f"common:\n  user_dir: {plugin}\n") + base_args(DOORS[door], data_bin)
    allow = [f"common.user_dir={plugin}"] if how == "command line" else [ALLOW]
    DOORS[door](args + allow + ["--cfg", "job"])
    assert marker.read_text() == "ran"
    assert f"user_dir: {plugin}" in capsys.readouterr().out


# -- code: the logging config and the rest of the hydra node ------------------------------------
LOGGING_CASES = {
    "ext:// stream": ("hydra.job_logging.handlers.console.stream",
                      "hydra:\n  job_logging:\n    handlers:\n      console:\n        stream: ext://{mod}.attr\n"),
    "ext:// in a formatter": ("hydra.job_logging.formatters.simple.format",
                              "hydra:\n  job_logging:\n    formatters:\n      simple:\n"
                              "        format: 'ext://{mod}.attr'\n"),
    "ext:// built by interpolation": ("hydra.hydra_logging.handlers.console.stream",
                                      "hydra:\n  hydra_logging:\n    formatters:\n      simple:\n"
                                      "        datefmt: 'ext:'\n    handlers:\n      console:\n"
                                      "        stream: ${{hydra.hydra_logging.formatters.simple.datefmt}}//{mod}.attr\n"),
    "cfg://": ("hydra.job_logging.handlers.console.stream",
               "hydra:\n  job_logging:\n    handlers:\n      console:\n        stream: cfg://handlers.file\n"),
    "() factory": ("hydra.job_logging.filters.f.()",
                   "hydra:\n  job_logging:\n    filters:\n      f:\n        (): {mod}.make\n"),
    "class": ("hydra.job_logging.handlers.sock.class",
              "hydra:\n  job_logging:\n    handlers:\n      sock:\n        class: logging.handlers.SocketHandler\n"
              "        host: localhost\n        port: 9\n"),
    "attributes": ("hydra.job_logging.handlers.file..",
                   "hydra:\n  job_logging:\n    handlers:\n      file:\n        .:\n          baseFilename: x\n"),
    "searchpath pkg://": ("hydra.searchpath[0]", "defaults:\n  - config\n  - _self_\n"
                                                 "hydra:\n  searchpath:\n    - pkg://{mod}\n"),
    "env_set": ("hydra.job.env_set.PYTHONPATH", "hydra:\n  job:\n    env_set:\n      PYTHONPATH: /tmp/evil\n"),
    "callbacks": ("hydra.callbacks", "hydra:\n  callbacks:\n    x:\n      _target_: {mod}.make\n"),
}


@pytest.fixture
def hostile_module(tmp_path, monkeypatch):
    """An importable module whose import writes a marker file: ``(name, marker)``."""
    name = f"doormod_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / f"{name}.imported"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nattr = None\n"
                                    "def make(*a, **k):\n    return None\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(lib))
    return name, marker


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("case", sorted(LOGGING_CASES))
def test_code_in_the_hydra_node_of_a_file_is_refused(door, case, tmp_path, data_bin, hostile_module, capsys):
    name, marker = hostile_module
    key, text = LOGGING_CASES[case]
    args = experiment(tmp_path, text.format(mod=name)) + base_args(DOORS[door], data_bin)
    refused(capsys, DOORS[door], args, key, ALLOW, "would run code")
    assert not marker.exists() and name not in sys.modules
    assert not (tmp_path / "outputs").exists()


def test_the_flag_lets_a_trusted_logging_config_through(tmp_path, data_bin, hostile_module, capsys):
    name, _ = hostile_module
    args = experiment(tmp_path, LOGGING_CASES["env_set"][1]) + [f"task.data={data_bin}", "--cfg", "hydra"]
    hydra_train(args + [ALLOW])
    assert "PYTHONPATH: /tmp/evil" in capsys.readouterr().out


def test_launcher_setup_lines_from_a_file_are_refused(tmp_path, data_bin, capsys):
    victim = tmp_path / "victim.txt"
    args = experiment(tmp_path, "defaults:\n  - config\n  - override hydra/launcher: submitit_slurm\n"
                                f"  - _self_\nhydra:\n  launcher:\n    setup:\n      - touch {victim}\n")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}", "-m"],
            "hydra.launcher.setup", ALLOW)
    assert not victim.exists()


@pytest.mark.parametrize("plus", ["", "+"])
def test_a_callback_on_the_command_line_is_one_line(plus, tmp_path, data_bin, capsys):
    callback = f"{plus}hydra.callbacks.x._target_=builtins.print"
    refused(capsys, hydra_train, [f"task.data={data_bin}", callback, "--cfg", "job"],
            "hydra.callbacks.x._target_", ALLOW)
    if not plus:  # allowed, Hydra's own complaint (a new key needs its `+`) is one line too
        refused(capsys, hydra_train, [f"task.data={data_bin}", callback, "--cfg", "job", ALLOW],
                "hydra.callbacks.x._target_", "+hydra.callbacks")


# -- paths a config file makes the run write ----------------------------------------------------
def test_a_log_file_that_climbs_out_of_the_run_directory_is_refused(tmp_path, data_bin, capsys):
    victim = tmp_path / "victim"
    victim.write_text("keep me", encoding="utf-8")
    args = experiment(tmp_path, "hydra:\n  job_logging:\n    handlers:\n      file:\n"
                                "        filename: ${hydra.runtime.output_dir}/../../../victim\n        mode: w\n")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}", "optimization.max_update=1"],
            "hydra.job_logging.handlers.file.filename", str(victim), ALLOW, "on the command line")
    assert victim.read_text(encoding="utf-8") == "keep me" and not (tmp_path / "outputs").exists()


def test_a_log_file_through_a_symlink_in_the_run_directory_is_refused(tmp_path, data_bin, capsys):
    """The run directory of an earlier run holds a link to a file elsewhere: followed, it is outside."""
    victim = tmp_path / "victim"
    victim.write_text("keep me", encoding="utf-8")
    run = tmp_path / "runs" / "exp"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text("{}\n", encoding="utf-8")
    os.symlink(victim, run / "train.log")
    args = experiment(tmp_path, f"hydra:\n  run:\n    dir: {run}\n  job_logging:\n    handlers:\n      file:\n"
                                "        filename: ${hydra.runtime.output_dir}/train.log\n        mode: w\n")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}"], "filename", str(victim))
    assert victim.read_text(encoding="utf-8") == "keep me"


@pytest.mark.parametrize("subdir", ["OUTSIDE", "../../../elsewhere"])
def test_an_output_subdir_outside_the_run_is_refused(subdir, tmp_path, data_bin, capsys):
    outside = tmp_path / "project"
    outside.mkdir()
    (outside / "config.yaml").write_text("mine: 1\n", encoding="utf-8")
    value = str(outside) if subdir == "OUTSIDE" else subdir
    args = experiment(tmp_path, f"hydra:\n  output_subdir: {value}\n")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}"], f"hydra.output_subdir={value}", ALLOW)
    assert (outside / "config.yaml").read_text(encoding="utf-8") == "mine: 1\n"
    assert not (tmp_path / "outputs").exists()


def test_the_same_paths_given_on_the_command_line_pass(tmp_path, data_bin, capsys):
    """The user's own command line is the user's choice: only checked, nothing written (--cfg)."""
    outside = tmp_path / "project"
    outside.mkdir()
    (outside / "config.yaml").write_text("mine: 1\n", encoding="utf-8")
    hydra_train([f"task.data={data_bin}", f"hydra.output_subdir={outside}", f"hydra.run.dir={outside}",
                 "hydra.job_logging.handlers.file.filename=/tmp/x.log", "--cfg", "job"])
    assert "task:" in capsys.readouterr().out


def test_a_run_directory_set_in_a_file_must_not_hold_a_users_files(tmp_path, data_bin, capsys):
    """Refused: an existing directory of someone's files (its config.yaml would be overwritten with
    `output_subdir: .`); accepted: a fresh directory, an earlier run's, the launch directory."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("mine: 1\n", encoding="utf-8")
    args = experiment(tmp_path, f"hydra:\n  run:\n    dir: {home}\n  output_subdir: .\n")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}"], f"hydra.run.dir={home}", ALLOW)
    assert (home / "config.yaml").read_text(encoding="utf-8") == "mine: 1\n"
    # the launch directory (fairseq 0.12's `hydra.run.dir: .`): its own config.yaml is protected
    (tmp_path / "config.yaml").write_text("mine: 2\n", encoding="utf-8")
    args = experiment(tmp_path, "hydra:\n  run:\n    dir: .\n  output_subdir: .\n", name="here")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}"], "hydra.output_subdir=.", "config.yaml")
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == "mine: 2\n"
    earlier = tmp_path / "earlier"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / ".hydra" / "hydra.yaml").write_text("{}\n", encoding="utf-8")
    (earlier / "checkpoint_last.pt").write_bytes(b"")
    for run_dir in (earlier, tmp_path / "fresh", Path(".")):
        args = experiment(tmp_path, f"hydra:\n  run:\n    dir: {run_dir}\n", name="ok")
        hydra_train(args + [f"task.data={data_bin}", "--cfg", "job"])
        assert "task:" in capsys.readouterr().out


def test_a_sweep_job_directory_outside_the_sweep_is_refused(tmp_path, data_bin, capsys):
    args = experiment(tmp_path, "hydra:\n  sweep:\n    subdir: ../../escaped\n")
    refused(capsys, hydra_train, args + [f"task.data={data_bin}", "-m", "optimization.lr=0.1,0.2"],
            "hydra.sweep.subdir=../../escaped", ALLOW)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "multirun").exists()


def test_multirun_with_cfg_is_one_line(data_bin, capsys):
    refused(capsys, hydra_train, [f"task.data={data_bin}", "-m", "--cfg", "job"], "--multirun", "--cfg")


# -- a replaced tree (--config-path) --------------------------------------------------------------
def replaced_tree(tmp_path, hydra_yaml):
    """A copy of the built-in config tree with a primary ``exp.yaml`` on top of its ``config.yaml``
    that adds ``hydra_yaml``: the arguments that name it."""
    import shutil

    from fairseq.dataclass.initialize import config_dir

    tree = tmp_path / "tree"
    shutil.copytree(config_dir(), tree)
    (tree / "exp.yaml").write_text("defaults:\n  - config\n  - _self_\n" + hydra_yaml, encoding="utf-8")
    return ["--config-path", str(tree), "--config-name", "exp"]


@pytest.mark.parametrize("case", ["callbacks", "ext:// stream", "searchpath pkg://"])
def test_code_in_a_tree_given_by_config_path_is_refused(case, tmp_path, data_bin, hostile_module, capsys):
    name, marker = hostile_module
    key, text = LOGGING_CASES[case]
    text = text.replace("defaults:\n  - config\n  - _self_\n", "")  # config.yaml has its own defaults
    tree = replaced_tree(tmp_path, text.format(mod=name))
    refused(capsys, hydra_train, [*tree, f"task.data={data_bin}", "--cfg", "job"],
            key, ALLOW)
    assert not marker.exists() and name not in sys.modules
    assert not (tmp_path / "outputs").exists()


def test_a_log_file_outside_the_run_from_a_config_path_tree_is_refused(tmp_path, data_bin, capsys):
    victim = tmp_path / "victim"
    victim.write_text("keep me", encoding="utf-8")
    tree = replaced_tree(tmp_path, "hydra:\n  job_logging:\n    handlers:\n      file:\n"
                                   "        filename: ${hydra.runtime.output_dir}/../../../victim\n")
    refused(capsys, hydra_train, [*tree, f"task.data={data_bin}", "optimization.max_update=1"],
            "hydra.job_logging.handlers.file.filename", str(victim))
    assert victim.read_text(encoding="utf-8") == "keep me"


def test_a_malformed_file_in_a_config_path_tree_is_one_line(tmp_path, data_bin, capsys):
    tree = replaced_tree(tmp_path, "hydra:\n  run:\n    dir: x\nhydra:\n  run:\n    dir: y\n")
    refused(capsys, hydra_train, [*tree, f"task.data={data_bin}", "--cfg", "job"], "exp.yaml")
