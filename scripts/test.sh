#!/usr/bin/env bash
# Everything CI runs: setup, Rust tests, then the Python tests against real servers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

if [ -f Cargo.toml ]; then
  echo "test: cargo test --workspace --locked"
  cargo test --workspace --locked
fi

# Arguments, if any, replace the default target: scripts/test.sh tests/services -k kafka
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(tests)
echo "test: pytest ${args[*]}"
rc=0
.venv/bin/python -m pytest -q -ra --durations=15 "${args[@]}" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
