#!/usr/bin/env bash
# The live demo: a private broker and database (unless configured), a simulated fleet
# publishing over MQTT, fleetwatch ingesting, live counts on the terminal.  Ctrl-C stops it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec fleetwatch demo "$@"
