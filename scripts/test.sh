#!/usr/bin/env bash
# Install (scripts/install.sh test) and run the whole test suite with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
# one pytest worker per core (PYTEST_WORKERS overrides); a test file stays on one worker, so its
# module fixtures (a 2-process training run, a data-bin) are built once
exec ${PYTHON:-python3} -m pytest tests -n "${PYTEST_WORKERS:-auto}" --dist loadfile "$@"
