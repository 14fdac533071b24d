#!/usr/bin/env bash
# Pass-through throughput and latency of direct Postgres, pgbouncer (session
# mode) and pgshift (defaults {primary: old, mirror: none}, no rules), measured
# in one interleaved run against one throwaway cluster.
#
#   DURATION=10 ROUNDS=3 bash benches/pgbench.sh
#
# Environment knobs (defaults in brackets):
#   DURATION [10]    seconds per pgbench run
#   ROUNDS   [3]     rounds of (target x mode) throughput runs; medians are reported
#   SCALE    [10]    pgbench -i scale factor
#   CLIENTS  [8]     pgbench -c for throughput runs
#   THREADS  [2]     pgbench -j for throughput runs
#   MODES    ["simple extended prepared"]   pgbench -M modes
#   WARMUP   [3]     seconds of unmeasured warm-up per target (0 to skip)
#   PGSHIFT_BIN      use this pgshift binary instead of building one
#   PGSHIFT_PG_BIN   directory holding initdb/pg_ctl/postgres
#   KEEP=1           keep the temp dir (logs, configs) after the run
# Default run: 3 rounds x 3 targets x 3 modes x 10 s + 3 x 10 s of latency
# runs + setup, about 5.5 minutes (plus the cargo build if needed).
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
MODES=${MODES:-"simple extended prepared"}
WARMUP=${WARMUP:-3}
KEEP=${KEEP:-0}
TARGETS=(direct pgbouncer pgshift)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------- cleanup
DIR=""
SHIFT_PID=""
BOUNCER_PID=""
CUR_PID="" # the pgbench (or other long command) currently running
PG_STARTED=0
AS_USER=()

# Ends a process we started: TERM, up to 5 s grace, then KILL.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

tail_logs() {
    local f
    for f in pgshift.log pgbouncer.log postgres.log; do
        if [[ -s $DIR/$f ]]; then
            echo "---- last 30 lines of $f ----" >&2
            tail -n 30 "$DIR/$f" >&2
        fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ $rc -eq 130 || $rc -eq 143 ]]; then
        log "stopping everything and removing ${DIR:-the temp dir}"
    elif [[ $rc -ne 0 && -n $DIR && -d $DIR ]]; then
        log "failed (exit $rc); log tails follow"
        tail_logs
    fi
    stop_pid "$CUR_PID"
    stop_pid "$SHIFT_PID"
    stop_pid "$BOUNCER_PID"
    if [[ $PG_STARTED == 1 && -f $DIR/data/postmaster.pid ]]; then
        local pmpid
        pmpid=$(head -n 1 "$DIR/data/postmaster.pid")
        "${AS_USER[@]}" "$PG_BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1
        # pg_ctl could not stop it (e.g. the data dir is half gone): end the
        # postmaster by its pid; its children exit when it does.
        if [[ -n $pmpid ]] && kill -0 "$pmpid" 2>/dev/null; then
            kill -QUIT "$pmpid" 2>/dev/null
            sleep 1
            kill -KILL "$pmpid" 2>/dev/null
        fi
    fi
    if [[ -n $DIR && -d $DIR ]]; then
        if [[ $KEEP == 1 ]]; then
            log "kept $DIR"
        else
            rm -rf "$DIR"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# run_waited OUT CMD...: runs CMD with its output in OUT, in the background,
# and waits for it, so INT/TERM reach the trap at once instead of after the
# command finishes. (The redirection is on the command, not on this function:
# redirecting a function call would redirect the trap's messages too.)
run_waited() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 &
    CUR_PID=$!
    local rc=0
    wait "$CUR_PID" || rc=$?
    CUR_PID=""
    return "$rc"
}

# ---------------------------------------------------------------- tools
if [[ -n ${PGSHIFT_PG_BIN:-} ]]; then
    PG_BIN=$PGSHIFT_PG_BIN
elif command -v initdb >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(readlink -f "$(command -v initdb)")")
else
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
[[ -n $PG_BIN && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] ||
    die "no Postgres binaries found (set PGSHIFT_PG_BIN to the directory holding initdb)"

if [[ -x $PG_BIN/pgbench ]]; then
    PGBENCH=$PG_BIN/pgbench
else
    PGBENCH=$(command -v pgbench || true)
fi
[[ -n $PGBENCH ]] || die "pgbench not found"
PSQL=$PG_BIN/psql
[[ -x $PSQL ]] || PSQL=$(command -v psql || true)
[[ -n $PSQL ]] || die "psql not found"
PG_ISREADY=$PG_BIN/pg_isready
[[ -x $PG_ISREADY ]] || PG_ISREADY=$(command -v pg_isready || true)

find_pgbouncer() {
    PGBOUNCER=$(command -v pgbouncer 2>/dev/null || true)
    [[ -n $PGBOUNCER ]] || { [[ -x /usr/sbin/pgbouncer ]] && PGBOUNCER=/usr/sbin/pgbouncer; } || true
}
find_pgbouncer
if [[ -z $PGBOUNCER ]]; then
    [[ $EUID -eq 0 ]] || die "pgbouncer not found (install it, or run as root to have this script apt-get it)"
    command -v apt-get >/dev/null || die "pgbouncer not found and apt-get is not available"
    log "pgbouncer not found: installing it with 'apt-get install -y pgbouncer'"
    # Keep the package's init script from starting a system-wide pgbouncer.
    made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q pgbouncer >&2; then
        apt-get update -q >&2
        apt-get install -y -q pgbouncer >&2
    fi
    [[ $made_policy == 0 ]] || rm -f /usr/sbin/policy-rc.d
    find_pgbouncer
    [[ -n $PGBOUNCER ]] || die "pgbouncer still not found after installing it"
fi

if [[ -n ${PGSHIFT_BIN:-} ]]; then
    SHIFT_BIN=$PGSHIFT_BIN
else
    log "building pgshift (cargo build --release -p pgshift)"
    (cd "$REPO" && cargo build --release -q -p pgshift) >&2
    SHIFT_BIN=$REPO/target/release/pgshift
fi
[[ -x $SHIFT_BIN ]] || die "pgshift binary $SHIFT_BIN is not executable"

# ---------------------------------------------------------------- sandbox
DIR=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
chmod 755 "$DIR"
if [[ $EUID -eq 0 ]]; then
    RUN_USER=nobody
    RUN_GROUP=$(id -gn nobody)
    chown "$RUN_USER:$RUN_GROUP" "$DIR"
    if command -v setpriv >/dev/null; then
        # setpriv execs, so $! is the server's own pid.
        AS_USER=(setpriv "--reuid=$RUN_USER" "--regid=$RUN_GROUP" --clear-groups --)
    else
        AS_USER=(runuser -u "$RUN_USER" --)
    fi
    log "running as root: Postgres and pgbouncer run as '$RUN_USER' in $DIR"
else
    RUN_USER=$(id -un)
fi

used_ports=" "
# free_port VAR: a port nothing listens on, distinct from earlier picks.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        [[ $used_ports == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used_ports+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}
free_port PG_PORT
free_port BOUNCER_PORT
free_port SHIFT_PORT

APP_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
export PGPASSWORD=$APP_PASSWORD PGUSER=app PGDATABASE=app PGHOST=127.0.0.1
export PGCONNECT_TIMEOUT=10
unset PGSERVICE PGOPTIONS PGSSLMODE || true

# ---------------------------------------------------------------- Postgres
log "initdb ($PG_BIN) on port $PG_PORT"
"${AS_USER[@]}" "$PG_BIN/initdb" -D "$DIR/data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1 ||
    { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
cat >>"$DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
EOF
touch "$DIR/postgres.log"
[[ $EUID -ne 0 ]] || chown "$RUN_USER" "$DIR/postgres.log"
PG_STARTED=1
"${AS_USER[@]}" "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 start >/dev/null ||
    die "Postgres did not start"
"$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE app LOGIN PASSWORD '$APP_PASSWORD'" \
    -c "CREATE DATABASE app OWNER app" \
    -c "CREATE DATABASE app_new OWNER app" >/dev/null
log "pgbench -i -s $SCALE"
run_waited "$DIR/pgbench-init.log" "$PGBENCH" -i -q -s "$SCALE" -p "$PG_PORT" ||
    { cat "$DIR/pgbench-init.log" >&2; die "pgbench -i failed"; }
"$PSQL" -X -q -h "$DIR" -p "$PG_PORT" -U postgres -d app -c "VACUUM ANALYZE" >/dev/null

# ---------------------------------------------------------------- pgbouncer
printf '"app" "%s"\n' "$APP_PASSWORD" >"$DIR/userlist.txt"
cat >"$DIR/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $DIR/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
pidfile = $DIR/pgbouncer.pid
EOF
if [[ $EUID -eq 0 ]]; then
    chown "$RUN_USER" "$DIR/userlist.txt" "$DIR/pgbouncer.ini"
fi
chmod 600 "$DIR/userlist.txt"
log "pgbouncer on port $BOUNCER_PORT"
"${AS_USER[@]}" "$PGBOUNCER" "$DIR/pgbouncer.ini" >"$DIR/pgbouncer.log" 2>&1 &
BOUNCER_PID=$!

# ---------------------------------------------------------------- pgshift
# pgshift requires a `new` backend and refuses one that is the same database
# as `old`, so `new` is an empty second database on the same cluster; with
# {primary: old, mirror: none} and no rules no statement is routed to it.
cat >"$DIR/pgshift.yaml" <<EOF
listen: 127.0.0.1:$SHIFT_PORT
backends:
  old: { url: "postgres://app:$APP_PASSWORD@127.0.0.1:$PG_PORT/app", tls: disable }
  new: { url: "postgres://app:$APP_PASSWORD@127.0.0.1:$PG_PORT/app_new", tls: disable }
auth:
  method: scram-sha-256
  users:
    - { name: app, password: "$APP_PASSWORD" }
defaults: { primary: old, mirror: none }
EOF
chmod 600 "$DIR/pgshift.yaml"
log "pgshift ($SHIFT_BIN) on port $SHIFT_PORT"
RUST_LOG=${RUST_LOG:-warn} "$SHIFT_BIN" run --config "$DIR/pgshift.yaml" >"$DIR/pgshift.log" 2>&1 &
SHIFT_PID=$!

declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [pgshift]=$SHIFT_PORT)
declare -A PID_OF=([direct]="" [pgbouncer]=$BOUNCER_PID [pgshift]=$SHIFT_PID)

wait_ready() {
    local t=$1 pid=${PID_OF[$1]}
    for _ in $(seq 300); do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "$t exited during startup"
        fi
        if "$PSQL" -X -q -tA -p "${PORT[$t]}" -c "SELECT 1" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    "$PSQL" -X -q -tA -p "${PORT[$t]}" -c "SELECT 1" || true
    die "$t did not accept connections within 30 s"
}
for t in "${TARGETS[@]}"; do
    wait_ready "$t"
    n=$("$PSQL" -X -q -tA -p "${PORT[$t]}" -c "SELECT count(*) FROM pgbench_accounts")
    [[ $n == $((SCALE * 100000)) ]] || die "$t: pgbench_accounts has $n rows"
done

# How many backend connections one pgshift client session holds (a second
# one would be its connection to `new`, which these runs never use).
probe=pgshift-probe-$$
SHIFT_BACKENDS=$(PGAPPNAME=$probe "$PSQL" -X -q -tA -p "$SHIFT_PORT" \
    -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$probe'" 2>&1 || true)

# ---------------------------------------------------------------- helpers
CLK_TCK=$(getconf CLK_TCK)
# utime stime of a process (all threads), in clock ticks.
proc_cpu() {
    if [[ -n $1 && -r /proc/$1/stat ]]; then
        # Fields after the ")" that ends the command name: utime is the 12th.
        sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'
    else
        echo "0 0"
    fi
}
# user nice system idle iowait irq softirq steal of the whole host.
host_cpu() { awk '/^cpu /{print $2+$3, $4+$7+$8, $5+$6, $9}' /proc/stat; }

# median of the numbers on stdin (words that are not numbers, e.g. NA, are skipped).
median() {
    tr ' ' '\n' | awk '/^[0-9.]+$/' | sort -g |
        awk '{v[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a=="NA" || b=="NA" || b+0==0) print "  n/a"; else printf "%5.3f", a/b}'; }

declare -A TPS=() PROXY_US=() PROXY_SYS_US=() HOST_BUSY=() FAILED=()

# bench TARGET MODE TAG: one measured throughput run.
bench() {
    local t=$1 mode=$2 tag=$3 out rc=0
    out=$DIR/run-$tag-$t-$mode.txt
    local pid=${PID_OF[$t]}
    local c0 h0 c1 h1
    c0=$(proc_cpu "$pid")
    h0=$(host_cpu)
    run_waited "$out" "$PGBENCH" -n -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
        -p "${PORT[$t]}" || rc=$?
    c1=$(proc_cpu "$pid")
    h1=$(host_cpu)
    local tps
    tps=$(awk '/^tps = / && /without initial connection time/ {print $3}' "$out")
    if [[ $rc -ne 0 || -z $tps ]] || grep -qE 'aborted|error' "$out"; then
        FAILED[$t/$mode]=1
        log "$t -M $mode: pgbench exit $rc; its output:"
        sed 's/^/    /' "$out" >&2
        [[ $t != pgshift ]] || { echo "---- pgshift.log tail ----" >&2; tail -n 20 "$DIR/pgshift.log" >&2; }
        [[ -n $tps ]] || tps=NA
    fi
    [[ $tps == NA ]] || tps=$(printf '%.0f' "$tps")
    TPS[$t/$mode]+="$tps "
    # CPU of the proxy process per transaction, and host CPU use.
    local stats
    stats=$(awk -v c0="$c0" -v c1="$c1" -v h0="$h0" -v h1="$h1" -v tps="$tps" -v d="$DURATION" -v hz="$CLK_TCK" '
        BEGIN {
            split(c0, a, " "); split(c1, b, " "); split(h0, p, " "); split(h1, q, " ");
            usr = b[1] - a[1]; sys = b[2] - a[2];
            tx = (tps == "NA") ? 0 : tps * d;
            us = tx > 0 ? (usr + sys) / hz * 1e6 / tx : 0;
            sus = tx > 0 ? sys / hz * 1e6 / tx : 0;
            hu = q[1] - p[1]; hs = q[2] - p[2]; hi = q[3] - p[3]; hst = q[4] - p[4];
            tot = hu + hs + hi + hst; if (tot == 0) tot = 1;
            printf "%.1f %.1f %.0f %.0f %.0f", us, sus, 100 * (hu + hs) / tot, 100 * hu / tot, 100 * hs / tot
        }')
    read -r us sus busy husr hsys <<<"$stats"
    if [[ -n $pid ]]; then
        PROXY_US[$t/$mode]+="$us "
        PROXY_SYS_US[$t/$mode]+="$sus "
    fi
    HOST_BUSY[$t/$mode]+="$busy "
    local proxy_note=""
    [[ -z $pid ]] || proxy_note=$(printf ' proxy cpu %6.1f us/txn (sys %5.1f)' "$us" "$sus")
    log "$(printf '%-6s %-9s -M %-8s tps %10s  host cpu %3s%% (usr %3s%% sys %3s%%)%s' \
        "$tag" "$t" "$mode" "$tps" "$busy" "$husr" "$hsys" "$proxy_note")"
}

# ---------------------------------------------------------------- runs
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
total=$((ROUNDS * ${#TARGETS[@]} * $(wc -w <<<"$MODES") * DURATION + ${#TARGETS[@]} * (DURATION + WARMUP)))
log "measuring: about $((total / 60)) min $((total % 60)) s of pgbench"
if [[ $WARMUP -gt 0 ]]; then
    for t in "${TARGETS[@]}"; do
        run_waited "$DIR/warmup-$t.txt" "$PGBENCH" -n -S -M extended -c "$CLIENTS" -j "$THREADS" -T "$WARMUP" \
            -p "${PORT[$t]}" || { cat "$DIR/warmup-$t.txt" >&2; die "$t: warm-up failed"; }
    done
fi

for ((r = 0; r < ROUNDS; r++)); do
    # Rotate the target order each round so no target always runs first.
    order=()
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
        order+=("${TARGETS[(i + r) % ${#TARGETS[@]}]}")
    done
    for mode in $MODES; do
        for t in "${order[@]}"; do
            bench "$t" "$mode" "r$((r + 1))"
        done
    done
done

declare -A P50=() P99=() PMEAN=() NTX=()
for t in "${TARGETS[@]}"; do
    rm -f "$DIR"/lat-"$t".*
    run_waited "$DIR/lat-run-$t.txt" "$PGBENCH" -n -S -M extended -c 1 -j 1 -T "$DURATION" -l \
        --log-prefix="$DIR/lat-$t" -p "${PORT[$t]}" || { cat "$DIR/lat-run-$t.txt" >&2; die "$t: latency run failed"; }
    read -r n p50 p99 mean < <(cat "$DIR"/lat-"$t".* | awk '{print $3}' | sort -n | awk '
        {v[NR] = $1; s += $1}
        END {
            if (NR == 0) { print 0, "NA", "NA", "NA"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++;
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++;
            printf "%d %d %d %.1f\n", NR, v[i50], v[i99], s / NR
        }')
    NTX[$t]=$n P50[$t]=$p50 P99[$t]=$p99 PMEAN[$t]=$mean
    log "latency  $t: n=$n p50=${p50}us p99=${p99}us mean=${mean}us"
done

# ---------------------------------------------------------------- report
pg_version=$("$PG_BIN/postgres" --version)
bouncer_version=$("$PGBOUNCER" --version 2>&1 | awk 'NR == 1')
shift_version=$("$SHIFT_BIN" --version 2>&1 | awk 'NR == 1')
git_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
git_dirty=""
[[ -z $(git -C "$REPO" status --porcelain 2>/dev/null || true) ]] || git_dirty=" (+ uncommitted changes)"
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
shift_threads=$(ls "/proc/$SHIFT_PID/task" 2>/dev/null | wc -l)

echo
echo "=================================================================================="
echo " pgshift pass-through benchmark"
echo "=================================================================================="
echo " machine   : $(nproc) CPUs ($cpu_model), $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
echo " load avg  : $LOAD0 before the runs, $(cut -d' ' -f1-3 /proc/loadavg) after (other work on the machine skews results)"
echo " postgres  : $pg_version (fsync=off, max_connections=200, scram-sha-256 over TCP)"
echo " pgbouncer : $bouncer_version (pool_mode=session, auth_type=scram-sha-256, default_pool_size=20)"
echo " pgshift   : $shift_version, git $git_rev$git_dirty, $shift_threads threads, RUST_LOG=${RUST_LOG:-warn}"
echo "             backend connections per pgshift client session: $SHIFT_BACKENDS"
echo " workload  : pgbench -S (select-only), scale $SCALE, -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS interleaved rounds"
echo "             client, proxies and Postgres all share this machine's $(nproc) CPUs"
echo
echo "Throughput: median TPS over $ROUNDS rounds (per-round values in brackets)"
printf '  %-9s %11s %11s %11s   %13s %16s %16s\n' mode direct pgbouncer pgshift pgshift/direct pgshift/pgbouncer pgbouncer/direct
declare -A MED=()
for mode in $MODES; do
    for t in "${TARGETS[@]}"; do MED[$t/$mode]=$(median <<<"${TPS[$t/$mode]}"); done
    printf '  %-9s %11s %11s %11s   %13s %16s %16s\n' "$mode" \
        "${MED[direct/$mode]}" "${MED[pgbouncer/$mode]}" "${MED[pgshift/$mode]}" \
        "$(ratio "${MED[pgshift/$mode]}" "${MED[direct/$mode]}")" \
        "$(ratio "${MED[pgshift/$mode]}" "${MED[pgbouncer/$mode]}")" \
        "$(ratio "${MED[pgbouncer/$mode]}" "${MED[direct/$mode]}")"
done
for mode in $MODES; do
    for t in "${TARGETS[@]}"; do
        printf '    %-9s %-9s [ %s]\n' "$mode" "$t" "${TPS[$t/$mode]}"
    done
done
echo
echo "Proxy CPU per transaction (median; user+sys of the proxy process / transactions)"
printf '  %-9s %18s %18s   %s\n' mode "pgbouncer us/txn" "pgshift us/txn" "host CPU busy % (direct / pgbouncer / pgshift)"
for mode in $MODES; do
    printf '  %-9s %11s (sys %s) %10s (sys %s)   %s / %s / %s\n' "$mode" \
        "$(median <<<"${PROXY_US[pgbouncer/$mode]}")" "$(median <<<"${PROXY_SYS_US[pgbouncer/$mode]}")" \
        "$(median <<<"${PROXY_US[pgshift/$mode]}")" "$(median <<<"${PROXY_SYS_US[pgshift/$mode]}")" \
        "$(median <<<"${HOST_BUSY[direct/$mode]}")" "$(median <<<"${HOST_BUSY[pgbouncer/$mode]}")" \
        "$(median <<<"${HOST_BUSY[pgshift/$mode]}")"
done
echo
echo "Latency: 1 client, pgbench -S -M extended -c 1 -T $DURATION, per-transaction latency from -l (microseconds)"
printf '  %-9s %9s %8s %8s %9s   %s\n' target txns p50 p99 mean "p50 overhead vs direct"
for t in "${TARGETS[@]}"; do
    over=$(awk -v a="${P50[$t]}" -v b="${P50[direct]}" 'BEGIN {if (a=="NA"||b=="NA") print "n/a"; else printf "%+d us", a-b}')
    [[ $t != direct ]] || over="-"
    printf '  %-9s %9s %8s %8s %9s   %s\n' "$t" "${NTX[$t]}" "${P50[$t]}" "${P99[$t]}" "${PMEAN[$t]}" "$over"
done
echo

status=0
for key in "${!FAILED[@]}"; do
    echo "FAILED: $key (pgbench reported errors; see the log lines above)"
    status=1
done
note=$(awk -v r="$(ratio "${MED[pgshift/extended]:-NA}" "${MED[pgbouncer/extended]:-NA}")" \
    'BEGIN {if (r ~ /n\/a/) print "unknown"; else if (r + 0 < 0.9) print "slow"; else print "ok"}')
if [[ $note == slow ]]; then
    echo "NOTE: pgshift is below 0.9x pgbouncer with -M extended."
fi
warns=$(grep -cE 'WARN|ERROR' "$DIR/pgshift.log" || true)
echo "pgshift log: $warns WARN/ERROR lines"
if [[ $warns -gt 0 || $note == slow || $status -ne 0 ]]; then
    echo "---- pgshift.log tail ----"
    tail -n 20 "$DIR/pgshift.log"
fi
if ! kill -0 "$SHIFT_PID" 2>/dev/null; then
    echo "pgshift is no longer running!"
    status=1
fi
exit "$status"
