#!/usr/bin/env bash
# Install fairseq (editable) with what every README command needs, the subword libraries of the
# `bpe` extra included (scripts/demo.sh --bpe). On a machine without an NVIDIA GPU, torch is
# installed first as the CPU build, so no step can pull a multi-GB CUDA build.
#   bash scripts/install.sh            # library + console scripts + subword models
#   bash scripts/install.sh test       # ... plus the test requirements
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PYTHON:-python3} -m pip"
if ! ${PYTHON:-python3} -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        $PIP install -q "torch==2.13.0"
    else
        $PIP install -q "torch==2.13.0+cpu"
    fi
fi
extras="[bpe]"
[ "${1:-}" = "test" ] && extras="[bpe,test]"
$PIP install -q -e ".${extras}"
