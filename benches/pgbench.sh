#!/usr/bin/env bash
# Throughput and latency of direct Postgres, pgbouncer (session mode), pgshift
# pass-through (defaults {primary: old, mirror: none}, no rules) and pgshift
# mirroring (defaults {primary: old, mirror: new, compare: true}: every select
# also runs, asynchronously, on a second database holding the same pgbench
# data and both results are compared), measured in one interleaved run
# against one throwaway cluster. `relay` is the floor under pgshift: the
# relay_floor example, a tokio relay with pgshift's threads and none of its
# work (no parsing, no auth, no statistics), so what the runtime and the
# sockets cost on this machine can be told from what pgshift adds.
#
#   DURATION=10 ROUNDS=3 bash benches/pgbench.sh
#   TARGETS="direct pgshift mirrored" bash benches/pgbench.sh
#   INSTRUCTIONS=3000 TARGETS="pgbouncer relay pgshift mirrored" bash benches/pgbench.sh
#
# With INSTRUCTIONS=N the proxies run under valgrind's callgrind, and instead
# of TPS and latency the script reports the instructions each proxy
# executes in user space per one-client transaction (N transactions per
# mode, after 300 unmeasured ones). Unlike time, that count does not move
# with what else the machine is doing, so it can tell two builds apart
# where the timed runs cannot; it leaves out the kernel's work (the
# syscalls and wake-ups), which is most of a proxy's CPU time.
#
# Environment knobs (defaults in brackets):
#   TARGETS  ["direct pgbouncer relay pgshift mirrored"]   which targets to run, in this order
#   DURATION [10]    seconds per pgbench run
#   ROUNDS   [3]     rounds of (target x mode) throughput runs; medians are reported
#   SCALE    [10]    pgbench -i scale factor
#   CLIENTS  [8]     pgbench -c for throughput runs
#   THREADS  [2]     pgbench -j for throughput runs
#   MODES    ["simple extended prepared"]   pgbench -M modes
#   WARMUP   [3]     seconds of unmeasured warm-up per target (0 to skip)
#   LAT_ROUNDS [3]   interleaved one-client latency runs per target
#   PROBE    [20]    seconds of turn-by-turn one-client latency (latency_probe:
#                    one connection per target, the -S transaction to each in
#                    turn, so all see the same machine); 0 skips it
#   COMPARE  [100]   the mirrored target's compare.sample; 0 mirrors without comparing
#   OVERFLOW [block] the mirrored target's mirror.on_overflow (block or drop)
#   INSTRUCTIONS [0] when above 0: count instructions per transaction (see above)
#   BACKEND  [tcp]   how the proxies reach Postgres: tcp (loopback) or unix (its
#                    socket, as a proxy on the database host would); clients
#                    and the direct target always use loopback TCP
#   PGSHIFT_BIN      use this pgshift binary instead of building one
#   RELAY_BIN        use this relay_floor binary instead of building one
#   PROBE_BIN        use this latency_probe binary instead of building one
#   PGSHIFT_REPO     the checkout to build and report (default: this script's)
#   PGSHIFT_PG_BIN   directory holding initdb/pg_ctl/postgres
#   KEEP=1           keep the temp dir (logs, configs) after the run
# Default run: 3 rounds x 5 targets x 3 modes x 10 s + 5 x (3 x 10 s latency
# + 3 s warm-up) + 20 s probe + setup, about 11 minutes (plus the cargo
# builds if needed).
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
MODES=${MODES:-"simple extended prepared"}
WARMUP=${WARMUP:-3}
LAT_ROUNDS=${LAT_ROUNDS:-3}
[[ $LAT_ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "LAT_ROUNDS must be a positive number" >&2; exit 1; }
PROBE=${PROBE:-20}
[[ $PROBE =~ ^[0-9]+$ ]] || { echo "PROBE must be a number of seconds" >&2; exit 1; }
COMPARE=${COMPARE:-100}
# block: a client waits when its mirror queue is full, so the mirrored TPS is
# a rate at which every statement is mirrored; drop (pgshift's default)
# lets the primary outrun a saturated mirror and counts what it drops.
OVERFLOW=${OVERFLOW:-block}
[[ $OVERFLOW == block || $OVERFLOW == drop ]] || { echo "OVERFLOW must be block or drop" >&2; exit 1; }
[[ $COMPARE =~ ^[0-9]+$ && $COMPARE -le 100 ]] || { echo "COMPARE must be 0-100" >&2; exit 1; }
KEEP=${KEEP:-0}
BACKEND=${BACKEND:-tcp}
[[ $BACKEND == tcp || $BACKEND == unix ]] || { echo "BACKEND must be tcp or unix" >&2; exit 1; }
INSTRUCTIONS=${INSTRUCTIONS:-0}
[[ $INSTRUCTIONS =~ ^[0-9]+$ ]] || { echo "INSTRUCTIONS must be a number" >&2; exit 1; }
ALL_TARGETS="direct pgbouncer relay pgshift mirrored"
# TARGETS may come from the environment as a space-separated string.
read -r -a TARGETS <<<"${TARGETS:-$ALL_TARGETS}"

# PGSHIFT_REPO: the checkout to build from and report, for a copy of this
# script run from elsewhere (so editing the tree cannot change a running bench).
REPO=${PGSHIFT_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[[ ${#TARGETS[@]} -gt 0 ]] || die "TARGETS is empty (known targets: $ALL_TARGETS)"
seen=" "
for t in "${TARGETS[@]}"; do
    [[ " $ALL_TARGETS " == *" $t "* ]] || die "unknown target '$t' in TARGETS (known: $ALL_TARGETS)"
    [[ $seen != *" $t "* ]] || die "target '$t' appears twice in TARGETS"
    seen+="$t "
done
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

# ---------------------------------------------------------------- cleanup
DIR=""
SHIFT_PID=""
MIRROR_PID=""
RELAY_PID=""
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
    for f in pgshift.log pgshift-mirrored.log pgbouncer.log postgres.log; do
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
    stop_pid "$MIRROR_PID"
    stop_pid "$RELAY_PID"
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
if [[ $INSTRUCTIONS -gt 0 ]]; then
    command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
        die "INSTRUCTIONS needs valgrind (apt-get install valgrind)"
fi

find_pgbouncer() {
    PGBOUNCER=$(command -v pgbouncer 2>/dev/null || true)
    [[ -n $PGBOUNCER ]] || { [[ -x /usr/sbin/pgbouncer ]] && PGBOUNCER=/usr/sbin/pgbouncer; } || true
}
PGBOUNCER=""
has_target pgbouncer && find_pgbouncer
if has_target pgbouncer && [[ -z $PGBOUNCER ]]; then
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

SHIFT_BIN=""
if has_target pgshift || has_target mirrored; then
    if [[ -n ${PGSHIFT_BIN:-} ]]; then
        SHIFT_BIN=$PGSHIFT_BIN
    else
        log "building pgshift (cargo build --release -p pgshift)"
        (cd "$REPO" && cargo build --release -q -p pgshift) >&2
        SHIFT_BIN=$REPO/target/release/pgshift
    fi
    [[ -x $SHIFT_BIN ]] || die "pgshift binary $SHIFT_BIN is not executable"
fi
# example_bin NAME [PREBUILT]: the path of pgshift's example NAME, PREBUILT
# when given, else built from the checkout.
example_bin() {
    local bin=${2:-}
    if [[ -z $bin ]]; then
        log "building $1 (cargo build --release --example $1 -p pgshift)"
        (cd "$REPO" && cargo build --release -q --example "$1" -p pgshift) >&2
        bin=$REPO/target/release/examples/$1
    fi
    [[ -x $bin ]] || die "$1 binary $bin is not executable"
    echo "$bin"
}
RELAY=""
! has_target relay || RELAY=$(example_bin relay_floor "${RELAY_BIN:-}")
PROBER=""
[[ $PROBE -eq 0 || $INSTRUCTIONS -gt 0 ]] || PROBER=$(example_bin latency_probe "${PROBE_BIN:-}")

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
# Ports are picked below the kernel's ephemeral range, so an outgoing
# connection (pgbench -i, pgbouncer's to Postgres) cannot take a port
# between its pick and the listener's bind.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[[ $EPHEMERAL_LOW =~ ^[0-9]+$ && $EPHEMERAL_LOW -gt 12000 ]] || EPHEMERAL_LOW=32768
# free_port VAR: a port nothing listens on, distinct from earlier picks.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
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
free_port RELAY_PORT
free_port MIRROR_PORT
free_port MIRROR_ADMIN_PORT

# Under INSTRUCTIONS, each proxy starts under callgrind; its dumps go to
# $DIR/callgrind.PID.N.
LAUNCH=()
[[ $INSTRUCTIONS -eq 0 ]] || LAUNCH=(valgrind -q --tool=callgrind "--callgrind-out-file=$DIR/callgrind.%p")

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
if [[ $BACKEND == unix ]]; then
    # The app role logs in with SCRAM over the socket as over TCP, so the
    # proxies' backend logins cost the same either way.
    hba=$(cat "$DIR/data/pg_hba.conf")
    printf 'local all app scram-sha-256\n%s\n' "$hba" >"$DIR/data/pg_hba.conf"
fi
touch "$DIR/postgres.log"
[[ $EUID -ne 0 ]] || chown "$RUN_USER" "$DIR/postgres.log"
PG_STARTED=1
"${AS_USER[@]}" "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 start >/dev/null ||
    die "Postgres did not start"
"$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE app LOGIN PASSWORD '$APP_PASSWORD'" \
    -c "CREATE DATABASE app OWNER app" \
    -c "CREATE DATABASE app_new OWNER app" >/dev/null
# app_new gets the same pgbench data only when `mirrored` runs (it mirrors
# every select there); for pass-through pgshift it stays empty and unused.
INIT_DBS=(app)
! has_target mirrored || INIT_DBS+=(app_new)
for db in "${INIT_DBS[@]}"; do
    log "pgbench -i -s $SCALE ($db)"
    run_waited "$DIR/pgbench-init-$db.log" "$PGBENCH" -i -q -s "$SCALE" -p "$PG_PORT" "$db" ||
        { cat "$DIR/pgbench-init-$db.log" >&2; die "pgbench -i ($db) failed"; }
    "$PSQL" -X -q -h "$DIR" -p "$PG_PORT" -U postgres -d "$db" -c "VACUUM ANALYZE" >/dev/null
done

# Where the proxies find Postgres: loopback TCP, or the socket in $DIR.
if [[ $BACKEND == unix ]]; then
    BOUNCER_HOST=$DIR
    SHIFT_HOST="${DIR//\//%2F}:$PG_PORT"
    RELAY_UPSTREAM="$DIR/.s.PGSQL.$PG_PORT"
else
    BOUNCER_HOST=127.0.0.1
    SHIFT_HOST="127.0.0.1:$PG_PORT"
    RELAY_UPSTREAM="127.0.0.1:$PG_PORT"
fi
log "proxies reach Postgres over $BACKEND ($RELAY_UPSTREAM)"

# ---------------------------------------------------------------- pgbouncer
if has_target pgbouncer; then
printf '"app" "%s"\n' "$APP_PASSWORD" >"$DIR/userlist.txt"
cat >"$DIR/pgbouncer.ini" <<EOF
[databases]
app = host=$BOUNCER_HOST port=$PG_PORT dbname=app

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
"${AS_USER[@]}" "${LAUNCH[@]}" "$PGBOUNCER" "$DIR/pgbouncer.ini" >"$DIR/pgbouncer.log" 2>&1 &
BOUNCER_PID=$!
fi

# ---------------------------------------------------------------- pgshift
# pgshift requires a `new` backend and refuses one that is the same database
# as `old`, so `new` is a second database on the same cluster; with
# {primary: old, mirror: none} and no rules no statement is routed to it.
if has_target pgshift; then
cat >"$DIR/pgshift.yaml" <<EOF
listen: 127.0.0.1:$SHIFT_PORT
backends:
  old: { url: "postgres://app:$APP_PASSWORD@$SHIFT_HOST/app", tls: disable }
  new: { url: "postgres://app:$APP_PASSWORD@$SHIFT_HOST/app_new", tls: disable }
auth:
  method: scram-sha-256
  users:
    - { name: app, password: "$APP_PASSWORD" }
defaults: { primary: old, mirror: none }
EOF
chmod 600 "$DIR/pgshift.yaml"
log "pgshift ($SHIFT_BIN) on port $SHIFT_PORT"
RUST_LOG=${RUST_LOG:-warn} "${LAUNCH[@]}" "$SHIFT_BIN" run --config "$DIR/pgshift.yaml" >"$DIR/pgshift.log" 2>&1 &
SHIFT_PID=$!
fi

# ---------------------------------------------------------------- pgshift, mirrored
# A second pgshift process: same primary path, plus every statement mirrored
# asynchronously (the client never waits for the mirror) to app_new, which
# holds the same pgbench data, with every mirrored result compared. Both
# databases live in the same Postgres, so the database does twice the work.
# The admin listener is only read once, at the end, for the mirror counters.
if has_target mirrored; then
cat >"$DIR/pgshift-mirrored.yaml" <<EOF
listen: 127.0.0.1:$MIRROR_PORT
admin: 127.0.0.1:$MIRROR_ADMIN_PORT
backends:
  old: { url: "postgres://app:$APP_PASSWORD@$SHIFT_HOST/app", tls: disable }
  new: { url: "postgres://app:$APP_PASSWORD@$SHIFT_HOST/app_new", tls: disable }
auth:
  method: scram-sha-256
  users:
    - { name: app, password: "$APP_PASSWORD" }
defaults: { primary: old, mirror: new, compare: $([[ $COMPARE -gt 0 ]] && echo true || echo false) }
compare: { sample: $([[ $COMPARE -gt 0 ]] && echo "$COMPARE" || echo 100) }
mirror: { mode: async, on_overflow: $OVERFLOW }
EOF
chmod 600 "$DIR/pgshift-mirrored.yaml"
log "pgshift mirrored ($SHIFT_BIN) on port $MIRROR_PORT, admin on $MIRROR_ADMIN_PORT"
RUST_LOG=${RUST_LOG:-warn} "${LAUNCH[@]}" "$SHIFT_BIN" run --config "$DIR/pgshift-mirrored.yaml" >"$DIR/pgshift-mirrored.log" 2>&1 &
MIRROR_PID=$!
fi

# ---------------------------------------------------------------- relay floor
if has_target relay; then
log "relay_floor ($RELAY) on port $RELAY_PORT"
"${LAUNCH[@]}" "$RELAY" "127.0.0.1:$RELAY_PORT" "$RELAY_UPSTREAM" >"$DIR/relay.log" 2>&1 &
RELAY_PID=$!
fi

declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [relay]=$RELAY_PORT [pgshift]=$SHIFT_PORT [mirrored]=$MIRROR_PORT)
declare -A PID_OF=([direct]="" [pgbouncer]=$BOUNCER_PID [relay]=$RELAY_PID [pgshift]=$SHIFT_PID [mirrored]=$MIRROR_PID)
declare -A LOG_OF=([direct]=postgres.log [pgbouncer]=pgbouncer.log [relay]=relay.log [pgshift]=pgshift.log [mirrored]=pgshift-mirrored.log)

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
if has_target mirrored; then
    n=$("$PSQL" -X -q -tA -p "$PG_PORT" -d app_new -c "SELECT count(*) FROM pgbench_accounts")
    [[ $n == $((SCALE * 100000)) ]] || die "app_new: pgbench_accounts has $n rows"
fi

# How many backend connections one pgshift client session holds (a second
# one would be its connection to `new`, which these runs never use).
SHIFT_BACKENDS=n/a
if has_target pgshift; then
    probe=pgshift-probe-$$
    SHIFT_BACKENDS=$(PGAPPNAME=$probe "$PSQL" -X -q -tA -p "$SHIFT_PORT" \
        -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$probe'" 2>&1 || true)
fi

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
        [[ -z $pid ]] || { echo "---- ${LOG_OF[$t]} tail ----" >&2; tail -n 20 "$DIR/${LOG_OF[$t]}" >&2; }
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

# ---------------------------------------------------------------- instructions
# counted TARGET MODE TXNS: instructions the target's process executed
# while one pgbench client connected and ran TXNS transactions.
counted() {
    local t=$1 mode=$2 n=$3 pid=${PID_OF[$1]} dump total out=$DIR/ins-$1-$2-$3.txt
    # callgrind_control reaches a process through pipes named after its
    # user: pgbouncer's runs as RUN_USER.
    local control=(timeout 60 callgrind_control)
    [[ $t != pgbouncer ]] || control=("${AS_USER[@]}" "${control[@]}")
    "${control[@]}" -z "$pid" >/dev/null 2>&1 || die "$t: callgrind_control -z failed"
    run_waited "$out" "$PGBENCH" -n -S -M "$mode" -c 1 -t "$n" -p "${PORT[$t]}" ||
        { cat "$out" >&2; die "$t -M $mode: pgbench failed"; }
    "${control[@]}" -d "$pid" >/dev/null 2>&1 || die "$t: callgrind_control -d failed"
    dump=$(ls "$DIR"/callgrind."$pid".* 2>/dev/null | sort -V | tail -n 1)
    total=$(awk '/^summary:/ {print $2; exit}' "$dump")
    [[ $total =~ ^[0-9]+$ ]] || die "$t: no instruction total in ${dump:-the callgrind dump}"
    echo "$total"
}
# instructions TARGET MODE: "per-transaction per-connection" instruction
# counts, from a run of INSTRUCTIONS transactions and one of twice as
# many (each pays for one connection, its authentication included).
instructions() {
    local one two
    counted "$1" "$2" 300 >/dev/null
    one=$(counted "$1" "$2" "$INSTRUCTIONS")
    two=$(counted "$1" "$2" $((2 * INSTRUCTIONS)))
    echo "$(((two - one) / INSTRUCTIONS)) $((2 * one - two))"
}
if [[ $INSTRUCTIONS -gt 0 ]]; then
    echo
    echo "Instructions executed in each proxy's own process (user space; callgrind), pgbench -S -c 1:"
    echo "per transaction, and per connection (its login: the proxy's own SCRAM exchange, where it has one),"
    echo "from runs of $INSTRUCTIONS and $((2 * INSTRUCTIONS)) transactions per mode after 300 unmeasured ones"
    line=$(printf '  %-9s' mode)
    for t in "${TARGETS[@]}"; do [[ -z ${PID_OF[$t]} ]] || line+=$(printf ' %23s' "$t: txn / connection"); done
    echo "$line"
    for mode in $MODES; do
        line=$(printf '  %-9s' "$mode")
        for t in "${TARGETS[@]}"; do
            [[ -n ${PID_OF[$t]} ]] || continue
            read -r per_txn per_conn <<<"$(instructions "$t" "$mode")"
            line+=$(printf ' %23s' "$per_txn / $per_conn")
        done
        echo "$line"
    done
    [[ -z $SHIFT_BIN ]] ||
        echo "  ($("$SHIFT_BIN" --version 2>&1 | awk 'NR == 1'), git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?"))"
    exit 0
fi

# ---------------------------------------------------------------- runs
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
total=$((ROUNDS * ${#TARGETS[@]} * $(wc -w <<<"$MODES") * DURATION + ${#TARGETS[@]} * (LAT_ROUNDS * DURATION + WARMUP)))
[[ -z $PROBER ]] || total=$((total + PROBE))
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

# One-client latency: LAT_ROUNDS interleaved runs per target (order rotated
# each round, like the throughput runs); p50, p99 and mean are medians of
# the per-run figures, the transaction count their sum.
declare -A P50=() P99=() PMEAN=() NTX=() P50S=()
for ((r = 0; r < LAT_ROUNDS; r++)); do
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
        t=${TARGETS[(i + r) % ${#TARGETS[@]}]}
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
        NTX[$t]=$(( ${NTX[$t]:-0} + n ))
        P50S[$t]+="$p50 " P99[$t]+="$p99 " PMEAN[$t]+="$mean "
        log "latency r$((r + 1)) $t: n=$n p50=${p50}us p99=${p99}us mean=${mean}us"
    done
done
# Turn by turn: every target answers the same transaction in rotation, one
# connection each, so drift between runs is paired out.
PROBE_OUT=""
if [[ -n $PROBER ]]; then
    probe_args=()
    for t in "${TARGETS[@]}"; do probe_args+=("$t=127.0.0.1:${PORT[$t]}"); done
    log "latency_probe: $PROBE s over ${TARGETS[*]}"
    run_waited "$DIR/probe.txt" "$PROBER" --seconds "$PROBE" --scale "$SCALE" "${probe_args[@]}" ||
        { cat "$DIR/probe.txt" >&2; die "latency_probe failed"; }
    PROBE_OUT=$(cat "$DIR/probe.txt")
fi
for t in "${TARGETS[@]}"; do
    P50[$t]=$(median <<<"${P50S[$t]}")
    P99[$t]=$(median <<<"${P99[$t]}")
    PMEAN[$t]=$(median <<<"${PMEAN[$t]}")
done

# ---------------------------------------------------------------- mirror counters
# Read once, after all runs: totals over the whole run (setup queries,
# warm-up, throughput and latency runs).
MIRROR_STATS=""
if has_target mirrored; then
    sleep 1 # let the mirror drain what the last run queued
    if command -v curl >/dev/null 2>&1 &&
        status_json=$(curl -fsS --max-time 5 "http://127.0.0.1:$MIRROR_ADMIN_PORT/status" 2>&1); then
        if command -v jq >/dev/null 2>&1; then
            MIRROR_STATS=$(jq -r '.mirror | .new as $n |
                "queued \($n.queued), applied \($n.applied), dropped \($n.dropped), errors \($n.errors), " +
                "replay errors \($n.replay_errors), compared \($n.compared), mismatched \($n.mismatched), " +
                "queue depth now \($n.queue_depth), diverged sessions \(.diverged_sessions_total)"' \
                <<<"$status_json" 2>&1 || true)
        else
            MIRROR_STATS=$(tr -d '\n' <<<"$status_json" | grep -o '"mirror":.*' || true)
        fi
    else
        MIRROR_STATS="unavailable (admin /status: ${status_json:-curl not found})"
    fi
fi

# ---------------------------------------------------------------- report
pg_version=$("$PG_BIN/postgres" --version)
bouncer_version=-
[[ -z $PGBOUNCER ]] || bouncer_version=$("$PGBOUNCER" --version 2>&1 | awk 'NR == 1')
shift_version=-
[[ -z $SHIFT_BIN ]] || shift_version=$("$SHIFT_BIN" --version 2>&1 | awk 'NR == 1')
git_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
git_dirty=""
[[ -z $(git -C "$REPO" status --porcelain 2>/dev/null || true) ]] || git_dirty=" (+ uncommitted changes)"
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
threads_of() { if [[ -n $1 && -d /proc/$1/task ]]; then ls "/proc/$1/task" | wc -l; else echo "?"; fi; }
PROXIES=()
for t in "${TARGETS[@]}"; do [[ -z ${PID_OF[$t]} ]] || PROXIES+=("$t"); done
# Ratios (a/b) worth printing: both targets must have run.
RATIOS=()
for pair in pgshift/direct pgshift/pgbouncer pgshift/relay pgbouncer/direct mirrored/pgshift mirrored/direct; do
    # mirrored/direct only when there is no pgshift to compare with.
    [[ $pair != mirrored/direct ]] || ! has_target pgshift || continue
    if has_target "${pair%/*}" && has_target "${pair#*/}"; then RATIOS+=("$pair"); fi
done

echo
echo "=================================================================================="
echo " pgshift benchmark: ${TARGETS[*]}"
echo "=================================================================================="
echo " machine   : $(nproc) CPUs ($cpu_model), $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
echo " load avg  : $LOAD0 before the runs, $(cut -d' ' -f1-3 /proc/loadavg) after (other work on the machine skews results)"
echo " postgres  : $pg_version (fsync=off, max_connections=200, scram-sha-256 for app)"
if [[ $BACKEND == unix ]]; then
    echo " backends  : the proxies reach Postgres over its Unix socket; clients and direct use loopback TCP"
else
    echo " backends  : everything over loopback TCP"
fi
if has_target pgbouncer; then
    echo " pgbouncer : $bouncer_version (pool_mode=session, auth_type=scram-sha-256, default_pool_size=20)"
fi
if has_target relay; then
    echo " relay     : relay_floor, a tokio relay with pgshift's threads and no parsing, auth or statistics, $(threads_of "$RELAY_PID") threads"
fi
if [[ -n $SHIFT_BIN ]]; then
    echo " pgshift   : $shift_version, git $git_rev$git_dirty, RUST_LOG=${RUST_LOG:-warn}"
    if has_target pgshift; then
        echo "             pgshift : pass-through, defaults {primary: old, mirror: none}, $(threads_of "$SHIFT_PID") threads," \
            "$SHIFT_BACKENDS backend connection(s) per client session"
    fi
    if has_target mirrored; then
        echo "             mirrored: defaults {primary: old, mirror: new}, $([[ $COMPARE -gt 0 ]] && echo "compare.sample $COMPARE" || echo "no comparison")," \
            "async mirror (queue 10000, on_overflow $OVERFLOW), $(threads_of "$MIRROR_PID") threads"
    fi
fi
echo " workload  : pgbench -S (select-only), scale $SCALE, -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS interleaved rounds"
echo "             client, proxies and Postgres all share this machine's $(nproc) CPUs"
if has_target mirrored; then
    echo "             mirrored replays every select on app_new (same pgbench data) in the SAME Postgres instance and"
    echo "             compares both results, so per transaction it does twice the database work of the other targets"
fi
echo
echo "Throughput: median TPS over $ROUNDS rounds (per-round values in brackets)"
declare -A MED=()
line=$(printf '  %-9s' mode)
for t in "${TARGETS[@]}"; do line+=$(printf ' %11s' "$t"); done
echo "$line"
for mode in $MODES; do
    line=$(printf '  %-9s' "$mode")
    for t in "${TARGETS[@]}"; do
        MED[$t/$mode]=$(median <<<"${TPS[$t/$mode]}")
        line+=$(printf ' %11s' "${MED[$t/$mode]}")
    done
    echo "$line"
done
if [[ ${#RATIOS[@]} -gt 0 ]]; then
    line=$(printf '  %-9s' ratio)
    for pair in "${RATIOS[@]}"; do line+=$(printf ' %18s' "$pair"); done
    echo "$line"
    for mode in $MODES; do
        line=$(printf '  %-9s' "$mode")
        for pair in "${RATIOS[@]}"; do
            line+=$(printf ' %18s' "$(ratio "${MED[${pair%/*}/$mode]}" "${MED[${pair#*/}/$mode]}")")
        done
        echo "$line"
    done
fi
for mode in $MODES; do
    for t in "${TARGETS[@]}"; do
        printf '    %-9s %-9s [ %s]\n' "$mode" "$t" "${TPS[$t/$mode]}"
    done
done
echo
if [[ ${#PROXIES[@]} -gt 0 ]]; then
    echo "Proxy CPU per transaction: median us of user+sys CPU of the proxy process per transaction (sys part)"
    line=$(printf '  %-9s' mode)
    for t in "${PROXIES[@]}"; do line+=$(printf ' %19s' "$t"); done
    echo "$line"
    for mode in $MODES; do
        line=$(printf '  %-9s' "$mode")
        for t in "${PROXIES[@]}"; do
            line+=$(printf ' %19s' "$(median <<<"${PROXY_US[$t/$mode]}") (sys $(median <<<"${PROXY_SYS_US[$t/$mode]}"))")
        done
        echo "$line"
    done
    echo
fi
echo "Host CPU busy %: median over the rounds, whole machine, during each target's runs"
line=$(printf '  %-9s' mode)
for t in "${TARGETS[@]}"; do line+=$(printf ' %11s' "$t"); done
echo "$line"
for mode in $MODES; do
    line=$(printf '  %-9s' "$mode")
    for t in "${TARGETS[@]}"; do line+=$(printf ' %11s' "$(median <<<"${HOST_BUSY[$t/$mode]}")"); done
    echo "$line"
done
echo
echo "Latency: 1 client, pgbench -S -M extended -c 1 -T $DURATION, $LAT_ROUNDS interleaved runs per target,"
echo "per-transaction latency from -l (microseconds; medians of the runs' figures, per-run p50 in brackets)"
printf '  %-9s %9s %8s %8s %9s   %-22s %s\n' target txns p50 p99 mean "p50 overhead vs direct" "per-run p50"
for t in "${TARGETS[@]}"; do
    over=$(awk -v a="${P50[$t]}" -v b="${P50[direct]:-NA}" 'BEGIN {if (a=="NA"||b=="NA") print "n/a"; else printf "%+d us", a-b}')
    [[ $t != direct ]] || over="-"
    printf '  %-9s %9s %8s %8s %9s   %-22s [ %s]\n' "$t" "${NTX[$t]}" "${P50[$t]}" "${P99[$t]}" "${PMEAN[$t]}" "$over" "${P50S[$t]}"
done
if has_target mirrored && has_target pgshift; then
    awk -v m="${P50[mirrored]}" -v p="${P50[pgshift]}" 'BEGIN {
        if (m == "NA" || p == "NA" || p + 0 == 0) print "  primary-path p50 with async mirroring vs pass-through: n/a";
        else printf "  primary-path p50 with async mirroring vs pass-through: %+.1f%% (%d us vs %d us)\n", 100 * (m - p) / p, m, p
    }'
fi
echo
if [[ -n $PROBE_OUT ]]; then
    echo "Latency turn by turn: latency_probe, $PROBE s, one connection per target, the same -S -M extended"
    echo "transaction sent to each target in turn (order rotated every round); first = ${TARGETS[0]}"
    sed 's/^/  /' <<<"$PROBE_OUT"
    echo
fi

status=0
for key in "${!FAILED[@]}"; do
    echo "FAILED: $key (pgbench reported errors; see the log lines above)"
    status=1
done
note=unknown
if has_target pgshift && has_target pgbouncer; then
    note=$(awk -v r="$(ratio "${MED[pgshift/extended]:-NA}" "${MED[pgbouncer/extended]:-NA}")" \
        'BEGIN {if (r ~ /n\/a/) print "unknown"; else if (r + 0 < 0.9) print "slow"; else print "ok"}')
    if [[ $note == slow ]]; then
        echo "NOTE: pgshift is below 0.9x pgbouncer with -M extended."
    fi
fi
if has_target mirrored; then
    echo "mirror (mirrored, admin /status after the runs): $MIRROR_STATS"
fi
for t in pgshift mirrored; do
    has_target "$t" || continue
    f=${LOG_OF[$t]}
    warns=$(grep -cE 'WARN|ERROR' "$DIR/$f" || true)
    echo "$f: $warns WARN/ERROR lines"
    if [[ -s $DIR/$f ]] && [[ $warns -gt 0 || ($t == pgshift && $note == slow) || $status -ne 0 ]]; then
        echo "---- $f tail ----"
        tail -n 20 "$DIR/$f"
    fi
    if ! kill -0 "${PID_OF[$t]}" 2>/dev/null; then
        echo "$t (pgshift) is no longer running!"
        status=1
    fi
done
if has_target relay && ! kill -0 "$RELAY_PID" 2>/dev/null; then
    echo "relay (relay_floor) is no longer running! ---- relay.log tail ----"
    tail -n 20 "$DIR/relay.log"
    status=1
fi
exit "$status"
