#!/usr/bin/env bash
# The main job, shown end to end on this machine: a simulated fleet publishes MQTT to a
# local Mosquitto, the real edgefwd agent queues it on disk and forwards it to Kafka,
# Kafka goes down for a while and comes back, and an audit reads Kafka back to prove that
# every acknowledged message arrived, once, in order (docs/demo.md explains the output).
#
#   bash scripts/demo.sh            ~2-3 minutes (plus the first set-up)
#   bash scripts/demo.sh --short    ~40 s, what CI runs
#   bash scripts/demo.sh --help     all options (--dir, --json-summary, --no-color, ...)
#
# Runs scripts/setup.sh first (idempotent: apt, venv, Rust extension, Kafka jars; quick
# when everything is in place). EDGEFWD_DEMO_SKIP_SETUP=1 skips it.
# Exit status: 0 nothing lost and order kept; 1 audit failed; 3 the demo could not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

if [ "${EDGEFWD_DEMO_SKIP_SETUP:-0}" != 1 ]; then
  echo "== Set-up (scripts/setup.sh: idempotent, quick when everything is there) =="
  bash scripts/setup.sh
fi
# Kafka needs Java 17; setup.sh installs it but cannot change the default java for us.
if ! { command -v java >/dev/null && java -version 2>&1 | grep -q 'version "17'; } \
   && [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]; then
  export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
  PATH="$JAVA_HOME/bin:$PATH"
fi
export PYTHONPATH="$ROOT/dev${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m edgefwd_dev.demo "$@"
