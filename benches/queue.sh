#!/usr/bin/env bash
# How fast does a drain get through due jobs? Queues N jobs of `true`
# (default 1,000, all due), times `retry --drain` over them, and compares
# with running `true` N times from a shell loop (fork + exec each time).
# Goal: the drain within 1.5x of the loop.
#   benches/queue.sh [path/to/retry] [N]
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
