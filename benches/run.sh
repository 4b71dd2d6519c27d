#!/usr/bin/env bash
# Benchmarks retry next to the tools people use today and prints one table.
#
#   bash benches/run.sh            # builds the static release, then measures
#   bash benches/run.sh PATH       # measures the retry binary at PATH
#
# Each figure is measured side by side with its reference in the same run,
# in ROUNDS interleaved rounds (this machine is shared and noisy): a ratio
# is given as "median (min)" — the median over rounds of each round's
# median-based ratio, and the ratio of the best times of all rounds.
# Debian's `retry` and `attempt` (benches/install-peers.sh installs them)
# get the same rows when present. Needs hyperfine, GNU time and bash.
#
# Knobs (environment): ROUNDS=5, SIZE_MIB=1024 (the throughput rows),
# ATTEMPTS=10000 (the memory row), SKIP_BIG=1 skips the 1 GiB rows.
#
# The portable process path (no pidfds: kernels before 5.4, seccomp
# policies) gets its own failing-attempt and memory rows, measured under
# the seccomp filter the tests use (tests/fixtures/no-pidfd.c, built with
# cc), next to a `sh` loop under the same filter.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
ATTEMPTS=${ATTEMPTS:-10000}
SKIP_BIG=${SKIP_BIG:-0}

die() { echo "benches/run.sh: $*" >&2; exit 1; }
command -v hyperfine >/dev/null || die "needs hyperfine (bash benches/install-peers.sh)"
[ -x /usr/bin/time ] || die "needs GNU time at /usr/bin/time (bash benches/install-peers.sh)"

if [ $# -ge 1 ]; then
    R=$(realpath "$1")
else
    # The build README's install command produces: static, non-PIE.
    host=$(rustc -vV | sed -n 's/^host: //p')
    echo "building the static release for $host ..." >&2
    RUSTFLAGS='-C target-feature=+crt-static -C relocation-model=static' \
        cargo build --release --locked --target "$host" >&2
    R=$PWD/target/$host/release/retry
fi
[ -x "$R" ] || die "no retry binary at $R"

DEB=/usr/bin/retry
if ! { [ -x "$DEB" ] && "$DEB" -h 2>&1 | grep -q 'Repeat command until'; }; then DEB=""; fi
ATT=$(command -v attempt || true)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/retry-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Big inputs live in RAM when possible, so the disk is not what is measured.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then DATA=$(mktemp -d /dev/shm/retry-bench.XXXXXX); else DATA=$WORK; fi
trap 'rm -rf "$WORK" "$DATA"' EXIT

# ---------------------------------------------------------------- helpers

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
minimum() { sort -g | head -1; }
# fmt X DIGITS
fmt() { awk -v x="$1" -v d="${2:-2}" 'BEGIN {if (x == "nan" || x == "") print "n/a"; else printf "%.*f\n", d, x}'; }
# ratio A B  → A/B
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0 || a == "nan" || b == "nan") print "nan"; else printf "%.4f\n", a/b}'; }
# le X LIMIT → yes/no
le() { awk -v x="$1" -v l="$2" 'BEGIN {print (x != "nan" && x <= l) ? "yes" : "NO"}'; }
ge() { awk -v x="$1" -v l="$2" 'BEGIN {print (x != "nan" && x >= l) ? "yes" : "NO"}'; }

# hf NAME... -- hyperfine args: one round; leaves "$WORK/hf.csv" with
# name,median,min in microseconds.
hf() {
    hyperfine --style none --export-csv "$WORK/raw.csv" "$@" >/dev/null 2>"$WORK/hf.err" \
        || { cat "$WORK/hf.err" >&2; die "hyperfine failed"; }
    awk -F, 'NR > 1 {printf "%s,%.1f,%.1f\n", $1, $4 * 1e6, $7 * 1e6}' "$WORK/raw.csv" >"$WORK/hf.csv"
}
# col NAME FIELD(2=median,3=min) from the last round
col() { awk -F, -v n="$1" -v f="$2" '$1 == n {print $f}' "$WORK/hf.csv"; }

ROWS=()
# row FIGURE RETRY REFERENCE RATIO GOAL MET
row() { # a `|` inside a cell is escaped, so the table stays a Markdown table
    local cells=() c
    for c in "$@"; do cells+=("${c//|/\\|}"); done
    ROWS+=("$(printf '| %s | %s | %s | %s | %s | %s |' "${cells[@]}")")
}
say() { echo "… $*" >&2; }

# ---------------------------------------------------------------- start overhead

TMPFS=$(findmnt -n -o FSTYPE -T "${TMPDIR:-/tmp}" 2>/dev/null || stat -f -c %T "${TMPDIR:-/tmp}")
if [ "$TMPFS" = ext4 ] && findmnt -n -o OPTIONS -T "${TMPDIR:-/tmp}" 2>/dev/null | grep -qw discard; then
    TMPFS="ext4 with discard"
fi
say "start overhead ($ROUNDS rounds; TMPDIR on $TMPFS)"
: >"$WORK/start"
# The floor for any wrapper, when a C compiler is at hand: a static
# posix_spawn + waitpid, nothing else.
BARE=""
if command -v cc >/dev/null; then
    printf '%s\n' '#include <spawn.h>' '#include <sys/wait.h>' 'extern char **environ;' \
        'int main(int c, char **v) { pid_t p; int s; (void)c;' \
        '  if (posix_spawn(&p, v[1], 0, 0, v + 1, environ)) return 127;' \
        '  waitpid(p, &s, 0); return WEXITSTATUS(s); }' >"$WORK/bare.c"
    cc -O2 -static -o "$WORK/bare" "$WORK/bare.c" 2>/dev/null && BARE=$WORK/bare
fi
# The seccomp filter that refuses pidfds (the portable path's rows).
NOPIDFD=""
if command -v cc >/dev/null && cc -O2 -o "$WORK/no-pidfd" tests/fixtures/no-pidfd.c 2>/dev/null; then
    NOPIDFD=$WORK/no-pidfd
fi
# One round: true, retry and the peers; appends "TAG TOOL FIELD OVERHEAD".
start_round() {
    local tag=$1 cmds=(-n true /bin/true -n retry "$R -- /bin/true" -n fg "$R --foreground -- /bin/true")
    [ -n "$DEB" ] && cmds+=(-n debian "$DEB -t 1 -- /bin/true")
    [ -n "$ATT" ] && cmds+=(-n attempt "$ATT -a 1 fixed -- /bin/true")
    [ -n "$BARE" ] && cmds+=(-n bare "$BARE /bin/true")
    hf -N --warmup 30 --runs 300 "${cmds[@]}"
    for t in retry fg debian attempt bare; do
        for f in 2 3; do
            base=$(col true "$f"); v=$(col "$t" "$f")
            [ -n "$v" ] && echo "$tag $t $f $(awk -v a="$v" -v b="$base" 'BEGIN {print a - b}')" >>"$WORK/start"
        done
    done
}
# A plain run touches no disk (the state dir is opt-in, --temp-state), so
# TMPDIR should not matter; when it is not a tmpfs, a second series on
# tmpfs shows that it does not.
SHM=""
if [ "$TMPFS" != tmpfs ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then SHM=/dev/shm; fi
for ((i = 0; i < ROUNDS; i++)); do
    start_round default
    [ -n "$SHM" ] && TMPDIR=$SHM start_round tmpfs
done
# overhead TAG TOOL FIELD → median over rounds (µs)
ovh() { awk -v g="$1" -v t="$2" -v f="$3" '$1 == g && $2 == t && $3 == f {print $4}' "$WORK/start" | median; }
ovh_min() { awk -v g="$1" -v t="$2" -v f="$3" '$1 == g && $2 == t && $3 == f {print $4}' "$WORK/start" | minimum; }
start_ratio() { # TAG TOOL REF → median of per-round ratios, ratio of the best overheads
    local med mn
    med=$(paste <(awk -v g="$1" -v t="$2" '$1 == g && $2 == t && $3 == 2 {print $4}' "$WORK/start") \
        <(awk -v g="$1" -v t="$3" '$1 == g && $2 == t && $3 == 2 {print $4}' "$WORK/start") | awk '{print $1 / $2}' | median)
    mn=$(ratio "$(ovh_min "$1" "$2" 3)" "$(ovh_min "$1" "$3" 3)")
    echo "$med $mn"
}
if [ -n "$DEB" ]; then
    read -r sm smin < <(start_ratio default retry debian)
    # The floor next to each start-up figure: a bare wrapper, same rounds.
    floor() { [ -n "$BARE" ] && echo "; floor (bare wrapper) $(fmt "$(ovh "$1" bare 2)" 0) µs = $(fmt "$(start_ratio "$1" bare debian | cut -d' ' -f1)")×"; }
    row "start overhead: \`retry -- /bin/true\` minus \`/bin/true\` (TMPDIR on $TMPFS)" "$(fmt "$(ovh default retry 2)" 0) µs" \
        "Debian retry $(fmt "$(ovh default debian 2)" 0) µs$(floor default)" "$(fmt "$sm") ($(fmt "$smin"))" "≤ 0.8×" "$(le "$sm" 0.8)"
    if [ -n "$SHM" ]; then
        read -r tm tmin < <(start_ratio tmpfs retry debian)
        row "… the same with TMPDIR=$SHM (tmpfs)" "$(fmt "$(ovh tmpfs retry 2)" 0) µs" \
            "Debian retry $(fmt "$(ovh tmpfs debian 2)" 0) µs$(floor tmpfs)" "$(fmt "$tm") ($(fmt "$tmin"))" "≤ 0.8×" "$(le "$tm" 0.8)"
    fi
    if [ -n "$BARE" ]; then
        read -r bm bmin < <(start_ratio default bare debian)
        row "… a bare static C wrapper (\`posix_spawn\` + \`waitpid\`: the floor)" "$(fmt "$(ovh default bare 2)" 0) µs" \
            "Debian retry" "$(fmt "$bm") ($(fmt "$bmin"))" "" ""
    fi
    read -r gm gmin < <(start_ratio default fg debian)
    row "… \`retry --foreground -- /bin/true\` (no process group, so no guardian)" "$(fmt "$(ovh default fg 2)" 0) µs" \
        "Debian retry" "$(fmt "$gm") ($(fmt "$gmin"))" "" ""
    if [ -n "$ATT" ]; then
        read -r am amin < <(start_ratio default attempt debian)
        row "… attempt (peer)" "$(fmt "$(ovh default attempt 2)" 0) µs" "Debian retry" "$(fmt "$am") ($(fmt "$amin"))" "" ""
    fi
else
    row "start overhead: \`retry -- /bin/true\` minus \`/bin/true\`" "$(fmt "$(ovh default retry 2)" 0) µs" \
        "(Debian retry not installed)" "" "≤ 0.8×" "n/a"
fi

# ---------------------------------------------------------------- failing attempt

say "cost of a failing attempt ($ROUNDS rounds of 1000 attempts)"
: >"$WORK/fail"
loop='i=0; while [ $i -lt 1000 ]; do /bin/false; i=$((i+1)); done'
for ((i = 0; i < ROUNDS; i++)); do
    cmds=(-n sh "sh -c '$loop'" -n retry "$R -n 999 --wait 0 -- /bin/false")
    [ -n "$DEB" ] && cmds+=(-n debian "$DEB -t 1000 -d 0 -- /bin/false")
    [ -n "$ATT" ] && cmds+=(-n attempt "$ATT -a 1000 fixed -w 0 -F -- /bin/false")
    [ -n "$NOPIDFD" ] && cmds+=(-n sh-nopidfd "$NOPIDFD sh -c '$loop'" \
        -n retry-nopidfd "$NOPIDFD $R -n 999 --wait 0 -- /bin/false")
    hf -N -i --warmup 1 --runs 3 "${cmds[@]}"
    for t in sh retry debian attempt sh-nopidfd retry-nopidfd; do
        v=$(col "$t" 2); m=$(col "$t" 3)
        [ -n "$v" ] && echo "$t $(awk -v a="$v" 'BEGIN {print a / 1000}') $(awk -v a="$m" 'BEGIN {print a / 1000}')" >>"$WORK/fail"
    done
done
per() { awk -v t="$1" '$1 == t {print $2}' "$WORK/fail" | median; }
fail_ratio() { # TOOL [REFERENCE, default sh]
    local med mn ref=${2:-sh}
    med=$(paste <(awk -v t="$1" '$1 == t {print $2}' "$WORK/fail") <(awk -v r="$ref" '$1 == r {print $2}' "$WORK/fail") |
        awk '{print $1 / $2}' | median)
    mn=$(ratio "$(awk -v t="$1" '$1 == t {print $3}' "$WORK/fail" | minimum)" "$(awk -v r="$ref" '$1 == r {print $3}' "$WORK/fail" | minimum)")
    echo "$med $mn"
}
read -r fm fmin < <(fail_ratio retry)
row "failing attempt: \`retry -n 999 --wait 0 -- /bin/false\`, per attempt" "$(fmt "$(per retry)" 0) µs" \
    "\`sh\` loop $(fmt "$(per sh)" 0) µs" "$(fmt "$fm") ($(fmt "$fmin"))" "≤ 1.1×" "$(le "$fm" 1.1)"
if grep -q "^retry-nopidfd " "$WORK/fail"; then
    read -r nm nmin < <(fail_ratio retry-nopidfd sh-nopidfd)
    row "… portable path: the same with pidfds refused (seccomp, \`no-pidfd\`)" "$(fmt "$(per retry-nopidfd)" 0) µs" \
        "\`sh\` loop under the same filter $(fmt "$(per sh-nopidfd)" 0) µs" "$(fmt "$nm") ($(fmt "$nmin"))" "≤ 1.1×" "$(le "$nm" 1.1)"
fi
for peer in debian attempt; do
    if grep -q "^$peer " "$WORK/fail"; then
        read -r pm pmin < <(fail_ratio "$peer")
        label=$([ "$peer" = debian ] && echo "Debian retry" || echo attempt)
        row "… $label (peer)" "$(fmt "$(per "$peer")" 0) µs" "\`sh\` loop" "$(fmt "$pm") ($(fmt "$pmin"))" "" ""
    fi
done

# ---------------------------------------------------------------- throughput

if [ "$SKIP_BIG" != 1 ]; then
    REPS=$((ROUNDS * 2))
    say "throughput: $SIZE_MIB MiB ($REPS interleaved runs of each)"
    BIG=$DATA/big
    head -c "$((SIZE_MIB << 20))" /dev/urandom >"$BIG"
    : >"$WORK/tp"
    # The captured rows with the spill file in TMPDIR, and on tmpfs; the
    # floor of any capture to a file: F written to a fresh file in that
    # directory, then read back (the two phases of --stdout final).
    SPILL=$WORK/spill
    tp=(cat "cat $BIG | cat"
        live "$R -- cat $BIG | cat"
        tee "$R --stdout live --retry-on-stdout 'no such line' -- cat $BIG | cat"
        final "$R --stdout final -- cat $BIG | cat"
        floor "(cat $BIG >$SPILL && cat $SPILL | cat; rm -f $SPILL)")
    if [ "$DATA" != "$WORK" ]; then
        tp+=(tee_shm "TMPDIR=$DATA $R --stdout live --retry-on-stdout 'no such line' -- cat $BIG | cat"
            final_shm "TMPDIR=$DATA $R --stdout final -- cat $BIG | cat"
            floor_shm "(cat $BIG >$DATA/spill && cat $DATA/spill | cat; rm -f $DATA/spill)")
    fi
    [ -n "$DEB" ] && tp+=(debian "$DEB -t 1 -- cat $BIG | cat")
    [ -n "$ATT" ] && tp+=(attempt "$ATT -a 1 fixed -- cat $BIG | cat")
    # Run by run, in turn, so that a burst of load hits every command alike.
    # After a command that held 1 GiB of anonymous memory (Debian's retry)
    # exits, the next command that fills 1 GiB of fresh page cache paid
    # 3-6 s instead of 0.7-1.7 s on the VM this was built on (the guest's
    # freed pages are handed back to the host and faulted in again), so an
    # unmeasured round of the same size settles memory after it; otherwise
    # the first captured row of the next round pays for the peer's heap.
    settle() { sh -c "cat $BIG >$WORK/settle && cat $WORK/settle >/dev/null; rm -f $WORK/settle"; }
    TIMEFORMAT=%3R
    for ((i = 0; i < REPS; i++)); do
        for ((j = 0; j < ${#tp[@]}; j += 2)); do
            t=$( { time sh -c "${tp[j + 1]} >/dev/null" >/dev/null 2>&1; } 2>&1)
            echo "$i ${tp[j]} $t" >>"$WORK/tp"
            [ "${tp[j]}" = debian ] && settle
        done
    done
    # MiB/s from the median time
    mibs() { awk -v t="$1" '$2 == t {print $3}' "$WORK/tp" | median | awk -v s="$SIZE_MIB" '{printf "%.0f\n", s / $1}'; }
    tp_ratio() { # TOOL → throughput ratio to cat: median of the runs' ratios, and of the best times
        local med mn
        med=$(awk -v t="$1" '$2 == "cat" {c[$1] = $3} $2 == t {x[$1] = $3} END {for (i in c) if (i in x) print c[i] / x[i]}' "$WORK/tp" | median)
        mn=$(ratio "$(awk '$2 == "cat" {print $3}' "$WORK/tp" | minimum)" "$(awk -v t="$1" '$2 == t {print $3}' "$WORK/tp" | minimum)")
        echo "$med $mn"
    }
    read -r lm lmin < <(tp_ratio live)
    row "live stdout, $SIZE_MIB MiB: \`retry -- cat F | cat\`" "$(mibs live) MiB/s" "\`cat F | cat\` $(mibs cat) MiB/s" \
        "$(fmt "$lm") ($(fmt "$lmin"))" "≥ 0.97×" "$(ge "$lm" 0.97)"
    read -r tm2 tmin2 < <(tp_ratio tee)
    row "scanned live, $SIZE_MIB MiB: \`retry --stdout live --retry-on-stdout RE -- cat F | cat\` (TMPDIR on $TMPFS)" "$(mibs tee) MiB/s" \
        "\`cat F | cat\` $(mibs cat) MiB/s" "$(fmt "$tm2") ($(fmt "$tmin2"))" "≥ 0.6×" "$(ge "$tm2" 0.6)"
    if grep -q " tee_shm " "$WORK/tp"; then
        read -r tm3 tmin3 < <(tp_ratio tee_shm)
        row "… the same with TMPDIR on tmpfs" "$(mibs tee_shm) MiB/s" "\`cat F | cat\`" \
            "$(fmt "$tm3") ($(fmt "$tmin3"))" "≥ 0.6×" "$(ge "$tm3" 0.6)"
    fi
    rss_tee=$(/usr/bin/time -f %M -o "$WORK/rss" sh -c "$R --stdout live --retry-on-stdout 'no such line' -- cat $BIG | cat >/dev/null" && cat "$WORK/rss")
    row "… peak RSS of scanned live, $SIZE_MIB MiB" "$(fmt "$(awk -v k="$rss_tee" 'BEGIN {print k / 1024}')" 1) MiB" "" "" \
        "≤ 16 MiB" "$(le "$rss_tee" 16384)"
    [ -n "$ATT" ] && { read -r am amin < <(tp_ratio attempt)
        row "… attempt (peer)" "$(mibs attempt) MiB/s" "\`cat F | cat\`" "$(fmt "$am") ($(fmt "$amin"))" "" ""; }

    # Peak RSS: GNU time's maximum resident set of retry (its child, cat,
    # is smaller, ~2 MiB).
    rss() { /usr/bin/time -f %M -o "$WORK/rss" sh -c "$1 >/dev/null" && cat "$WORK/rss"; }
    rss_final=$(rss "$R --stdout final -- cat $BIG | cat")
    read -r fm2 fmin2 < <(tp_ratio final)
    row "captured \`--stdout final\`, $SIZE_MIB MiB (spill file in TMPDIR, $TMPFS)" \
        "$(mibs final) MiB/s" "\`cat F | cat\` $(mibs cat) MiB/s" "$(fmt "$fm2") ($(fmt "$fmin2"))" "≥ 0.8×" "$(ge "$fm2" 0.8)"
    read -r fl flmin < <(tp_ratio floor)
    row "… the floor: F written to a fresh file in TMPDIR, then read back (\`cat F >f; cat f | cat\`)" \
        "$(mibs floor) MiB/s" "\`cat F | cat\`" "$(fmt "$fl") ($(fmt "$flmin"))" "" ""
    if grep -q " final_shm " "$WORK/tp"; then
        read -r fm3 fmin3 < <(tp_ratio final_shm)
        row "… captured with TMPDIR on tmpfs" "$(mibs final_shm) MiB/s" "\`cat F | cat\`" \
            "$(fmt "$fm3") ($(fmt "$fmin3"))" "≥ 0.8×" "$(ge "$fm3" 0.8)"
        read -r fl3 flmin3 < <(tp_ratio floor_shm)
        row "… the floor on tmpfs" "$(mibs floor_shm) MiB/s" "\`cat F | cat\`" "$(fmt "$fl3") ($(fmt "$flmin3"))" "" ""
    fi
    row "… peak RSS of \`retry --stdout final\`, $SIZE_MIB MiB" "$(fmt "$(awk -v k="$rss_final" 'BEGIN {print k / 1024}')" 1) MiB" "" "" \
        "≤ 16 MiB" "$(le "$rss_final" 16384)"
    if [ -n "$DEB" ]; then
        read -r dm dmin < <(tp_ratio debian)
        rss_deb=$(rss "$DEB -t 1 -- cat $BIG | cat")
        row "… Debian retry (peer; it always captures, in memory)" "$(mibs debian) MiB/s, RSS $(fmt "$(awk -v k="$rss_deb" 'BEGIN {print k / 1024}')" 0) MiB" \
            "\`cat F | cat\`" "$(fmt "$dm") ($(fmt "$dmin"))" "" ""
    fi
    rm -f "$BIG"
fi

# ---------------------------------------------------------------- memory and fds

say "memory and fds across $ATTEMPTS attempts"
# The child counts attempts itself (peers set no RETRY_ATTEMPT) and at
# attempts 100 and $ATTEMPTS samples its parent's (the tool's) RSS and fds.
cat >"$WORK/probe.sh" <<'EOF'
n=0; read -r n <"$1/count" 2>/dev/null || true; n=$((n + 1)); echo "$n" >"$1/count"
if [ "$n" = 100 ] || [ "$n" = "$2" ]; then
    set -- "$1" "$2" $(grep VmRSS "/proc/$PPID/status")
    echo "$n $4 $(ls "/proc/$PPID/fd" | wc -l)" >>"$1/samples"
fi
[ "$n" -ge "$2" ] && exit 0
exit 1
EOF
mem_run() { # NAME CMD...
    local name=$1; shift
    rm -f "$WORK/count" "$WORK/samples"
    local t0 t1
    t0=$(date +%s.%N)
    "$@" sh "$WORK/probe.sh" "$WORK" "$ATTEMPTS" </dev/null >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    local a b
    a=$(sed -n 1p "$WORK/samples"); b=$(sed -n 2p "$WORK/samples")
    echo "$name $a $b $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
}
{
    mem_run retry "$R" -q -n "$ATTEMPTS" --wait 0 --
    [ -n "$NOPIDFD" ] && mem_run retry-nopidfd "$NOPIDFD" "$R" -q -n "$ATTEMPTS" --wait 0 --
    [ -n "$DEB" ] && mem_run debian "$DEB" -t "$ATTEMPTS" -d 0 --
    [ -n "$ATT" ] && mem_run attempt "$ATT" -a "$ATTEMPTS" fixed -w 0 -F --
} >"$WORK/mem"
memrow() { # NAME LABEL GOAL?
    # fields: name n1 rss1 fd1 n2 rss2 fd2 seconds
    read -r _ _ r1 f1 _ r2 f2 secs < <(awk -v t="$1" '$1 == t' "$WORK/mem")
    local flat="yes"
    awk -v a="$r1" -v b="$r2" 'BEGIN {exit !(b - a > 256)}' && flat="NO"
    [ "$f1" != "$f2" ] && flat="NO"
    local goal="" met=""
    if [ "$3" = goal ]; then
        goal="flat, RSS ≤ 8 MiB"
        met=$( [ "$flat" = yes ] && [ "$(le "$r2" 8192)" = yes ] && echo yes || echo NO)
    fi
    row "$2" "RSS $(fmt "$(awk -v k="$r1" 'BEGIN {print k / 1024}')" 1) → $(fmt "$(awk -v k="$r2" 'BEGIN {print k / 1024}')" 1) MiB, fds $f1 → $f2" \
        "attempt 100 → $ATTEMPTS ($(fmt "$secs" 1) s)" "" "$goal" "$met"
}
memrow retry "memory and fds across $ATTEMPTS attempts (\`--wait 0\`)" goal
grep -q '^retry-nopidfd ' "$WORK/mem" && memrow retry-nopidfd "… portable path (pidfds refused, \`no-pidfd\`)" goal
grep -q '^debian ' "$WORK/mem" && memrow debian "… Debian retry (peer)" ""
grep -q '^attempt ' "$WORK/mem" && memrow attempt "… attempt (peer)" ""

# ---------------------------------------------------------------- sleep accuracy

say "sleep accuracy: 50 sleeps of 20 ms"
# The child logs bash's $EPOCHREALTIME as its first action; the gap between
# two starts is the sleep plus spawn and start-up. The same run with no
# sleep gives that fixed cost, which is subtracted: error = gap - 20 ms -
# median gap without sleep.
command -v bash >/dev/null || die "needs bash"
gaps() { # FILE → gaps in ms
    awk 'NR > 1 {printf "%.3f\n", ($1 - p) * 1000} {p = $1}' "$1"
}
sleep_run() { # NAME WAIT_ARGS_20 WAIT_ARGS_0 PREFIX...
    local name=$1 w20=$2 w0=$3; shift 3
    rm -f "$WORK/t20" "$WORK/t0"
    # shellcheck disable=SC2086
    "$@" $w20 -- bash -c 'echo "$EPOCHREALTIME" >>"$0"; exit 1' "$WORK/t20" </dev/null >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    "$@" $w0 -- bash -c 'echo "$EPOCHREALTIME" >>"$0"; exit 1' "$WORK/t0" </dev/null >/dev/null 2>&1 || true
    local base
    base=$(gaps "$WORK/t0" | median)
    gaps "$WORK/t20" | awk -v b="$base" '{e = $1 - 20 - b; print (e < 0 ? -e : e), $1 - 20 - b}' >"$WORK/err.$name"
    echo "$base"
}
b_retry=$(sleep_run retry "--wait 20ms" "--wait 0" "$R" -q -n 50 --algo constant)
err_med=$(awk '{print $1}' "$WORK/err.retry" | median)
err_p90=$(awk '{print $1}' "$WORK/err.retry" | sort -g | awk '{a[NR]=$1} END {print a[int(NR*0.9)]}')
signed=$(awk '{print $2}' "$WORK/err.retry" | median)
row "sleep accuracy: 50 sleeps of 20 ms, error = actual − planned" "median $(fmt "$err_med") ms, p90 $(fmt "$err_p90") ms (signed median $(fmt "$signed") ms)" \
    "spawn cost subtracted: $(fmt "$b_retry") ms" "" "median ≤ 2 ms" "$(le "$err_med" 2)"
if [ -n "$ATT" ]; then
    b_att=$(sleep_run attempt "-w 0.02" "-w 0" "$ATT" -a 51 fixed -F)
    row "… attempt (peer)" "median $(fmt "$(awk '{print $1}' "$WORK/err.attempt" | median)") ms" \
        "spawn cost subtracted: $(fmt "$b_att") ms" "" "" ""
fi
[ -n "$DEB" ] && row "… Debian retry (peer)" "n/a: delays are whole seconds" "" "" "" ""

# ---------------------------------------------------------------- --until

say "one --until evaluation on a 1 MiB JSON document"
{
    printf '{"status":"ok","items":['
    awk 'BEGIN {for (i = 0; i < 13700; i++) printf "{\"id\":%d,\"name\":\"item-%06d\",\"tags\":[\"a\",\"b\",\"c\"],\"score\":%d.5,\"ok\":true},", i, i, i % 97}'
    printf '{"id":-1}]}\n'
} >"$DATA/doc.json"
doc_kib=$(($(stat -c %s "$DATA/doc.json") >> 10))
: >"$WORK/until"
for ((i = 0; i < ROUNDS; i++)); do
    cmds=(-n final "$R -n 0 --stdout final -- cat $DATA/doc.json"
        -n until "$R -n 0 --until '.status == \"ok\"' -- cat $DATA/doc.json")
    command -v jq >/dev/null && cmds+=(-n jq "jq -e '.status == \"ok\"' $DATA/doc.json")
    hf -N --warmup 3 --runs 30 "${cmds[@]}"
    echo "$(col final 2) $(col until 2) $(col jq 2)" >>"$WORK/until"
done
eval_ms=$(awk '{print ($2 - $1) / 1000}' "$WORK/until" | median)
if command -v jq >/dev/null; then
    jq_ms=$(awk '{print $3 / 1000}' "$WORK/until" | median)
    er=$(awk '{print ($2 - $1) / $3}' "$WORK/until" | median)
    row "one \`--until\` evaluation, ${doc_kib} KiB JSON (vs \`--stdout final\` alone)" "$(fmt "$eval_ms" 1) ms" \
        "\`jq -e\` on the file $(fmt "$jq_ms" 1) ms" "$(fmt "$er")" "" ""
else
    row "one \`--until\` evaluation, ${doc_kib} KiB JSON (vs \`--stdout final\` alone)" "$(fmt "$eval_ms" 1) ms" "(jq not installed)" "" "" ""
fi

# ---------------------------------------------------------------- size

size_mib() { awk -v b="$(stat -L -c %s "$1")" 'BEGIN {if (b < 1048576) printf "%.0f KiB\n", b / 1024; else printf "%.1f MiB\n", b / 1048576}'; }
link=$(file -L "$R" 2>/dev/null | grep -o 'statically linked\|static-pie linked\|dynamically linked' || echo "?")
peers=""
[ -n "$DEB" ] && peers="Debian retry $(size_mib "$DEB")"
[ -n "$ATT" ] && peers="$peers${peers:+, }attempt $(size_mib "$ATT")"
row "binary size (release, $link)" "$(size_mib "$R")" "$peers" "" "" ""

# ---------------------------------------------------------------- table

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo
echo "retry benchmarks — $(date -u +%Y-%m-%d), $(nproc) cores, $cpu, Linux $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $ROUNDS rounds"
echo "retry: $R"
echo
echo "| figure | retry | reference | ratio: median (min) | goal | met |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
