#!/usr/bin/env bash
# The whole test suite: lint (ruff) and types (mypy --strict) first, then pytest: unit
# (Hypothesis) + integration (private Mosquitto and PostgreSQL processes started by the
# fixtures).  Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
ruff check . || { echo "test.sh: ruff check failed" >&2; exit 1; }
mypy || { echo "test.sh: mypy failed" >&2; exit 1; }
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
