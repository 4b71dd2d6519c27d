#!/usr/bin/env bash
# Installs the tools benches/run.sh compares retry with, and the ones it
# measures with: Debian's `retry` and `hyperfine`, `jq` (the script reads
# hyperfine's JSON with it), GNU `time` (peak RSS), and `attempt`
# (`cargo install attempt-cli`). Debian/Ubuntu, as root or with sudo.
#   bash benches/install-peers.sh
set -euo pipefail

sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi

if command -v apt-get >/dev/null; then
    $sudo apt-get update -qq
    # Debian's retry is the `retry` package (/usr/bin/retry).
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq retry hyperfine jq time
else
    echo "install-peers: no apt-get; install Debian's retry, hyperfine, jq and GNU time by hand" >&2
fi

if ! command -v attempt >/dev/null; then
    # Niced: it compiles for a minute or two.
    nice cargo install --locked attempt-cli || cargo install attempt-cli
fi
