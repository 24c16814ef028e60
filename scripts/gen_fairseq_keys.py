#!/usr/bin/env python3
"""Write ``fairseq/checkpoint/fairseq_keys.py``: the config keys fairseq 0.12.2 knows.

fairseq 0.12.2 merges the checkpoint's ``cfg.task`` (and, when it trains, ``cfg.criterion``,
``cfg.optimizer``, ``cfg.lr_scheduler``) into its own dataclasses in struct mode, so a key it
does not know makes it fail; our writer (:mod:`fairseq.checkpoint.fairseq_layout`) leaves our
own keys out of what fairseq reads when they hold their default. Which keys fairseq knows is a
fact of its release; this script reads it from an installed fairseq 0.12.2 (e.g. the venv that
``python benchmarks/vs_fairseq.py --build-only`` builds) and writes it out as data. Run it again
only if the scope (our component names) grows::

    python scripts/gen_fairseq_keys.py --fairseq-python /tmp/vs_fairseq/venv/bin/python

Only field names are recorded (no defaults, no code); for each component name this package
registers, the fields of fairseq's dataclass of that name (an architecture takes its model's),
and for each generic group the fields of fairseq's ``FairseqConfig`` node.
"""
import argparse
import dataclasses
import json
import pprint
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "fairseq" / "checkpoint" / "fairseq_keys.py"

# Run by fairseq 0.12.2's interpreter: reads names (JSON on stdin), prints fields (JSON).
_PROBE = r"""
import dataclasses, json, sys
from fairseq import models, registry, tasks
from fairseq.dataclass.configs import FairseqConfig
import fairseq.criterions, fairseq.optim, fairseq.optim.lr_scheduler, fairseq.data.encoders
wanted = json.load(sys.stdin)

def names(dc):
    return sorted(f.name for f in dataclasses.fields(dc))

out = {"generic": {}, "components": {}}
from omegaconf import OmegaConf
defaults = OmegaConf.to_container(OmegaConf.structured(FairseqConfig()), resolve=True, enum_to_str=True)
out["defaults"] = {}
for f in dataclasses.fields(FairseqConfig):
    dc = f.type if dataclasses.is_dataclass(f.type) else None
    if f.name in wanted["generic"] and dc is not None:
        out["generic"][f.name] = names(dc)
        lacking = set(out["generic"][f.name]) - set(wanted["generic"][f.name]) - {"_name"}
        out["defaults"][f.name] = {k: defaults[f.name][k] for k in sorted(lacking)}
for group, choices in wanted["components"].items():
    found = {}
    for name in choices:
        if group == "model":
            model = models.ARCH_MODEL_NAME_REGISTRY.get(name, name)
            dc = models.MODEL_DATACLASS_REGISTRY.get(name) or models.MODEL_DATACLASS_REGISTRY.get(model)
        elif group == "task":
            dc = tasks.TASK_DATACLASS_REGISTRY.get(name)
        else:
            dc = registry.REGISTRIES[group]["dataclass_registry"].get(name)
        if dc is not None:
            found[name] = names(dc)
    out["components"][group] = found
print(json.dumps(out))
"""


def our_names() -> dict:
    """This package's generic groups and component names (what the table must cover)."""
    sys.path.insert(0, str(ROOT))
    from fairseq.dataclass.configs import COMPONENT_GROUPS, GENERIC_GROUPS
    from fairseq.registry import ALL_REGISTRIES, import_builtin_components

    import_builtin_components()
    return {"generic": {g: sorted(f.name for f in dataclasses.fields(dc)) for g, dc in GENERIC_GROUPS.items()},
            "components": {g: sorted(ALL_REGISTRIES[g].choices()) for g in COMPONENT_GROUPS}}


def _words(names, indent: int) -> str:
    """A frozenset literal of ``names``, wrapped to 100 columns."""
    lines = textwrap.wrap(" ".join(sorted(names)), 100 - indent - 4)
    pad = " " * (indent + 4)
    return 'frozenset("""\n' + "".join(pad + line + "\n" for line in lines) + pad + '""".split())'


def render(table: dict) -> str:
    """The module's text: each distinct field set written once (architectures share their model's)."""
    head = ('"""The config keys fairseq 0.12.2 knows, per group and component (generated data).\n\n'
            "Written by ``scripts/gen_fairseq_keys.py`` from fairseq 0.12.2's dataclasses: the field\n"
            "names of each ``FairseqConfig`` node (``GENERIC``) and of the dataclass fairseq reads for\n"
            "each component name this package registers (``COMPONENTS[group][name]``; a name fairseq\n"
            "does not have, or has without a dataclass, is absent). Do not edit by hand; rerun the script.\n"
            '"""\n'
            "from typing import Any, Dict, FrozenSet\n\n")
    out = [head, "GENERIC: Dict[str, FrozenSet[str]] = {\n"]
    for group, fields in sorted(table["generic"].items()):
        out.append(f"    {group!r}: {_words(fields, 4)},\n")
    out.append("}\n\n")
    out.append("# The keys of fairseq's generic nodes that this package's lack, with fairseq's defaults\n"
               "# (resolved): added to a checkpoint's cfg for fairseq, which reads some of them.\n")
    out.append("GENERIC_DEFAULTS: Dict[str, Dict[str, Any]] = {\n")
    for group, values in sorted(table["defaults"].items()):
        body = pprint.pformat(values, width=92, sort_dicts=True)
        out.append(f"    {group!r}: " + body.replace("\n", "\n" + " " * (len(group) + 6)) + ",\n")
    out.append("}\n\n")
    shared = {}
    for group, found in sorted(table["components"].items()):
        for name, fields in sorted(found.items()):
            key = tuple(sorted(fields))
            if key not in shared:
                shared[key] = f"_{group.upper()}_{name.upper()}"
                out.append(f"{shared[key]} = {_words(fields, 0)}\n")
    out.append("\nCOMPONENTS: Dict[str, Dict[str, FrozenSet[str]]] = {\n")
    for group, found in sorted(table["components"].items()):
        out.append(f"    {group!r}: {{\n")
        for name, fields in sorted(found.items()):
            out.append(f"        {name!r}: {shared[tuple(sorted(fields))]},\n")
        out.append("    },\n")
    out.append("}\n")
    return "".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fairseq-python", required=True,
                    help="a Python interpreter with fairseq 0.12.2 installed")
    ap.add_argument("--out", default=str(TARGET), help="the module to write")
    args = ap.parse_args()
    wanted = our_names()
    proc = subprocess.run([args.fairseq_python, "-c", _PROBE], input=json.dumps(wanted),
                          capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"gen_fairseq_keys: {args.fairseq_python} could not list fairseq's fields: {last}",
              file=sys.stderr)
        return 1
    table = json.loads(proc.stdout.strip().splitlines()[-1])
    Path(args.out).write_text(render(table))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
