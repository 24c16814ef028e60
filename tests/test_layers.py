"""The house in layers: the module graph has no cycle, Hydra's internals are touched in one
module only (and only once a config is composed), and the private methods it wraps still exist
with the parameters it relies on."""
import ast
import importlib
import inspect
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, scaled_timeout


def test_the_module_import_graph_has_no_cycle():
    """Counting imports inside functions: a strongly connected component of more than one
    module is a cycle (lint-imports checks the layers; this names any cycle's modules)."""
    import grimp

    graph = grimp.build_graph("fairseq", "fairseq_cli")
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert len(graph.modules) > 100
    assert cycles == []


def test_hydra_internals_are_imported_by_one_module_only():
    users = []
    for path in sorted((ROOT / "fairseq").rglob("*.py")) + sorted((ROOT / "fairseq_cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith("hydra._internal") for n in names):
                users.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(users)) == ["fairseq/dataclass/hydra_hooks.py"]


def test_the_private_hydra_methods_we_wrap_keep_their_parameters():
    """Fails on a Hydra version that renames or re-signs one of them: the rule it carries
    (numbers for list fields, fairseq 0.12's package header) would silently stop applying."""
    from fairseq.dataclass.hydra_hooks import HOOKED

    assert len(HOOKED) == 3
    for class_path, attribute, parameters in HOOKED:
        module_name, class_name = class_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module_name), class_name)
        method = inspect.unwrap(getattr(cls, attribute))
        names = tuple(inspect.signature(method).parameters)
        if names[:1] == ("self",) and parameters[:1] != ("self",):
            names = names[1:]
        assert names == parameters, f"{class_path}.{attribute}{names}: expected {parameters}"
    # used by hydra_hooks.user_tree
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path

    assert list(inspect.signature(create_config_search_path).parameters) == ["search_path_dir"]
    assert list(inspect.signature(Hydra.create_main_hydra2).parameters) == ["task_name", "config_search_path"]
    # used by hydra_hooks.parse_command_line: Hydra's own command-line parser, with the flags
    # the doors read
    from fairseq.dataclass.hydra_hooks import hydra_flags, parse_command_line

    flags, overrides, unknown = parse_command_line(
        ["--multirun", "a=1", "--config-dir", "d", "-cn", "exp", "--cfg", "job", "b=2", "--x"])
    assert (flags.multirun, flags.config_dir, flags.config_name, flags.cfg) == (True, "d", "exp", "job")
    assert (overrides, unknown) == (["a=1", "b=2"], ["--x"])
    assert hydra_flags(flags) == ["--cfg", "job", "--multirun", "--config-name", "exp", "--config-dir", "d"]
    assert flags.help is False and flags.info is None and flags.config_path is None


@pytest.mark.slow
def test_importing_for_a_notebook_or_a_checkpoint_load_patches_nothing_until_a_config_is_composed():
    code = textwrap.dedent("""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.plugins.config_source import ConfigSource
        def current():
            return (ConfigLoaderImpl.__dict__["_load_single_config"],
                    ConfigLoaderImpl.__dict__["_apply_overrides_to_config"],
                    ConfigSource.__dict__["_get_header_dict"])
        before = current()
        import fairseq.checkpoint_utils, fairseq.hub_utils, fairseq.dataclass.initialize
        import fairseq.models.transformer_lm, fairseq.tasks, fairseq.options, fairseq.trainer
        print(current() == before)
        from fairseq.dataclass.initialize import compose_config
        cfg = compose_config(["task.data=x"])
        after = current()
        print(all(a is not b for a, b in zip(after, before)), cfg.optimization.lr)
        compose_config(["task.data=x", "optimization.lr=0.5"])
        print(current() == after)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=scaled_timeout(120))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["True", "True [0.25]", "True"], result.stdout


def test_every_module_of_the_package_has_a_layer():
    """A new top-level module or package must be placed in setup.cfg's layers (else import-linter
    would not constrain it)."""
    import configparser
    import re

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    named = set(re.findall(r"[\w.]+", parser["importlinter:contract:layers"]["layers"]))
    package = ROOT / "fairseq"
    top = {f"fairseq.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    top |= {f"fairseq.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert top - named == set(), f"not in any layer of setup.cfg: {sorted(top - named)}"
