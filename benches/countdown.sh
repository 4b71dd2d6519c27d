#!/usr/bin/env bash
# Does the terminal countdown move the wake-up time? Runs the same
# schedule (sleeps of 2.5s and 5s) with stderr on a pseudo-terminal
# (countdown shown, via script(1)) and on a pipe (no countdown), and
# prints how late each attempt started compared with the planned sleep.
#   benches/countdown.sh [path/to/retry]
set -euo pipefail
retry=${1:-target/release/retry}
retry=$(realpath "$retry")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
child="date +%s%N >> '$dir/starts'; exit 1"

late() {
    python3 - "$dir/starts" <<'PY'
import sys
t = [int(l) for l in open(sys.argv[1])]
planned = [2500, 5000]
# Attempt k+1 starts after attempt k ended plus the sleep; the attempts
# themselves take ~1-2 ms (sh startup), included in the figure.
print("  ".join(f"{(b - a) / 1e6 - p:+.2f}ms" for a, b, p in zip(t, t[1:], planned)))
PY
}

for round in 1 2 3; do
    rm -f "$dir/starts"
    script -qec "$retry -n 2 -w 2500ms -- sh -c \"$child\"" /dev/null > "$dir/tty" || true
    grep -q 'in 5s' "$dir/tty" || { echo "no countdown on the pty?"; exit 1; }
    printf 'pty  (countdown) round %s: late by ' "$round"; late
    rm -f "$dir/starts"
    "$retry" -n 2 -w 2500ms -- sh -c "$child" 2> /dev/null || true
    printf 'pipe (none)      round %s: late by ' "$round"; late
done
