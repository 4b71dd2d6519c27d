#!/usr/bin/env bash
# What shared state costs per attempt: the same 100-attempt run of a
# trivial command (`retry -n 99 --wait 0 -- false`: it fails, so every
# attempt runs) with and without each --key option, on a file store in a
# temp dir. Prints a table: the run's median wall time and its CPU time,
# and the cost each option adds per attempt against the run without
# options (goal: <= 0.3 ms).
#
#   bash benches/store.sh                    # builds release once, uses hyperfine
#   RUNS=30 ROUNDS=5 bash benches/store.sh   # more runs per row, more rounds
#   STORE_IN=/dev/shm bash benches/store.sh  # the store on another file system
#
# On ext4 most of the cost is the rename: replacing a file by rename makes
# ext4 allocate and start writing the new file's blocks first (auto_da_alloc),
# which is what keeps a state without fsync intact after a power cut.
#
# Rows:
#   --circuit-break      admit + record: once per run, not per attempt
#   --rate small         10000/1ms: a short list of recent starts
#   --rate full          10000/1h with 9,900 starts already in the window:
#                        the largest state file (the worst case per attempt)
#   --concurrency        4 slots, uncontended
#   all                  the three together (rate full)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --quiet
bin="$CARGO_TARGET_DIR/release/retry"
runs="${RUNS:-20}"
attempts=100

work=$(mktemp -d)
store=$(mktemp -d -p "${STORE_IN:-${TMPDIR:-/tmp}}")
trap 'rm -rf "$work" "$store"' EXIT
chmod 700 "$store"

# A state file (layout: src/store/file.rs) with 9,900 starts within the
# last few milliseconds.
fill_full() {
    perl -e 'my $now = int(`date +%s%N` / 1000);
             print "RETRYST1", pack("V V Q<", 0, 9900, 0), pack("Q<*", map { $now - 9900 + $_ } 0 .. 9899)' \
        >"$store/full.state"
}
reset_cb() { rm -f "$store/cb.state"; }
noop() { :; }
export -f fill_full reset_cb noop
export store

base=("$bin" -q -n $((attempts - 1)) --wait 0 --state-store "file:$store")
cmd() { printf '%q ' "${base[@]}" "$@" false; }

declare -a names cmds prepares
add() { names+=("$1"); prepares+=("$2"); shift 2; cmds+=("$(cmd "$@")"); }
add "none" noop
add "--circuit-break" reset_cb --key cb --circuit-break 1000000
add "--rate small" noop --key small --rate 10000/1ms
add "--rate full" "fill_full" --key full --rate 10000/1h
add "--concurrency" noop --key conc --concurrency 4
add "all" "fill_full" --key full --circuit-break 1000000 --rate 10000/1h --concurrency 4

results="$work/results.tsv"
rounds="${ROUNDS:-3}"
# The machine may be shared: every row runs in each of several rounds and
# the best round's median counts (the cost without interference). CPU is
# user + system time of retry and its children.
if command -v hyperfine >/dev/null; then
    args=()
    for i in "${!names[@]}"; do args+=(--prepare "bash -c ${prepares[$i]}"); done
    for i in "${!names[@]}"; do args+=("${cmds[$i]}"); done
    for r in $(seq "$rounds"); do
        # -i: every attempt fails, so retry exits 1.
        hyperfine -N -i --style none --runs "$runs" --warmup 2 "${args[@]}" \
            --export-json "$work/round$r.json" >/dev/null 2>&1
    done
    for i in "${!names[@]}"; do
        jq -rs --argjson i "$i" --arg name "${names[$i]}" '
            map(.results[$i]) | min_by(.median)
            | [$name, .median * 1000, (.user + .system) * 1000] | @tsv' "$work"/round*.json >>"$results"
    done
    tool="hyperfine, best of $rounds rounds of $runs runs"
else
    TIMEFORMAT='%3R %3U %3S'
    for r in $(seq $((rounds * runs))); do
        for i in "${!names[@]}"; do
            bash -c "${prepares[$i]}"
            { time eval "${cmds[$i]}" >/dev/null 2>&1; } 2>>"$work/$i.times" || true
        done
    done
    for i in "${!names[@]}"; do
        sort -n "$work/$i.times" | awk -v name="${names[$i]}" '
            { wall[NR] = $1; cpu[NR] = $2 + $3 }
            END { m = int((NR + 1) / 2); printf "%s\t%s\t%s\n", name, wall[m] * 1000, cpu[m] * 1000 }' >>"$results"
    done
    tool="bash loop, median of $((rounds * runs)) interleaved runs"
fi

fs=$(stat -f -c %T "$store")
echo "retry shared state: $attempts attempts of 'false' per run, store on $fs ($tool; $(nproc) cores)"
printf '%-16s  %10s  %10s  %22s  %20s\n' option "wall ms" "cpu ms" "added wall/attempt ms" "added cpu/attempt ms"
awk -F'\t' -v n="$attempts" '
    NR == 1 { wall = $2; cpu = $3 }
    { printf "%-16s  %10.2f  %10.2f  %22.3f  %20.3f\n", $1, $2, $3, ($2 - wall) / n, ($3 - cpu) / n }
' "$results"
