#!/usr/bin/env bash
# Prepares a Debian 12 machine for edgefwd development and tests. Idempotent; quick when
# everything is already in place. Installs: mosquitto (+clients), Java 17, Maven (apt);
# .venv with requirements-dev.txt; the Rust extension (maturin develop --release) when the
# crate exists; Kafka's jars (Maven Central -> $EDGEFWD_CACHE or ~/.cache/edgefwd).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { echo "setup: $*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# rustup installs into ~/.cargo/bin (Debian's own rustc is too old for this workspace)
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

# ---- system packages (apt only when something is missing)
pkgs=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || pkgs+=(mosquitto)
command -v mosquitto_pub >/dev/null || pkgs+=(mosquitto-clients)
if ! { command -v java >/dev/null && java -version 2>&1 | grep -q 'version "17'; } \
   && [ ! -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]; then
  pkgs+=(openjdk-17-jdk-headless)
fi
command -v mvn >/dev/null || pkgs+=(maven)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
if [ ${#pkgs[@]} -gt 0 ]; then
  say "apt-get install ${pkgs[*]}"
  # Keep the Debian mosquitto service from starting: we only run our own instances.
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  [ -z "$added_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
else
  say "system packages present (mosquitto, java 17, maven)"
fi
if ! java -version 2>&1 | grep -q 'version "17'; then
  export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
  PATH="$JAVA_HOME/bin:$PATH"
fi
java -version 2>&1 | grep -q 'version "17' || { echo "setup: Java 17 not found" >&2; exit 1; }

# ---- Python venv (pip only when requirements-dev.txt changed)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
req_hash="$(sha256sum requirements-dev.txt | cut -d' ' -f1)"
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$req_hash" ]; then
  say "pip install -r requirements-dev.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$req_hash" > .venv/.requirements.sha256
else
  say "venv up to date"
fi

# ---- Rust extension (only once the crate exists)
if [ -f rust/Cargo.toml ]; then
  command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
  src_hash="$(cat Cargo.toml Cargo.lock pyproject.toml $(find rust -name '*.rs' -o -name Cargo.toml | sort) | sha256sum | cut -d' ' -f1)"
  if [ -f pyproject.toml ] && [ "$(cat .venv/.extension.sha256 2>/dev/null)" = "$src_hash" ] \
     && ls python/edgefwd/_core*.so >/dev/null 2>&1; then
    say "extension up to date"
  elif [ -f pyproject.toml ]; then
    say "maturin develop --release"
    locked=()
    [ -f Cargo.lock ] && locked=(--locked)
    log=".venv/maturin-develop.log"
    if ! VIRTUAL_ENV="$ROOT/.venv" .venv/bin/maturin develop --release "${locked[@]}" >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "setup: maturin develop failed (full log: $log)" >&2
      exit 1
    fi
    echo "$src_hash" > .venv/.extension.sha256
  else
    say "rust/Cargo.toml present but no pyproject.toml yet: extension not built"
  fi
else
  say "no rust/Cargo.toml yet: extension not built"
fi

# ---- Kafka jars (Maven runs only when the cached libs are incomplete)
say "kafka jars: $(.venv/bin/python -c 'import sys; sys.path.insert(0, "dev"); from edgefwd_dev.services import ensure_kafka_jars; print(ensure_kafka_jars())')"
say "done"
