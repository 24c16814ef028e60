"""docs/extending.md as a plugin author follows it: the plugin is written from the guide's
``# file:`` code blocks exactly as they stand, then trained from both doors (same loss at
update 2), listed in ``--help`` and Hydra's groups, built from Python, and one of the guide's
"common mistakes" gives the message the guide quotes. The plugin's registrations are removed
after the module, so no other test sees its components."""
import re

import pytest

from conftest import ROOT, in_process, read_json_log, registrations_forgotten, run_in

GUIDE = ROOT / "docs" / "extending.md"
RUN = ["--max-update", "2", "--num-workers", "0", "--log-format", "json", "--log-interval", "1"]


def guide_files():
    """``{path: text}`` of the guide's ``python`` blocks whose first line is ``# file: PATH``."""
    blocks = re.findall(r"```python\n(# file: (\S+)\n.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    return {path: text for text, path in blocks}


def guide_command(start: str) -> list:
    """The words of the guide's first shell command starting with ``start`` (continuations joined)."""
    import shlex

    text = GUIDE.read_text(encoding="utf-8").replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(start))
    return shlex.split(line)[1:]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """The guide's files written to a directory; afterwards everything they registered is removed."""
    base = tmp_path_factory.mktemp("guide")
    for path, text in guide_files().items():
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_text(text, encoding="utf-8")
    with registrations_forgotten():
        yield base


def test_the_guide_ships_the_plugin_files():
    files = guide_files()
    assert {"toy_plugin/__init__.py", "toy_plugin/gru_lm.py", "toy_plugin/smoothed_ce.py"} <= set(files)


@pytest.mark.usefixtures("restore_root_log_handlers")
def test_both_doors_train_the_plugin_to_the_same_loss(plugin_dir, data_bin, capsys):
    from fairseq_cli import train, train_hydra

    legacy = guide_command("fairseq-train demo/data-bin --user-dir toy_plugin --arch gru_lm_tiny")
    hydra = guide_command("fairseq-hydra-train common.user_dir=toy_plugin task.data=demo/data-bin")
    legacy = [data_bin if w == "demo/data-bin" else w for w in legacy] + RUN + ["--log-file", "legacy.log"]
    hydra = [f"task.data={data_bin}" if w == "task.data=demo/data-bin" else w for w in hydra]
    hydra += ["optimization.max_update=2", "dataset.num_workers=0", "common.log_format=json",
              "common.log_interval=1", "common.log_file=hydra.log", "hydra.run.dir=out"]
    first = run_in(plugin_dir, train.cli_main, legacy, capsys)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_in(plugin_dir, train_hydra.cli_main, hydra, capsys)
    assert second.returncode == 0, second.stderr[-2000:]

    def losses(name):
        return [(r["num_updates"], r["loss"]) for r in read_json_log(str(plugin_dir / name))
                if "num_updates" in r and "loss" in r and "valid_loss" not in r and "train_loss" not in r]

    assert losses("legacy.log")[:2] == losses("hydra.log")[:2] and len(losses("legacy.log")) >= 2
    import torch

    state = torch.load(plugin_dir / "checkpoints" / "gru" / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["model"]["_name"] == "gru_lm_tiny" and state["cfg"]["model"]["hidden_dim"] == 32
    assert state["cfg"]["criterion"]["_name"] == "smoothed_cross_entropy"


def _help(cli_main, argv, capsys) -> str:
    """A door's ``--help`` output (argparse exits 0 after it; Hydra's returns)."""
    capsys.readouterr()
    try:
        cli_main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None)
    return capsys.readouterr().out


def test_help_lists_the_plugin_in_both_doors(plugin_dir, capsys, monkeypatch):
    from fairseq_cli import train, train_hydra

    monkeypatch.chdir(plugin_dir)
    legacy = _help(train.cli_main, guide_command("fairseq-train demo/data-bin --user-dir toy_plugin --arch gru_lm "), capsys)
    assert "model (gru_lm):" in legacy and "criterion (smoothed_cross_entropy):" in legacy
    for flag in ("--embed-dim", "--hidden-dim", "--num-layers", "--gru-dropout", "--smoothing", "size of the GRU state"):
        assert flag in legacy, flag
    hydra = _help(train_hydra.cli_main, guide_command("fairseq-hydra-train common.user_dir=toy_plugin --help"), capsys)
    group = next(line for line in hydra.splitlines() if line.startswith("model (model=NAME):"))
    assert "gru_lm" in group and "gru_lm_tiny" in group
    assert "model.gru_dropout=" in hydra and "smoothed_cross_entropy" in hydra


def test_the_python_path_builds_the_plugin(plugin_dir, data_bin, monkeypatch, capsys):
    """The guide's Python block up to the checkpoint (the checkpoint part runs in the docs test)."""
    text = GUIDE.read_text(encoding="utf-8").split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = code.split("\nlm = ")[0].replace("task.data=demo/data-bin", f"task.data={data_bin}")
    monkeypatch.chdir(plugin_dir)
    capsys.readouterr()
    exec(compile(code, str(GUIDE), "exec"), {"__name__": "__guide__"})  # noqa: S102 -- the guide's own code, the test's subject
    assert capsys.readouterr().out.strip() == "GruLanguageModel 32 64"


def test_a_common_mistake_gives_the_quoted_message(plugin_dir, capsys, monkeypatch):
    from fairseq_cli import train

    text = GUIDE.read_text(encoding="utf-8")
    quoted = re.search(r"--user-dir taken_plugin --arch transformer_lm\n(error: .*)\n", text).group(1)
    monkeypatch.chdir(plugin_dir)
    code, err = in_process(train.cli_main, ["demo/data-bin", "--user-dir", "taken_plugin", "--arch",
                                            "transformer_lm"], capsys)
    assert code == 2 and quoted in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
