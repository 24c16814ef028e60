"""No hidden doors between modules.

The layer contracts (``lint-imports``) and ``tests/test_layers.py`` see import statements only.
A module loaded by a name computed at run time (``importlib.import_module("fairseq.x")``,
``__import__``, ``runpy.run_module``, a module ``__getattr__`` doing either) escapes them, and a
cycle can hide behind it. This test reads every module of ``fairseq/`` and ``fairseq_cli/`` with
``ast`` and builds the import graph the way Python runs it: import statements at any depth
(inside functions too) and the string arguments of those calls. It fails on

* a string import of a ``fairseq`` module anywhere but in the places listed in
  ``STRING_IMPORTS`` (the registry's plugin discovery, the package root's lazy attributes);
* a dynamic import whose name cannot be read from the source, outside ``STRING_IMPORTS`` and
  ``OTHER_PACKAGES`` (where the name is never one of ours);
* any cycle: a strongly connected component of more than one module, printed edge by edge.

The ``ignore_imports`` entries of ``setup.cfg`` are not taken out of the graph: they excuse an
import that crosses a layer upwards for a stated reason, never a cycle.
"""
import ast
from collections import deque
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from conftest import ROOT

PACKAGES = ("fairseq", "fairseq_cli")

#: modules that may import fairseq modules by a computed name, and why
STRING_IMPORTS = {
    "fairseq.registry": "plugin discovery: --user-dir packages and the built-in component "
                        "packages register themselves when imported by name",
    "fairseq": "the package root's lazy attributes (fairseq 0.12's `import fairseq; "
               "fairseq.tasks.setup_task(...)`): only its direct submodules, and no module "
               "imports the root, so these edges cannot close a cycle (checked below)",
}

#: modules whose dynamic imports take a name that is never a fairseq module, and why
OTHER_PACKAGES = {
    "fairseq.data.encoders.errors": "require(): optional third-party packages (sentencepiece, "
                                    "subword_nmt, ...) with a pip hint when missing",
}

#: modules with a module-level ``__getattr__`` (a lazy attribute), and why
MODULE_GETATTRS = {
    "fairseq": "the lazy submodule attributes of STRING_IMPORTS",
    "fairseq.options": "fairseq 0.12's options.eval_bool & co.: fairseq.utils's own functions, imported "
                       "with a statement on first use (they need torch, options does not)",
}

#: calls that import a module named by their first argument
IMPORT_CALLS = {"import_module", "__import__", "run_module"}

Edge = Tuple[str, str, int]  # (imported module, file, line)


def module_files() -> Dict[str, Path]:
    """Every module of the two packages: dotted name -> file (a package is its __init__.py)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The longest prefix of ``name`` that is one of our modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _static_prefix(node: ast.expr, module: str) -> Tuple[Optional[str], bool]:
    """What the source says of an import call's name: ``(text, complete)``. An f-string gives
    its leading constant part (``__name__``/``__package__`` read as the module's own names)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, True
    if isinstance(node, ast.JoinedStr):
        text = ""
        for value in node.values:
            if isinstance(value, ast.Constant):
                text += str(value.value)
            elif (isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name)
                  and value.value.id in ("__name__", "__package__")):
                text += module
            else:
                return text, False
        return text, True
    return None, False


def _is_import_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in IMPORT_CALLS


def scan(module: str, path: Path, modules: Dict[str, Path]) -> Iterator[Tuple[str, object, int]]:
    """``("edge", target, line)`` for each import of one of our modules, ``("string", name,
    line)`` for each import call naming a fairseq module, ``("unknown", source, line)`` for each
    import call whose name the source does not tell."""
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target is not None:
                    yield "edge", target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package_parts[:len(package_parts) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}", modules) if f"{base}.{alias.name}" in modules \
                    else _resolve(base, modules)
                if target is not None:
                    yield "edge", target, node.lineno
        elif _is_import_call(node):
            text, complete = _static_prefix(node.args[0], module)
            if text is not None and text.split(".")[0] in PACKAGES:
                yield "string", text, node.lineno
                target = _resolve(text, modules) if complete else None
                if target is not None:
                    yield "edge", target, node.lineno
            elif not complete:
                yield "unknown", ast.unparse(node), node.lineno


@pytest.fixture(scope="module")
def graph():
    """``(edges, strings, unknown)``: module -> [(imported module, file, line)], and the import
    calls naming a fairseq module or an unknown one, as (module, what, file:line)."""
    modules = module_files()
    edges: Dict[str, List[Edge]] = {name: [] for name in modules}
    strings, unknown = [], []
    for module, path in modules.items():
        rel = path.relative_to(ROOT).as_posix()
        for kind, what, line in scan(module, path, modules):
            if kind == "edge":
                if what != module:
                    edges[module].append((what, rel, line))
            else:
                (strings if kind == "string" else unknown).append((module, what, f"{rel}:{line}"))
    return edges, strings, unknown


def strongly_connected(edges: Dict[str, List[Edge]]) -> List[List[str]]:
    """The components of more than one module (Tarjan's algorithm, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted({t for t, _, _ in edges[start]})))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted({t for t, _, _ in edges[child]}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def describe_cycle(component: List[str], edges: Dict[str, List[Edge]]) -> str:
    """One shortest cycle through the component's first module, each edge with its file:line."""
    members = set(component)
    start = component[0]
    came_from: Dict[str, Tuple[str, str, int]] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target, rel, line in edges[node]:
            if target not in members or target in came_from:
                continue
            came_from[target] = (node, rel, line)
            if target == start:
                queue.clear()
                break
            queue.append(target)
    steps, node = [], start
    while True:
        previous, rel, line = came_from[node]
        steps.append(f"{previous} -> {node} ({rel}:{line})")
        node = previous
        if node == start:
            break
    return (f"cycle among {len(component)} modules ({', '.join(component)}); one of them:\n    "
            + "\n    ".join(reversed(steps)))


def test_no_module_is_imported_by_a_computed_name_outside_the_registry(graph):
    _, strings, unknown = graph
    hidden = [f"{where}: {what!r}" for module, what, where in strings if module not in STRING_IMPORTS]
    assert not hidden, ("a fairseq module imported by a string hides from the layer contracts; import it "
                        "with a statement, or let the layer above register itself:\n  " + "\n  ".join(hidden))
    unread = [f"{where}: {what}" for module, what, where in unknown
              if module not in STRING_IMPORTS and module not in OTHER_PACKAGES]
    assert not unread, "dynamic imports whose module the source does not name:\n  " + "\n  ".join(unread)


def test_lazy_module_attributes_are_the_listed_ones():
    """A module ``__getattr__`` can hand out another module's names without an import the
    reader sees at the top; the two that exist are listed with their reason."""
    found = set()
    for module, path in module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body):
            found.add(module)
    assert found == set(MODULE_GETATTRS)


def test_the_allowed_string_imports_are_still_there(graph):
    """The exceptions stay exact: one that is no longer needed is taken off the list."""
    _, strings, unknown = graph
    users = {module for module, _, _ in strings} | {module for module, _, _ in unknown}
    assert set(STRING_IMPORTS) | set(OTHER_PACKAGES) <= users


def test_no_module_imports_the_package_root(graph):
    """The root's lazy attributes import its submodules; an import of the root itself would let
    those edges close a cycle."""
    edges, _, _ = graph
    importers = [f"{module} ({rel}:{line})" for module, targets in edges.items()
                 for target, rel, line in targets if target in PACKAGES]
    assert not importers


def test_the_import_graph_counting_every_import_has_no_cycle(graph):
    edges, _, _ = graph
    assert len(edges) > 100
    cycles = [describe_cycle(component, edges) for component in strongly_connected(edges)]
    assert not cycles, "\n".join(cycles)


def test_a_hidden_import_and_a_cycle_are_found(tmp_path, monkeypatch):
    """The scanner itself: a string import, an f-string import and a two-module cycle through a
    function-level import are all seen."""
    package = tmp_path / "fairseq"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from fairseq import high\n")
    (package / "high.py").write_text("import importlib\nfrom . import low\n"
                                     "def g(n):\n    importlib.import_module('fairseq.low')\n"
                                     "    importlib.import_module(f'{__name__}.{n}')\n"
                                     "    __import__(n)\n")
    modules = {name: package / f"{name.split('.')[-1]}.py" for name in ("fairseq.low", "fairseq.high")}
    modules["fairseq"] = package / "__init__.py"
    found = {name: list(scan(name, path, modules)) for name, path in modules.items()}
    assert ("edge", "fairseq.high", 2) in found["fairseq.low"]
    high = found["fairseq.high"]
    assert ("edge", "fairseq.low", 2) in high and ("string", "fairseq.low", 4) in high
    assert ("string", "fairseq.high.", 5) in high and ("unknown", "__import__(n)", 6) in high
    edges = {name: [(t, "x.py", line) for kind, t, line in found[name] if kind == "edge" and t != name]
             for name in modules}
    components = strongly_connected(edges)
    assert components == [["fairseq.high", "fairseq.low"]]
    message = describe_cycle(components[0], edges)
    assert "fairseq.high -> fairseq.low (x.py:2)" in message and "fairseq.low -> fairseq.high (x.py:2)" in message


# -- the two upward needs, met without a hidden import --------------------------------------------
def test_from_pretrained_finds_the_hub_through_the_slot_the_package_root_fills():
    """In a fresh interpreter: ``import fairseq`` loads no torch and no hub, and importing only
    the model class (the README's way) leaves ``from_pretrained`` a loader to hand over to."""
    import subprocess
    import sys

    code = ("import sys, fairseq\n"
            "assert 'torch' not in sys.modules\n"
            "from fairseq.models.transformer_lm import TransformerLanguageModel\n"
            "from fairseq import hub_loader\n"
            "loader = hub_loader.hub_loader()\n"
            "assert 'fairseq.hub_utils' not in sys.modules, 'the hub is loaded on first use only'\n"
            "print(loader.__module__, loader.__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fairseq", "_load_hub"]


def test_an_empty_hub_slot_says_what_fills_it(monkeypatch):
    from fairseq import hub_loader
    from fairseq.models.transformer_lm import TransformerLanguageModel

    monkeypatch.setattr(hub_loader, "_loader", None)
    with pytest.raises(RuntimeError, match=r"fairseq/__init__.py installs it with fairseq.hub_loader.register_hub_loader"):
        TransformerLanguageModel.from_pretrained("/nonexistent")


def test_the_hub_slot_hands_over_everything_from_pretrained_gets(monkeypatch):
    from fairseq import hub_loader
    from fairseq.models.transformer_lm import TransformerLanguageModel

    calls = []
    monkeypatch.setattr(hub_loader, "_loader", lambda *args, **kwargs: calls.append((args, kwargs)) or "hub")
    got = TransformerLanguageModel.from_pretrained("/models/x", "best.pt", data_name_or_path="bin", beam=3)
    assert got == "hub"
    assert calls == [(("/models/x", "best.pt", "bin"), {"archive_map": {}, "beam": 3})]


def test_the_sharded_checkpoint_names_are_still_imported_from_fully_sharded():
    from fairseq.checkpoint import sharded
    from fairseq.distributed import fsdp, fully_sharded

    for name in ("check_metadata", "consolidate", "is_sharded_checkpoint", "load_sharded", "main",
                 "save_sharded", "read_extra", "EXTRA_FILE", "METADATA_FILE"):
        assert getattr(fully_sharded, name) is getattr(sharded, name)
    for name in ("shard_model", "full_state", "load_full_model", "saves_sharded", "state_dict_options"):
        assert getattr(fully_sharded, name) is getattr(fsdp, name)


def test_python_m_fully_sharded_still_runs_the_consolidate_command(tmp_path):
    """The module's ``__main__`` is what is tested, so it runs as its own process."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "fairseq.distributed.fully_sharded", "consolidate",
                           str(tmp_path), str(tmp_path / "out.pt")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "is not a sharded checkpoint directory" in done.stderr and "Traceback" not in done.stderr
