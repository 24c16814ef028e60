#!/usr/bin/env bash
# Install (scripts/install.sh test) and run the whole test suite with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
# lint first (seconds): the layer contracts in setup.cfg (no upward import, no cycle) and ruff's
# small rule set in pyproject.toml
${PYTHON:-python3} -c "from importlinter.cli import lint_imports_command; lint_imports_command()" --no-cache
${PYTHON:-python3} -m ruff check fairseq fairseq_cli tests scripts benchmarks
# one pytest worker per core (PYTEST_WORKERS overrides); a test file stays on one worker, so its
# module fixtures (a 2-process training run, a data-bin) are built once
exec ${PYTHON:-python3} -m pytest tests -n "${PYTEST_WORKERS:-auto}" --dist loadfile "$@"
