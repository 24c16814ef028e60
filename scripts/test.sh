#!/usr/bin/env bash
# Install (scripts/install.sh test) and run the whole test suite with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec ${PYTHON:-python3} -m pytest tests "$@"
