#!/usr/bin/env python3
"""Regenerate docs/components.md from the config dataclasses."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fairseq.dataclass.help import markdown_reference  # noqa: E402

if __name__ == "__main__":
    path = os.path.join(ROOT, "docs", "components.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown_reference())
    print(f"wrote {path}")
