"""fairseq's example YAML files write list fields as tuple-like strings (``adam_betas:
(0.9,0.98)``); such a file composes as the same value does on the command line."""
import pytest

from fairseq.dataclass.list_fields import literal_sequence


def compose(tmp_path, files, overrides=(), name="exp"):
    from fairseq.dataclass.compose import compose_config

    for rel, text in files.items():
        path = tmp_path / "conf" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return compose_config(list(overrides), config_name=name, user_config_dir=str(tmp_path / "conf"))


def test_an_experiment_file_in_fairseqs_style_composes(tmp_path):
    cfg = compose(tmp_path, {"exp.yaml": "defaults:\n  - config\n  - _self_\n"
                                         "optimizer:\n  adam_betas: (0.9,0.98)\n  adam_eps: 1e-08\n"
                                         "optimization:\n  lr: [0.0005]\n  update_freq: (4,)\n"},
                  ["task.data=/data"])
    assert list(cfg.optimizer.adam_betas) == [0.9, 0.98]
    assert list(cfg.optimization.update_freq) == [4] and list(cfg.optimization.lr) == [0.0005]


def test_a_component_file_with_the_group_header_composes(tmp_path):
    cfg = compose(tmp_path, {"optimizer/adam_fs.yaml": "# @package _group_\n_name: adam\nadam_betas: '(0.9, 0.995)'\n",
                             "exp.yaml": "defaults:\n  - config\n  - override optimizer: adam_fs\n  - _self_\n"},
                  ["task.data=/data"])
    assert list(cfg.optimizer.adam_betas) == [0.9, 0.995]


def test_the_same_as_the_command_line(tmp_path):
    from_file = compose(tmp_path, {"exp.yaml": "defaults:\n  - config\n  - _self_\noptimizer:\n  adam_betas: (0.8,0.9)\n"},
                        ["task.data=/data"])
    from_line = compose(tmp_path, {}, ["task.data=/data", "optimizer.adam_betas=[0.8,0.9]"], name="config")
    assert list(from_file.optimizer.adam_betas) == list(from_line.optimizer.adam_betas) == [0.8, 0.9]


@pytest.mark.parametrize("text, expected", [("(0.9,0.98)", [0.9, 0.98]), ("[1, 2]", [1, 2]), (" (3,) ", [3]),
                                            ("(0.9,", "(0.9,"), ("__import__('os')", "__import__('os')"),
                                            ("(1, 2", "(1, 2"), (5, 5)])
def test_literal_sequences_only(text, expected):
    assert literal_sequence(text) == expected
