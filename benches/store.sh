#!/usr/bin/env bash
# What shared state costs per attempt: the same 100-attempt run of a
# trivial command (`retry -n 99 --wait 0 -- false`: it fails, so every
# attempt runs) with and without each --key option, on a file store in a
# temp dir and on a local redis-server (127.0.0.1, started here on a free
# port, no persistence). Prints a table: the run's median wall time and its
# CPU time, and the cost each option adds per attempt against the run
# without options (goals: <= 0.3 ms on the file store; on Redis one round
# trip per store operation + <= 0.2 ms), then the round trip of a bare PING
# (redis-benchmark, one client) for reference.
#
#   bash benches/store.sh                    # builds release once, uses hyperfine
#   RUNS=30 ROUNDS=5 bash benches/store.sh   # more runs per row, more rounds
#   STORE_IN=/dev/shm bash benches/store.sh  # the store on another file system
#   NO_REDIS=1 bash benches/store.sh         # the file store only
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
#   redis ...            the same on Redis. Store operations per attempt:
#                        --rate 1 (one script), --concurrency 2 (take the
#                        slot, give it back), all 3; --circuit-break 2 per
#                        run. A run also connects once (and PINGs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --quiet
bin="$CARGO_TARGET_DIR/release/retry"
runs="${RUNS:-20}"
attempts=100

work=$(mktemp -d)
store=$(mktemp -d -p "${STORE_IN:-${TMPDIR:-/tmp}}")
redis_pid=
cleanup() {
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
    rm -rf "$work" "$store"
}
trap cleanup EXIT
chmod 700 "$store"

port=
if [ -z "${NO_REDIS:-}" ]; then
    command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server), or NO_REDIS=1" >&2; exit 1; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir "$work/redis"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/redis" \
        --loglevel warning --logfile "$work/redis/log" &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi

# A state file (layout: src/store/file.rs) with 9,900 starts within the
# last few milliseconds.
fill_full() {
    perl -e 'my $now = int(`date +%s%N` / 1000);
             print "RETRYST1", pack("V V Q<", 0, 9900, 0), pack("Q<*", map { $now - 9900 + $_ } 0 .. 9899)' \
        >"$store/full.state"
}
reset_cb() { rm -f "$store/cb.state"; }
noop() { :; }
# The same on Redis: 9,900 starts in the sorted set, by the server's clock.
redis_fill_full() {
    redis-cli -p "$port" eval "
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        redis.call('DEL', KEYS[1])
        for i = 0, 9899 do
          local at = string.format('%.0f', now - 9900 + i)
          redis.call('ZADD', KEYS[1], at, at .. ':fill:' .. i)
        end" 1 retry:{key:full}:starts >/dev/null
}
redis_reset_cb() { redis-cli -p "$port" del retry:{key:cb}:circuit >/dev/null; }
export -f fill_full reset_cb noop redis_fill_full redis_reset_cb
export store port

base=("$bin" -q -n $((attempts - 1)) --wait 0)
url="file:$store"
cmd() { printf '%q ' "${base[@]}" --state-store "$url" "$@" false; }

declare -a names cmds prepares
add() { names+=("$1"); prepares+=("$2"); shift 2; cmds+=("$(cmd "$@")"); }
add "none" noop
add "--circuit-break" reset_cb --key cb --circuit-break 1000000
add "--rate small" noop --key small --rate 10000/1ms
add "--rate full" "fill_full" --key full --rate 10000/1h
add "--concurrency" noop --key conc --concurrency 4
add "all" "fill_full" --key full --circuit-break 1000000 --rate 10000/1h --concurrency 4
if [ -n "$port" ]; then
    url="redis://127.0.0.1:$port"
    add "redis --circuit-break" redis_reset_cb --key cb --circuit-break 1000000
    add "redis --rate small" noop --key small --rate 10000/1ms
    add "redis --rate full" redis_fill_full --key full --rate 10000/1h
    add "redis --concurrency" noop --key conc --concurrency 4
    add "redis all" redis_fill_full --key full --circuit-break 1000000 --rate 10000/1h --concurrency 4
fi

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
printf '%-22s  %10s  %10s  %22s  %20s\n' option "wall ms" "cpu ms" "added wall/attempt ms" "added cpu/attempt ms"
awk -F'\t' -v n="$attempts" '
    NR == 1 { wall = $2; cpu = $3 }
    { printf "%-22s  %10.2f  %10.2f  %22.3f  %20.3f\n", $1, $2, $3, ($2 - wall) / n, ($3 - cpu) / n }
' "$results"
if [ -n "$port" ]; then
    # One client, one request at a time: the bare round trip each store
    # operation pays at least once.
    rtt=$(redis-benchmark -p "$port" -c 1 -n 20000 -t ping --csv 2>/dev/null |
        awk -F'"' '/PING_MBULK/ { print $6 }')
    echo "redis PING round trip (redis-benchmark, 1 client, avg): ${rtt:-?} ms; $(redis-server --version | cut -d' ' -f1-3)"
fi
