#!/usr/bin/env bash
# How fast does a drain get through due jobs? Queues N jobs of `true`
# (default 1,000, all due), times `retry --drain` over them, and compares
# with running `true` N times from a shell loop (fork + exec each time).
# Goal: the drain within 1.5x of the loop. Then the same on a Redis queue
# (the fleet queue): jobs per second with 1 and 4 drains (see below).
#   cargo build --release && benches/queue.sh [path/to/retry] [N]
set -euo pipefail
retry=$(realpath "${1:-target/release/retry}")
n=${2:-1000}
true_bin=$(type -P true)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
q=$dir/q

# One real job as the template (queued by retry itself), then N copies
# with their own ids and `true` as the command: writing 1,000 jobs through
# retry would time the queueing, not the drain.
"$retry" -q -n 0 --wait 0 --queue "$q" -- "$(type -P false)" || [ $? -eq 75 ]
template=$(ls "$q"/*.job)
cat > "$dir/seed.py" <<'PY'
import json, os, sys
template, q, n, true_bin = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
job = json.load(open(template))
for name in os.listdir(q):
    if name.endswith(".job"):
        os.remove(os.path.join(q, name))
job["argv"] = [true_bin]
for i in range(n):
    job["id"] = "20200101T000000.%06dZ-%08x" % (i, i)
    path = os.path.join(q, job["id"] + ".job")
    with open(path, "w") as f:
        json.dump(job, f)
    os.chmod(path, 0o600)
PY
cp "$template" "$dir/template.json"
seed="python3 '$dir/seed.py' '$dir/template.json' '$q' $n '$true_bin'"

echo "== draining $n due jobs of true vs $n runs of true from a shell loop"
hyperfine --style basic --warmup 1 --runs 5 --export-json "$dir/times.json" \
    --prepare "$seed" \
    -n "retry --drain ($n jobs)" "'$retry' --drain '$q'" \
    -n "shell loop ($n x $true_bin)" "bash -c 'for i in \$(seq $n); do $true_bin; done'"
python3 - "$dir/times.json" "$n" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
n = int(sys.argv[2])
drain, loop = [x for x in r.values()]
ratio = drain["mean"] / loop["mean"]
print(f"per job: drain {drain['mean'] / n * 1e6:.0f} us, shell loop {loop['mean'] / n * 1e6:.0f} us")
print(f"drain / loop = {ratio:.2f}x (goal <= 1.5x): {'ok' if ratio <= 1.5 else 'MISSED'}")
PY

# ---------------------------------------------------------------------------
# The fleet queue: jobs drained per second from a local redis-server
# (127.0.0.1, started here on a free port, no persistence), with 1 drain
# and with 4 drains at once. Goals: >= 500 jobs/s for `true` on one drain;
# on jobs that sleep 50 ms, 4 drains >= 3x one drain. Skip with NO_REDIS=1.
#   JOBS_TRUE=1000 JOBS_SLEEP=100 benches/queue.sh
[ -n "${NO_REDIS:-}" ] && exit 0
command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server), or NO_REDIS=1" >&2; exit 1; }
n_true=${JOBS_TRUE:-1000}
n_sleep=${JOBS_SLEEP:-100}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$dir/redis"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir/redis" \
    --loglevel warning --logfile "$dir/redis/log" &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
url="redis://127.0.0.1:$port#bench"

# One real job as the template, then N copies with their own ids written
# straight into Redis (the key layout of src/queue/redis.rs), all due.
"$retry" -q -n 0 --wait 0 --queue "$url" -- "$(type -P false)" || [ $? -eq 75 ]
id=$(redis-cli -p "$port" zrange retry:{queue:bench}:due 0 0)
redis-cli -p "$port" --raw hget "retry:{queue:bench}:job:$id" doc > "$dir/redis-template.json"
cat > "$dir/redis-seed.py" <<'PY'
import json, subprocess, sys
template, port, n, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
job = json.load(open(template))
job["argv"] = argv
def resp(*words):
    out = b"*%d\r\n" % len(words)
    for w in words:
        w = w if isinstance(w, bytes) else str(w).encode()
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    return out
cmds = [resp("FLUSHDB")]
for i in range(n):
    job["id"] = "20200101T000000.%06dZ-%08x" % (i, i)
    key = "retry:{queue:bench}:job:" + job["id"]
    score = 1577836800000000 + i
    cmds.append(resp("HMSET", key, "doc", json.dumps(job), "due", score, "claim", 0, "holder", ""))
    cmds.append(resp("ZADD", "retry:{queue:bench}:due", score, job["id"]))
subprocess.run(["redis-cli", "-p", port, "--pipe"], input=b"".join(cmds), check=True, stdout=subprocess.DEVNULL)
PY
seed_redis() { echo "python3 '$dir/redis-seed.py' '$dir/redis-template.json' $port $1 ${*:2}"; }
drains() { echo "bash -c 'for i in \$(seq $1); do \"$retry\" --drain \"$url\" & done; wait'"; }

echo
echo "== the fleet queue on Redis: $n_true due jobs of true, $n_sleep of sleep 0.05, by 1 and 4 drains"
hyperfine --style basic --warmup 1 --runs 5 --export-json "$dir/redis-true.json" \
    --prepare "$(seed_redis "$n_true" "$true_bin")" \
    -n "1 drain, $n_true x true" "$(drains 1)" \
    -n "4 drains, $n_true x true" "$(drains 4)"
hyperfine --style basic --runs 3 --export-json "$dir/redis-sleep.json" \
    --prepare "$(seed_redis "$n_sleep" "$(type -P sleep)" 0.05)" \
    -n "1 drain, $n_sleep x sleep 0.05" "$(drains 1)" \
    -n "4 drains, $n_sleep x sleep 0.05" "$(drains 4)"
python3 - "$dir/redis-true.json" "$dir/redis-sleep.json" "$n_true" "$n_sleep" <<'PY'
import json, sys
def rates(path, n):
    return [n / r["mean"] for r in json.load(open(path))["results"]]
t1, t4 = rates(sys.argv[1], int(sys.argv[3]))
s1, s4 = rates(sys.argv[2], int(sys.argv[4]))
print(f"true:       1 drain {t1:6.0f} jobs/s, 4 drains {t4:6.0f} jobs/s (goal: 1 drain >= 500): {'ok' if t1 >= 500 else 'MISSED'}")
print(f"sleep 50ms: 1 drain {s1:6.1f} jobs/s, 4 drains {s4:6.1f} jobs/s = {s4 / s1:.2f}x (goal >= 3x): {'ok' if s4 >= 3 * s1 else 'MISSED'}")
PY
