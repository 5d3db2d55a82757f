#!/usr/bin/env bash
# The long form of the crash loops (issue 5): the agent SIGKILLed at random moments at
# least 50 times, in both variants (queue audit with Kafka unreachable; delivery to a real
# Kafka), against real Mosquitto and Kafka. CI runs the short form (12 kills) inside
# `scripts/test.sh`.
#
#   scripts/crash-loop.sh                 # 60 kills per variant
#   scripts/crash-loop.sh 200             # 200 kills per variant
#   EDGEFWD_SEED=1234 scripts/crash-loop.sh   # replay the kill timings of a printed seed
#   EDGEFWD_CRASH_LOOP_RATE=5000 scripts/crash-loop.sh   # publish rate (msg/s), default 3000
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KILLS="${1:-${EDGEFWD_CRASH_LOOP_KILLS:-60}}"
if [ "$KILLS" -lt 50 ]; then
  echo "crash-loop: the long form is at least 50 kills (asked for $KILLS)" >&2
  exit 2
fi
export EDGEFWD_CRASH_LOOP_KILLS="$KILLS"
[ -x .venv/bin/python ] || bash scripts/setup.sh
echo "crash-loop: $KILLS kills per variant"
exec .venv/bin/python -m pytest -q -s -ra --durations=5 tests/durability/test_crash_loop.py
