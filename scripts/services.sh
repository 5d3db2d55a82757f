#!/usr/bin/env bash
# Start/stop a Mosquitto and a Kafka for a human, left running in the background.
#   scripts/services.sh up|down|status [--dir /tmp/edgefwd-dev]
# Ports are free ones chosen at the first `up` (1883 / 9092 when free) and kept in
# DIR/services.json, so `down` then `up` reuses them (and Kafka's data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
case "${1:-}" in
  up|down|status) ;;
  *) echo "usage: $0 up|down|status [--dir DIR]" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || bash scripts/setup.sh
PYTHONPATH="$ROOT/dev${PYTHONPATH:+:$PYTHONPATH}" exec .venv/bin/python -m edgefwd_dev "$@"
