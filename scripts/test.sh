#!/usr/bin/env bash
# The whole test suite: lint (ruff) and types (mypy --strict) first, then pytest: unit
# (Hypothesis) + integration (private Mosquitto and PostgreSQL processes started by the
# fixtures).  Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
ruff check . || { echo "test.sh: ruff check failed" >&2; exit 1; }
ruff format --check . || { echo "test.sh: ruff format --check failed (run: ruff format .)" >&2; exit 1; }
mypy || { echo "test.sh: mypy failed" >&2; exit 1; }
# Compile the numba kernels (decoder, fence query, detection) into numba's cache once, as an
# install would: a test that starts `fleetwatch run` then waits for its start-up, not for ~30 s
# of cold compiles on a loaded 2-core machine.
python -c "from ingest.nmea import warm_up as d; from geofence import warm_up as f; from schedule.warm import warm_up as s; d(); f(); s()" \
  || { echo "test.sh: compiling the numba kernels failed" >&2; exit 1; }
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
