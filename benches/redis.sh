#!/usr/bin/env bash
# Redis as fleets run it, side by side in one run: the store's added cost
# per attempt (all three --key options) and the fleet queue's jobs/s with
# one drain, on a plain server, a TLS server (rediss://, verified against
# a CA made here with openssl) and a Redis Cluster (three masters, through
# a node that does not serve the key, so the first command is redirected).
# Everything runs on 127.0.0.1: servers started here on free ports, no
# persistence, stopped at the end.
#
#   bash benches/redis.sh                 # builds the release once; needs hyperfine
#   RUNS=30 ROUNDS=5 JOBS=1000 bash benches/redis.sh
#
# Rows:
#   store    `retry -q -n 99 --wait 0 --key K --circuit-break 1000000
#            --rate 10000/1h --concurrency 4 --state-store URL false` against
#            the same run without the options; (difference) / 100 attempts.
#   queue    JOBS due jobs of `true` seeded straight into the queue's keys,
#            drained by one `retry --drain`; jobs / mean time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin="$PWD/target/release/retry"
runs="${RUNS:-20}"
jobs="${JOBS:-500}"
command -v hyperfine >/dev/null || { echo "hyperfine is missing (benches/install-peers.sh)" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
server() { # name, then redis-server arguments
    local name=$1; shift
    mkdir -p "$dir/$name"
    redis-server "$@" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir/$name" \
        --loglevel warning --logfile "$dir/$name/log" &
    pids+=($!)
}

# A CA and a server certificate for localhost.
(
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
        -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
        -extfile server.ext 2>/dev/null
)

plain=$(free_port)
server plain --port "$plain"
tls=$(free_port)
server tls --port 0 --tls-port "$tls" --tls-cert-file "$dir/server.pem" --tls-key-file "$dir/server.key" \
    --tls-ca-cert-file "$dir/ca.pem" --tls-auth-clients no
cluster=()
for i in 1 2 3; do
    p=$(free_port)
    # The cluster bus listens on PORT + 10000.
    while [ "$p" -gt 55000 ]; do p=$(free_port); done
    cluster+=("$p")
    server "node$p" --port "$p" --cluster-enabled yes --cluster-node-timeout 1000 --cluster-config-file nodes.conf
done
for p in "$plain" "${cluster[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
for _ in $(seq 100); do
    redis-cli --tls --cacert "$dir/ca.pem" -h localhost -p "$tls" ping >/dev/null 2>&1 && break
    sleep 0.05
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster[@]}") --cluster-yes >/dev/null
for _ in $(seq 200); do
    redis-cli -p "${cluster[0]}" cluster info | grep -q cluster_state:ok && break
    sleep 0.05
done
sleep 1

# The master that serves a key, and one that does not.
owner() { redis-cli -p "${cluster[0]}" cluster nodes | python3 -c '
import sys
slot = int(sys.argv[1])
for line in sys.stdin:
    f = line.split()
    if "master" not in f[2]:
        continue
    for r in f[8:]:
        lo, _, hi = r.partition("-")
        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
            print(f[1].split("@")[0].split(":")[1])
' "$(redis-cli -p "${cluster[0]}" cluster keyslot "$1")"; }
other() { local o; o=$(owner "$1"); for p in "${cluster[@]}"; do [ "$p" != "$o" ] && { echo "$p"; return; }; done; }

tls_args=(--tls-ca "$dir/ca.pem")
declare -A url cli extra
url[plain]="redis://127.0.0.1:$plain"; cli[plain]="redis-cli -p $plain"; extra[plain]=""
url[tls]="rediss://localhost:$tls"; cli[tls]="redis-cli --tls --cacert $dir/ca.pem -h localhost -p $tls"
extra[tls]="--tls-ca $dir/ca.pem"
url[cluster]="redis://127.0.0.1:$(other 'retry:{key:bench}:x')"
cli[cluster]="redis-cli -p $(owner 'retry:{queue:bench}:due')"; extra[cluster]=""
qurl_cluster="redis://127.0.0.1:$(other 'retry:{queue:bench}:due')"

rounds="${ROUNDS:-3}"
echo "== store: added cost per attempt of --circuit-break, --rate and --concurrency together"
echo "   (best of $rounds interleaved rounds of $runs runs each: the machine may be shared)"
args=(-N -i --style none --runs "$runs" --warmup 2)
args+=(-n none "$bin -q -n 99 --wait 0 false")
for f in plain tls cluster; do
    args+=(-n "$f" "$bin -q -n 99 --wait 0 ${extra[$f]} --key bench --circuit-break 1000000 --rate 10000/1h --concurrency 4 --state-store ${url[$f]} false")
done
for r in $(seq "$rounds"); do
    hyperfine "${args[@]}" --export-json "$dir/store$r.json" >/dev/null 2>&1
done
python3 - "$dir"/store*.json <<'PY'
import json, sys
best = {}
for path in sys.argv[1:]:
    for x in json.load(open(path))["results"]:
        best[x["command"]] = min(best.get(x["command"], 1e9), x["median"])
base = best["none"]
for f in ["plain", "tls", "cluster"]:
    m = best[f]
    print(f"{f:8s} run of 100 attempts {m * 1000:7.1f} ms (none {base * 1000:.1f} ms): {(m - base) * 1000 / 100:+.3f} ms per attempt")
PY

echo "== fleet queue: $jobs due jobs of true, one drain ($runs runs each)"
"$bin" -q -n 0 --wait 0 --queue "${url[plain]}#bench" -- "$(type -P false)" || [ $? -eq 75 ]
id=$(redis-cli -p "$plain" zrange 'retry:{queue:bench}:due' 0 0)
redis-cli -p "$plain" --raw hget "retry:{queue:bench}:job:$id" doc >"$dir/template.json"
cat >"$dir/seed.py" <<'PY'
import json, subprocess, sys
template, n, cli = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
job = json.load(open(template))
job["argv"] = ["true"]
def resp(*words):
    out = b"*%d\r\n" % len(words)
    for w in words:
        w = w if isinstance(w, bytes) else str(w).encode()
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    return out
cmds = [resp("DEL", "retry:{queue:bench}:due", "retry:{queue:bench}:leased")]
for i in range(n):
    job["id"] = "20200101T000000.%06dZ-%08x" % (i, i)
    key = "retry:{queue:bench}:job:" + job["id"]
    score = 1577836800000000 + i
    cmds.append(resp("HSET", key, "doc", json.dumps(job), "due", score, "claim", 0, "holder", ""))
    cmds.append(resp("ZADD", "retry:{queue:bench}:due", score, job["id"]))
subprocess.run(cli + ["--pipe"], input=b"".join(cmds), check=True, stdout=subprocess.DEVNULL)
PY
args=(--style none --runs "$runs" --warmup 1 --export-json "$dir/queue.json")
for f in plain tls cluster; do
    q="${url[$f]}#bench"
    [ "$f" = cluster ] && q="$qurl_cluster#bench"
    args+=(--prepare "python3 $dir/seed.py $dir/template.json $jobs '${cli[$f]}'")
    args+=(-n "$f" "$bin ${extra[$f]} --drain $q")
done
hyperfine "${args[@]}" >/dev/null
python3 - "$dir/queue.json" "$jobs" <<'PY'
import json, sys
n = int(sys.argv[2])
for x in json.load(open(sys.argv[1]))["results"]:
    print(f"{x['command']:8s} {n / x['mean']:6.0f} jobs/s ({x['mean'] * 1000 / n:.2f} ms per job)")
PY
echo "($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $(redis-server --version | cut -d' ' -f1-3))"
