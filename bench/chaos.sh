#!/usr/bin/env bash
# bench/chaos.sh: a bounded chaos run: "faults without outages".
#
# One switchyard gateway (plain HTTP/1.1 and TLS listeners, admin API, access log to a file)
# in front of three `switchyard echo` upstreams found through a standalone ZooKeeper, under a
# fixed offered load, while faults are injected on a schedule:
#   - every KILL_EVERY s (the first at half that): `kill -9` one upstream (round robin over the
#     three), restarted on the same port RESTART_AFTER s later;
#   - ZK_RESTARTS times: ZooKeeper stopped by PID and started again on the same port and data dir;
#   - RELOADS route reloads (the route file rewritten with a new response-header value, by rename);
#   - CERT_ROTATIONS certificate rotations (a new key + certificate renamed into certs_dir);
#   - one SIGHUP to the gateway every SIGHUP_EVERY s.
# At the end it prints one table (also saved with the run's logs, see OUT_DIR). It exits non-zero
# only when the setup fails; failed requests are counted in the table, not in the exit status.
# See bench/README.md ("Chaos run") for what every line of the table means.
#
# Quick start:
#   bench/chaos.sh                                   # 300 s at 1000 req/s (plus ~10 s of setup)
#   DURATION=60 bench/chaos.sh                       # a quick try
#   SWITCHYARD_BIN=target/release/switchyard DURATION=60 RATE=400 bench/chaos.sh
#
# Settings (environment variables):
#   DURATION        seconds of load and faults (20..3600; default 300)
#   RATE            offered load, requests/s over all load clients (default 1000)
#   H1_CLIENTS      h2load clients over plain HTTP/1.1 (default 4)
#   H2_CLIENTS      h2load clients over TLS + HTTP/2 (default 4); each client gets RATE/(H1+H2) req/s
#   KILL_EVERY      seconds between two upstream kills, the first at half that (default 10; 0 = no kills)
#   RESTART_AFTER   seconds a killed upstream stays down (default 2)
#   ZK_RESTARTS     ZooKeeper restarts, spread evenly over the run (default 2)
#   RELOADS         route reloads, spread evenly over the run (default 30)
#   CERT_ROTATIONS  certificate rotations, spread evenly over the run, 3 s after the even spot (default 5)
#   SIGHUP_EVERY    seconds between two SIGHUPs to the gateway, the first at half that (default 60; 0 = none)
#   PROBE_EVERY     seconds between two probe requests, each on a new TLS connection (default 1)
#   RETRY_ATTEMPTS  the route's [route.retry] attempts (default 2; 0 = no retries, to see what the
#                   faults do to requests without them)
#   RETRY_ON        the route's [route.retry] on, comma-separated (default connect-failure,reset)
#   SWITCHYARD_BIN  the switchyard binary; unset = `cargo build --release` in the repo (target/ there)
#   SWITCHYARD_WORKER_THREADS  the gateway's serving threads (unset = one per CPU)
#   SWITCHYARD_LOG  the gateway's log filter (default info)
#   OUT_DIR         where the run's folder goes (default bench/out); chaos-YYYYmmdd-HHMMSS/ inside
#   KEEP_ACCESS_LOG 1 = copy the whole access log into the run's folder (default 0: only the lines
#                   of failed and of retried requests are kept)
set -Eeuo pipefail
# A command that fails the script says where (the trap is inherited by functions and subshells).
trap 'printf "[chaos] line %s: \"%s\" failed (status %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

# ---------------------------------------------------------------- settings --
DURATION=${DURATION:-300}
DURATION=${DURATION%s}
RATE=${RATE:-1000}
H1_CLIENTS=${H1_CLIENTS:-4}
H2_CLIENTS=${H2_CLIENTS:-4}
KILL_EVERY=${KILL_EVERY:-10}
RESTART_AFTER=${RESTART_AFTER:-2}
ZK_RESTARTS=${ZK_RESTARTS:-2}
RELOADS=${RELOADS:-30}
CERT_ROTATIONS=${CERT_ROTATIONS:-5}
SIGHUP_EVERY=${SIGHUP_EVERY:-60}
PROBE_EVERY=${PROBE_EVERY:-1}
RETRY_ATTEMPTS=${RETRY_ATTEMPTS:-2}
RETRY_ON=${RETRY_ON:-connect-failure,reset}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
KEEP_ACCESS_LOG=${KEEP_ACCESS_LOG:-0}
export SWITCHYARD_LOG=${SWITCHYARD_LOG:-info}

for v in DURATION RATE H1_CLIENTS H2_CLIENTS KILL_EVERY RESTART_AFTER ZK_RESTARTS RELOADS CERT_ROTATIONS SIGHUP_EVERY PROBE_EVERY KEEP_ACCESS_LOG RETRY_ATTEMPTS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "chaos.sh: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
(( DURATION >= 20 && DURATION <= 3600 )) || { echo "chaos.sh: DURATION must be 20..3600 seconds (the run is bounded), got $DURATION" >&2; exit 2; }
(( H1_CLIENTS + H2_CLIENTS > 0 )) || { echo "chaos.sh: H1_CLIENTS + H2_CLIENTS must be > 0" >&2; exit 2; }
(( RATE >= H1_CLIENTS + H2_CLIENTS )) || { echo "chaos.sh: RATE must be at least one request/s per client" >&2; exit 2; }
(( PROBE_EVERY > 0 )) || { echo "chaos.sh: PROBE_EVERY must be > 0" >&2; exit 2; }
(( KILL_EVERY == 0 || RESTART_AFTER < KILL_EVERY )) || { echo "chaos.sh: RESTART_AFTER must be shorter than KILL_EVERY (one upstream down at a time)" >&2; exit 2; }

log() { printf '[chaos %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[chaos] setup failed: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ process care --
# Every process this script starts is recorded in LIVE (PID -> what it is) and ended by PID on
# exit, including on Ctrl-C. A PID leaves LIVE once the script has ended and reaped it (a killed
# upstream, a stopped ZooKeeper), so a number the kernel has reused is never signalled. Before
# signalling, cleanup also checks that the PID is still a child of this shell.
declare -A LIVE=()
TMP=""
PROBE_PID=""

track()   { LIVE[$1]=$2; }
untrack() { unset "LIVE[$1]"; }
is_our_child() { [[ $(awk '{ print $4 }' "/proc/$1/stat" 2>/dev/null) == "$$" ]]; }

# stop_pid PID [SIGNAL]: signal one of our processes, wait for it (at most 10 s, then SIGKILL).
stop_pid() {
    local pid=$1 sig=${2:-TERM} i
    is_our_child "$pid" || { untrack "$pid"; return 0; }
    kill -"$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
        kill -KILL "$pid" 2>/dev/null || true   # (it may have ended and been reaped just now)
    fi
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
}

cleanup() {
    local rc=$? pid c i alive
    trap - EXIT INT TERM
    # The probe loop's curl (a grandchild) first, then everything we started: polite ...
    if [[ -n $PROBE_PID ]] && is_our_child "$PROBE_PID"; then
        for c in $(children_of "$PROBE_PID"); do kill -TERM "$c" 2>/dev/null || true; done
    fi
    for pid in "${!LIVE[@]}"; do is_our_child "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 1 50); do
        alive=0
        for pid in "${!LIVE[@]}"; do is_our_child "$pid" && [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]] && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    # ... then firm, still by PID only.
    for pid in "${!LIVE[@]}"; do is_our_child "$pid" && kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${!LIVE[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------- tools --
ZK_JAR=/usr/share/java/zookeeper.jar
ZK_CONF=/etc/zookeeper/conf
ZK_CLI=/usr/share/zookeeper/bin/zkCli.sh
missing=()
command -v java    >/dev/null 2>&1 || missing+=(java)
[[ -f $ZK_JAR && -x $ZK_CLI ]]     || missing+=(zookeeper)
command -v h2load  >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v curl    >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v ss      >/dev/null 2>&1 || missing+=(iproute2)
((${#missing[@]} == 0)) || die "missing: ${missing[*]} (Debian: apt-get install -y ${missing[*]/java/default-jre-headless})"

if [[ -z $SWITCHYARD_BIN ]]; then
    log "building switchyard: cargo build --release (set SWITCHYARD_BIN to skip)"
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
    (cd "$REPO_DIR" && cargo build --release) >&2 || die "cargo build --release failed"
    SWITCHYARD_BIN=$CARGO_TARGET_DIR/release/switchyard
fi
[[ -x $SWITCHYARD_BIN ]] || die "SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable"
SWITCHYARD_BIN=$(cd "$(dirname "$SWITCHYARD_BIN")" && pwd)/$(basename "$SWITCHYARD_BIN")

TMP=$(mktemp -d /tmp/switchyard-chaos.XXXXXX)
STAMP=$(date +%Y%m%d-%H%M%S)
RUN_DIR=$OUT_DIR/chaos-$STAMP
mkdir -p "$RUN_DIR"
EVENTS=$RUN_DIR/events.log          # one line per fault: epoch seconds, elapsed, what
: > "$EVENTS"

# ------------------------------------------------------------------- ports --
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # free_port, wait_listen, children_of

# ZooKeeper four-letter word (srvr answers "Mode: standalone" once it serves).
four_letter() {
    python3 - "$1" "$2" <<'EOF' 2>/dev/null || true
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5)
    s.settimeout(2); s.sendall(sys.argv[2].encode()); out = b""
    while True:
        b = s.recv(4096)
        if not b: break
        out += b
    print(out.decode(errors="replace"))
except OSError:
    pass
EOF
}
zk_ready() { [[ $(four_letter "$ZK_PORT" srvr) == *"Mode: standalone"* ]]; }

now() { date +%s.%N; }
T0=""
elapsed() { awk -v a="$(now)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }'; }
event() {   # event WHAT...: record a fault (and print it)
    local t; t=$(now)
    printf '%s %s %s\n' "$t" "$(awk -v a="$t" -v b="${T0:-$t}" 'BEGIN { printf "%.1f", a - b }')" "$*" >> "$EVENTS"
    log "t+$(awk -v a="$t" -v b="${T0:-$t}" 'BEGIN { printf "%.1f", a - b }')s $*"
}

# --------------------------------------------------------------- ZooKeeper --
ZK_DIR=$TMP/zk
mkdir -p "$ZK_DIR/data"
ZK_PORT=$(free_port)
cat > "$ZK_DIR/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
4lw.commands.whitelist=*
admin.enableServer=false
EOF
ZK_PID=""
start_zk() {
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.log.dir="$ZK_DIR" \
        -cp "$ZK_CONF:$ZK_JAR" org.apache.zookeeper.server.ZooKeeperServerMain "$ZK_DIR/zoo.cfg" \
        </dev/null >>"$ZK_DIR/server.log" 2>&1 &
    ZK_PID=$!
    track "$ZK_PID" zookeeper
}
wait_zk() {   # wait_zk SECONDS
    local i
    for i in $(seq 1 $(( $1 * 10 ))); do
        kill -0 "$ZK_PID" 2>/dev/null || return 1
        zk_ready && return 0
        sleep 0.1
    done
    return 1
}
zkcli() {   # zkcli ARGS...: one zkCli.sh command against our server
    ZOO_LOG_DIR=$ZK_DIR CLIENT_JVMFLAGS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" \
        timeout 60 "$ZK_CLI" -server "127.0.0.1:$ZK_PORT" "$@" </dev/null >>"$ZK_DIR/zkcli.log" 2>&1
}

log "ZooKeeper on 127.0.0.1:$ZK_PORT (data dir $ZK_DIR/data)"
start_zk
wait_zk 60 || { tail -n 30 "$ZK_DIR/server.log" >&2; die "ZooKeeper did not become ready in 60 s"; }

# --------------------------------------------------------------- upstreams --
declare -a UP_PORT UP_PID
start_upstream() {   # start_upstream I (0-based)
    local i=$1
    "$SWITCHYARD_BIN" echo --listen "127.0.0.1:${UP_PORT[$i]}" --name "u$(( i + 1 ))" \
        </dev/null >>"$TMP/u$(( i + 1 )).log" 2>&1 &
    UP_PID[$i]=$!
    track "$!" "upstream u$(( i + 1 ))"
}
for i in 0 1 2; do
    UP_PORT[$i]=$(free_port)
    start_upstream "$i"
    wait_listen "${UP_PID[$i]}" "${UP_PORT[$i]}" || { cat "$TMP/u$(( i + 1 )).log" >&2; die "upstream u$(( i + 1 )) did not start"; }
done
log "upstreams u1 u2 u3 on 127.0.0.1:${UP_PORT[0]} :${UP_PORT[1]} :${UP_PORT[2]}"

# Register them: persistent children of /services/echo, data "127.0.0.1:PORT" (hostport).
zkcli create /services || true
zkcli create /services/echo || true
for i in 0 1 2; do
    zkcli create "/services/echo/u$(( i + 1 ))" "127.0.0.1:${UP_PORT[$i]}" || true
done
zkcli ls /services/echo || true
for i in 0 1 2; do
    grep -q "u$(( i + 1 ))" <(tail -n 5 "$ZK_DIR/zkcli.log") || { tail -n 40 "$ZK_DIR/zkcli.log" >&2; die "cannot register u$(( i + 1 )) in ZooKeeper"; }
done
log "registered /services/echo/{u1,u2,u3} in ZooKeeper"

# ------------------------------------------------------------ certificates --
GW_DIR=$TMP/gateway
CERTS=$GW_DIR/certs
STAGE=$TMP/stage                  # files are made here, then renamed into place (same file system)
mkdir -p "$CERTS" "$GW_DIR/routes" "$STAGE"
CERT_GEN=0
# new_cert: a fresh self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, with its key,
# in one PEM file (certificate first), renamed over certs/chaos.pem: one atomic change.
new_cert() {
    CERT_GEN=$(( CERT_GEN + 1 ))
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=localhost/OU=chaos-gen-$CERT_GEN" -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$STAGE/key.pem" -out "$STAGE/cert.pem" >"$STAGE/openssl.log" 2>&1 || return 1
    cat "$STAGE/cert.pem" "$STAGE/key.pem" > "$STAGE/chaos.pem.new"
    chmod 600 "$STAGE/chaos.pem.new"
    mv -f "$STAGE/chaos.pem.new" "$CERTS/chaos.pem"
    rm -f "$STAGE/key.pem" "$STAGE/cert.pem"
}
new_cert || { cat "$STAGE/openssl.log" >&2; die "cannot make a certificate with openssl"; }

# ----------------------------------------------------------------- gateway --
GW_PORT=$(free_port)
GW_TLS_PORT=$(free_port)
ADMIN_PORT=$(free_port)
ACCESS_LOG=$GW_DIR/access.log
cat > "$GW_DIR/gateway.toml" <<EOF
[gateway]
routes_dir = "routes"
drain_timeout = "2s"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[[listener]]
name = "http"
listen = "127.0.0.1:$GW_PORT"

[[listener]]
name = "https"
listen = "127.0.0.1:$GW_TLS_PORT"
[listener.tls]
certs_dir = "certs"

[access_log]
enabled = true
path = "access.log"
EOF

ROUTE_GEN=0
RETRY_ON_TOML=$(IFS=,; for c in $RETRY_ON; do printf '"%s", ' "$c"; done | sed 's/, $//')
# write_route: the route file, with x-chaos-generation = ROUTE_GEN, renamed into routes/.
write_route() {
    cat > "$STAGE/echo.toml.new" <<EOF
[[upstream]]
name = "echo"
discovery = { type = "zookeeper", servers = "127.0.0.1:$ZK_PORT", path = "/services/echo", format = "hostport" }
balance = "round_robin"

[upstream.health]
type = "http"
path = "/healthz"
interval = "1s"

[upstream.outlier]

[[route]]
name = "echo"
path_prefix = "/"
upstream = "echo"
response_headers = { set = { "x-chaos-generation" = "$ROUTE_GEN" } }

[route.retry]
attempts = $RETRY_ATTEMPTS
on = [$RETRY_ON_TOML]
EOF
    mv -f "$STAGE/echo.toml.new" "$GW_DIR/routes/echo.toml"
}
write_route

"$SWITCHYARD_BIN" check --config "$GW_DIR/gateway.toml" >"$TMP/check.log" 2>&1 \
    || { cat "$TMP/check.log" >&2; die "switchyard check refused the generated config"; }

GW_LOG=$GW_DIR/gateway.log
NO_COLOR=1 "$SWITCHYARD_BIN" --config "$GW_DIR/gateway.toml" </dev/null >"$GW_DIR/stdout.log" 2>"$GW_LOG" &
GW_PID=$!
track "$GW_PID" gateway
for p in "$GW_PORT" "$GW_TLS_PORT" "$ADMIN_PORT"; do
    wait_listen "$GW_PID" "$p" || { tail -n 40 "$GW_LOG" >&2; die "the gateway did not listen on 127.0.0.1:$p"; }
done
ADMIN=http://127.0.0.1:$ADMIN_PORT
# Ready, and all three endpoints discovered and healthy.
healthy=0
for i in $(seq 1 150); do
    if curl -sf -o /dev/null "$ADMIN/ready" \
        && healthy=$(curl -sf "$ADMIN/upstreams" | python3 -c '
import json, sys
d = json.load(sys.stdin)
ups = d if isinstance(d, list) else d.get("upstreams", d)
if isinstance(ups, dict): ups = list(ups.values())
n = 0
for u in ups:
    if u.get("name") == "echo":
        n = sum(1 for e in u.get("endpoints", []) if str(e.get("health", "")).lower() == "healthy")
print(n)') && [[ $healthy == 3 ]]; then
        break
    fi
    sleep 0.1
done
[[ $healthy == 3 ]] || { curl -s "$ADMIN/upstreams" >&2 || true; tail -n 40 "$GW_LOG" >&2; die "the gateway did not see three healthy endpoints in 15 s"; }
# The three upstreams answer through both listeners.
seen=""
for i in 1 2 3; do
    out=$(curl -sf "http://127.0.0.1:$GW_PORT/setup") || { tail -n 20 "$GW_LOG" >&2; die "GET http://127.0.0.1:$GW_PORT/setup failed"; }
    seen+=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["name"])' "$out")" "
done
for v in --http1.1 --http2; do
    out=$(curl -sk "$v" -o /dev/null -w '%{http_version} %{http_code}' "https://127.0.0.1:$GW_TLS_PORT/setup") || die "TLS $v GET /setup failed"
    [[ $out == *" 200" ]] || die "TLS $v GET /setup -> $out"
done
log "gateway pid $GW_PID: http 127.0.0.1:$GW_PORT, https 127.0.0.1:$GW_TLS_PORT, admin $ADMIN; answered by: $seen"

# ------------------------------------------------------------ measurements --
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds()     { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# The gateway's established connections to the upstreams (its keep-alive pools).
up_conns() {
    ss -Htnp state established "( dport = :${UP_PORT[0]} or dport = :${UP_PORT[1]} or dport = :${UP_PORT[2]} )" 2>/dev/null \
        | grep -c "pid=$1," || true
}
RSS_START=$(rss_kib "$GW_PID")
FDS_START=$(fds "$GW_PID")
UPC_START=$(up_conns "$GW_PID")

# ---------------------------------------------------------------- schedule --
# One line per fault: "SECONDS ACTION ARG", sorted by time.
SCHED=$TMP/schedule
{
    if (( KILL_EVERY > 0 )); then
        k=0
        for (( t = KILL_EVERY / 2; t + RESTART_AFTER < DURATION; t += KILL_EVERY )); do
            echo "$t kill $(( k % 3 ))"
            echo "$(( t + RESTART_AFTER )) restart $(( k % 3 ))"
            k=$(( k + 1 ))
        done
    fi
    spread() {   # spread N ACTION [OFFSET]: N times evenly over the run, at i * DURATION / (N + 1) + OFFSET
        local n=$1 a=$2 off=${3:-0} i
        for (( i = 1; i <= n; i++ )); do
            awk -v i="$i" -v n="$n" -v d="$DURATION" -v a="$a" -v o="$off" 'BEGIN { t = i * d / (n + 1) + o; if (t < d) printf "%.2f %s %d\n", t, a, i }'
        done
    }
    spread "$ZK_RESTARTS" zk-restart
    spread "$RELOADS" reload
    spread "$CERT_ROTATIONS" cert 3     # 3 s later: not on top of a ZooKeeper restart
    if (( SIGHUP_EVERY > 0 )); then
        for (( t = SIGHUP_EVERY / 2; t < DURATION; t += SIGHUP_EVERY )); do echo "$t sighup 0"; done
    fi
} | sort -n -k1,1 > "$SCHED"

declare -A COUNT=([kill]=0 [restart]=0 [zk-restart]=0 [reload]=0 [cert]=0 [sighup]=0)
ZK_DOWN_AT=""
ZK_DOWNTIMES=""

do_fault() {   # do_fault ACTION ARG
    local a=$1 arg=$2 i old
    case $a in
        kill)
            i=$arg; old=${UP_PID[$i]}
            if is_our_child "$old"; then kill -KILL "$old" 2>/dev/null || true; fi
            wait "$old" 2>/dev/null || true
            untrack "$old"
            event "kill -9 upstream u$(( i + 1 )) (pid $old, port ${UP_PORT[$i]})" ;;
        restart)
            i=$arg
            start_upstream "$i"
            if wait_listen "${UP_PID[$i]}" "${UP_PORT[$i]}" 30; then
                event "restarted upstream u$(( i + 1 )) (pid ${UP_PID[$i]}, port ${UP_PORT[$i]})"
            else
                event "upstream u$(( i + 1 )) did NOT restart on port ${UP_PORT[$i]}: $(tail -n 1 "$TMP/u$(( i + 1 )).log")"
            fi ;;
        zk-restart)
            old=$ZK_PID
            stop_pid "$old" TERM
            ZK_DOWN_AT=$(now)
            event "ZooKeeper stopped (pid $old)"
            start_zk
            event "ZooKeeper starting again (pid $ZK_PID, port $ZK_PORT, same data dir)" ;;
        reload)
            ROUTE_GEN=$(( ROUTE_GEN + 1 ))
            write_route
            event "route reload $ROUTE_GEN (x-chaos-generation: $ROUTE_GEN)" ;;
        cert)
            if new_cert; then
                event "certificate rotation $(( CERT_GEN - 1 )) (now OU=chaos-gen-$CERT_GEN)"
            else
                event "certificate rotation FAILED: $(tail -n 1 "$STAGE/openssl.log")"
            fi ;;
        sighup)
            kill -HUP "$GW_PID"
            event "SIGHUP to the gateway" ;;
    esac
    COUNT[$a]=$(( COUNT[$a] + 1 ))
}

# --------------------------------------------------------------------- run --
PER_CLIENT=$(awk -v r="$RATE" -v c="$(( H1_CLIENTS + H2_CLIENTS ))" 'BEGIN { printf "%.2f", r / c }')
log "plan: ${DURATION}s at $RATE req/s ($H1_CLIENTS HTTP/1.1 + $H2_CLIENTS TLS h2 clients x $PER_CLIENT req/s), a TLS probe every ${PROBE_EVERY}s;"
log "      faults: $(awk '{ print $2 }' "$SCHED" | sort | uniq -c | awk '{ printf "%s%s x%d", (NR > 1 ? ", " : ""), $2, $1 }')"
log "      run folder: $RUN_DIR"

T0=$(now)
echo "$T0 0.0 start" >> "$EVENTS"

H1_LOG=$RUN_DIR/h2load-h1.txt
H2_LOG=$RUN_DIR/h2load-h2.txt
H1_PID="" H2_PID=""
if (( H1_CLIENTS > 0 )); then
    h2load --h1 -c"$H1_CLIENTS" -t1 --rps="$PER_CLIENT" -D"$DURATION" "http://127.0.0.1:$GW_PORT/h1" </dev/null >"$H1_LOG" 2>&1 &
    H1_PID=$!; track "$H1_PID" "h2load h1"
fi
if (( H2_CLIENTS > 0 )); then
    h2load -c"$H2_CLIENTS" -t1 --rps="$PER_CLIENT" -D"$DURATION" "https://127.0.0.1:$GW_TLS_PORT/h2" </dev/null >"$H2_LOG" 2>&1 &
    H2_PID=$!; track "$H2_PID" "h2load h2"
fi

# The probe: a new TLS connection (new handshake) every PROBE_EVERY s; one line per probe:
# epoch, curl's exit code, HTTP status, the certificate's OU (which rotation served it).
PROBE_LOG=$RUN_DIR/probe.log
: > "$PROBE_LOG"
(
    trap - EXIT INT TERM
    end=$(awk -v t="$T0" -v d="$DURATION" 'BEGIN { printf "%.3f", t + d }')
    next_t=$T0
    while :; do
        next_t=$(awk -v n="$next_t" -v p="$PROBE_EVERY" 'BEGIN { printf "%.3f", n + p }')
        awk -v n="$next_t" -v e="$end" 'BEGIN { exit !(n <= e) }' || break
        d=$(awk -v n="$next_t" -v t="$(date +%s.%N)" 'BEGIN { x = n - t; printf "%.3f", (x > 0 ? x : 0) }')
        sleep "$d"
        t=$(date +%s.%N)
        rc=0
        code=$(curl -sk -v --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$GW_TLS_PORT/probe" 2>"$TMP/probe.err") || rc=$?
        ou=$(grep -o 'OU=chaos-gen-[0-9]*' "$TMP/probe.err" | head -n 1 | cut -d- -f3 || true)
        err=$(grep -E '^curl:|^\* (OpenSSL|TLS|SSL).*(error|alert)' "$TMP/probe.err" | head -n 1 | tr '\t' ' ' || true)
        printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$rc" "$code" "${ou:-?}" "$err" >> "$PROBE_LOG"
    done
) </dev/null &
PROBE_PID=$!
track "$PROBE_PID" "probe loop"

# The scheduler: wait for each fault's time, do it. ZooKeeper's readiness after a restart is
# watched on the side, so the schedule does not stall while the JVM starts.
while read -r at action arg <&3; do
    while :; do
        el=$(elapsed)
        if [[ -n $ZK_DOWN_AT ]] && zk_ready; then
            dt=$(awk -v a="$(now)" -v b="$ZK_DOWN_AT" 'BEGIN { printf "%.1f", a - b }')
            ZK_DOWNTIMES+="${ZK_DOWNTIMES:+, }${dt}s"; ZK_DOWN_AT=""
            event "ZooKeeper serving again after ${dt}s"
        fi
        awk -v e="$el" -v a="$at" 'BEGIN { exit !(e >= a) }' && break
        sleep 0.2
    done
    do_fault "$action" "$arg" </dev/null
done 3< "$SCHED"

# Until the load ends (and ZooKeeper is back, if a restart is still under way).
while :; do
    if [[ -n $ZK_DOWN_AT ]] && zk_ready; then
        dt=$(awk -v a="$(now)" -v b="$ZK_DOWN_AT" 'BEGIN { printf "%.1f", a - b }')
        ZK_DOWNTIMES+="${ZK_DOWNTIMES:+, }${dt}s"; ZK_DOWN_AT=""
        event "ZooKeeper serving again after ${dt}s"
    fi
    awk -v e="$(elapsed)" -v d="$DURATION" 'BEGIN { exit !(e >= d) }' && break
    sleep 0.5
done
[[ -n $ZK_DOWN_AT ]] && { wait_zk 30 || true; ZK_DOWNTIMES+="${ZK_DOWNTIMES:+, }not back at the end"; }

# h2load stops by itself after -D; give it (and the last probe) 30 s, then stop them.
for p in $H1_PID $H2_PID $PROBE_PID; do
    for i in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "pid $p (${LIVE[$p]:-?}) still running 30 s after the end; stopping it"; stop_pid "$p" TERM; fi
    wait "$p" 2>/dev/null || true
    untrack "$p"
done
PROBE_PID=""
echo "$(now) $(elapsed) end" >> "$EVENTS"
sleep 1   # the access log writer flushes at least once a second

RSS_END=$(rss_kib "$GW_PID")
HWM_END=$(hwm_kib "$GW_PID")
FDS_END=$(fds "$GW_PID")
UPC_END=$(up_conns "$GW_PID")
kill -0 "$GW_PID" 2>/dev/null && GW_ALIVE=yes || GW_ALIVE=NO
curl -s "$ADMIN/metrics" > "$RUN_DIR/metrics.txt" 2>/dev/null || true
curl -s "$ADMIN/upstreams" > "$RUN_DIR/upstreams.json" 2>/dev/null || true
curl -s "$ADMIN/config" > "$RUN_DIR/config.json" 2>/dev/null || true
FINAL_GEN=$(curl -s -D - -o /dev/null "http://127.0.0.1:$GW_PORT/final" 2>/dev/null | tr -d '\r' | awk -F': ' 'tolower($1) == "x-chaos-generation" { print $2 }' || true)
cp "$GW_LOG" "$RUN_DIR/gateway.log"
cp "$ZK_DIR/server.log" "$RUN_DIR/zookeeper.log" 2>/dev/null || true
cat "$TMP"/u?.log > "$RUN_DIR/upstreams.log" 2>/dev/null || true

# ------------------------------------------------------------------ report --
export RUN_DIR ACCESS_LOG H1_LOG H2_LOG PROBE_LOG EVENTS DURATION RATE H1_CLIENTS H2_CLIENTS \
    PER_CLIENT RSS_START RSS_END HWM_END FDS_START FDS_END UPC_START UPC_END GW_ALIVE ROUTE_GEN FINAL_GEN CERT_GEN ZK_DOWNTIMES \
    KEEP_ACCESS_LOG PROBE_EVERY RETRY_ATTEMPTS RETRY_ON_TOML
export C_KILL=${COUNT[kill]} C_RESTART=${COUNT[restart]} C_ZK=${COUNT[zk-restart]} C_RELOAD=${COUNT[reload]} \
    C_CERT=${COUNT[cert]} C_HUP=${COUNT[sighup]}
python3 - <<'PYEOF' | tee "$RUN_DIR/table.txt"
import json, os, re, bisect, datetime, collections
E = os.environ
run = E["RUN_DIR"]

def h2load(path):
    r = {"ok": False}
    try:
        txt = open(path).read()
    except OSError:
        return r
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", txt, re.M)
    if m:
        r.update(ok=True, total=int(m[1]), started=int(m[2]), done=int(m[3]), succeeded=int(m[4]),
                 failed=int(m[5]), errored=int(m[6]), timeout=int(m[7]))
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", txt, re.M)
    if m:
        r.update(s2=int(m[1]), s3=int(m[2]), s4=int(m[3]), s5=int(m[4]))
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", txt, re.M)
    def ms(v):
        n = float(re.match(r"[\d.]+", v)[0]); u = v[len(re.match(r"[\d.]+", v)[0]):]
        return n * {"us": 1e-3, "ms": 1.0, "s": 1e3}.get(u, 1.0)
    if m:
        r.update(max_ms=ms(m[2]), mean_ms=ms(m[3]))
    return r

h1 = h2load(E["H1_LOG"]) if int(E["H1_CLIENTS"]) else {"ok": False}
h2 = h2load(E["H2_LOG"]) if int(E["H2_CLIENTS"]) else {"ok": False}

# Access log lines of this run (the load and the probes; /setup and /final are left out).
recs = []
with open(E["ACCESS_LOG"]) as f:
    for n, line in enumerate(f):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("path") in ("/h1", "/h2", "/probe"):
            recs.append(r)
def ts(r):
    return datetime.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()

by_status = collections.Counter(r["status"] for r in recs)
by_error = collections.Counter(r.get("error") for r in recs if r.get("error"))
durs = sorted(float(r["duration_ms"]) for r in recs)
def pct(p):
    return durs[min(len(durs) - 1, int((len(durs) - 1) * p))] if durs else 0.0
failed = [r for r in recs if r.get("error") or not (200 <= r["status"] < 400)]

# Events (faults) and, for each failed request, the latest fault at or before it.
events = []
for line in open(E["EVENTS"]):
    parts = line.rstrip("\n").split(" ", 2)
    if len(parts) == 3 and parts[2] not in ("start", "end"):
        events.append((float(parts[0]), float(parts[1]), parts[2]))
etimes = [e[0] for e in events]
def kind(what):
    for k, v in (("kill -9", "upstream killed"), ("restarted upstream", "upstream restarted"),
                 ("ZooKeeper", "ZooKeeper restart"), ("route reload", "route reload"),
                 ("certificate", "certificate rotation"), ("SIGHUP", "SIGHUP")):
        if what.startswith(k) or k in what:
            return v
    return what
def attribute(lst, fname):
    """Count (status, error, last fault before it) and keep the lines, each with that fault."""
    c = collections.Counter()
    with open(os.path.join(run, fname), "w") as out:
        for r in lst:
            t = ts(r)
            i = bisect.bisect_right(etimes, t + 0.05) - 1   # the log's ts may be the request's end
            r = dict(r)
            if i >= 0:
                r["chaos_last_fault"] = events[i][2]
                r["chaos_since_fault_s"] = round(t - events[i][0], 3)
            c[(r["status"], r.get("error") or "-", kind(events[i][2]) if i >= 0 else "before any fault")] += 1
            out.write(json.dumps(r) + "\n")
    return c
attrib = attribute(failed, "failed-requests.jsonl")
retried_recs = [r for r in recs if r.get("attempts", 0) > 1]
attrib_retried = attribute(retried_recs, "retried-requests.jsonl")
if E.get("KEEP_ACCESS_LOG") == "1":
    import shutil
    shutil.copy(E["ACCESS_LOG"], os.path.join(run, "access.log"))

# Probes.
probes = [l.rstrip("\n").split("\t") for l in open(E["PROBE_LOG"]) if l.strip()]
probe_fail = [p for p in probes if p[1] != "0" or p[2] != "200"]
gens = collections.Counter(p[3] for p in probes if p[3] != "?")

# Gateway counters.
metrics = collections.defaultdict(float)
try:
    for line in open(os.path.join(run, "metrics.txt")):
        if line.startswith("#") or not line.strip():
            continue
        name, _, val = line.rpartition(" ")
        metrics[name] += float(val)
except OSError:
    pass
def msum(prefix, **labels):
    t = 0.0
    for k, v in metrics.items():
        if k.split("{")[0] == prefix and all(f'{a}="{b}"' in k for a, b in labels.items()):
            t += v
    return int(t)
def mby(prefix, label):
    c = collections.Counter()
    for k, v in metrics.items():
        if k.split("{")[0] == prefix:
            m = re.search(label + r'="([^"]*)"', k)
            c[m[1] if m else "-"] += int(v)
    return c

rows = []
def row(a, b=""):
    rows.append((a, str(b)))
def sec(title):
    rows.append((None, title))

dur = int(E["DURATION"])
clients = int(E["H1_CLIENTS"]) + int(E["H2_CLIENTS"])
offered = round(float(E["PER_CLIENT"]) * clients * dur)
def g(d, k):
    return d.get(k, 0) if d.get("ok") else 0
def both(k):
    return f'{g(h1, k) + g(h2, k)}  (h1 {g(h1, k)}, h2 {g(h2, k)})'
sec(f"route: [route.retry] attempts = {E['RETRY_ATTEMPTS']}, on = [{E['RETRY_ON_TOML']}]; balance round_robin; [upstream.outlier] defaults; http health check every 1 s")
sec(f"load: {dur} s at {E['RATE']} req/s offered ({E['H1_CLIENTS']} HTTP/1.1 + {E['H2_CLIENTS']} TLS h2 clients x {E['PER_CLIENT']} req/s), h2load")
row("requests offered (rate x duration)", offered)
row("requests sent (h2load started)", both("started"))
row("succeeded (2xx, complete)", both("succeeded"))
row("failed", both("failed"))
for lab, k in (("  with a 4xx status", "s4"), ("  with a 5xx status", "s5")):
    row(lab, both(k))
row("  no complete response (errored)", both("errored"))
row("  timeout", both("timeout"))
rows.append(("in flight when the load stopped (not counted)", f'{g(h1, "started") + g(h2, "started") - g(h1, "done") - g(h2, "done")}'))
row("h2load latency mean / max, h1 (ms)", f'{h1.get("mean_ms", 0):.2f} / {h1.get("max_ms", 0):.2f}' if h1.get("ok") else "-")
row("h2load latency mean / max, h2 (ms)", f'{h2.get("mean_ms", 0):.2f} / {h2.get("max_ms", 0):.2f}' if h2.get("ok") else "-")
sec("access log (load + probes)")
row("requests logged", len(recs))
row("by status", ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
row("by error reason", ", ".join(f"{e}: {n}" for e, n in by_error.most_common()) or "none")
row("failed (status not 2xx/3xx, or an error)", len(failed))
row("retried (attempts > 1)", f'{len(retried_recs)}  ({sum(1 for r in retried_recs if r in failed)} of them failed)')
row("latency p50 / p99 / max (ms, duration_ms)", f"{pct(0.50):.2f} / {pct(0.99):.2f} / {durs[-1] if durs else 0:.2f}")
if attrib:
    sec("failed requests by the last fault before them (status, error: fault)")
    for (s, e, k), n in attrib.most_common():
        row(f"  {s} {e}: after {k}", n)
if attrib_retried:
    sec("retried requests by the last fault before them (final status, error: fault)")
    for (s, e, k), n in attrib_retried.most_common():
        row(f"  {s} {e}: after {k}", n)
sec(f"probe: one new TLS connection every {E['PROBE_EVERY']} s (curl -k)")
row("probes / failed", f"{len(probes)} / {len(probe_fail)}")
row("certificates seen (OU=chaos-gen-N: probes)", ", ".join(f"{k}: {v}" for k, v in sorted(gens.items(), key=lambda x: int(x[0]))))
sec("gateway process")
row("alive at the end", E["GW_ALIVE"])
row("VmRSS start -> end (MiB)", f'{int(E["RSS_START"]) / 1024:.1f} -> {int(E["RSS_END"]) / 1024:.1f}  (peak VmHWM {int(E["HWM_END"]) / 1024:.1f})')
row("open descriptors start -> end", f'{E["FDS_START"]} -> {E["FDS_END"]}')
row("  of which connections to upstreams", f'{E["UPC_START"]} -> {E["UPC_END"]}')
sec("faults injected")
row("upstreams killed (kill -9) / restarted", f'{E["C_KILL"]} / {E["C_RESTART"]}')
row("ZooKeeper restarts (time to serve again)", f'{E["C_ZK"]}' + (f'  ({E["ZK_DOWNTIMES"]})' if E["ZK_DOWNTIMES"] else ""))
row("route reloads (last generation served)", f'{E["C_RELOAD"]}  (x-chaos-generation {E["FINAL_GEN"] or "?"} of {E["ROUTE_GEN"]})')
row("certificate rotations", E["C_CERT"])
row("SIGHUP", E["C_HUP"])
sec("gateway counters (/metrics at the end)")
row("reloads by result", ", ".join(f"{k}: {v}" for k, v in sorted(mby("switchyard_config_reloads_total", "result").items())) or "-")
row("retries by condition", ", ".join(f"{k}: {v}" for k, v in sorted(mby("switchyard_retries_total", "reason").items())) or "0")
row("discovery updates / errors", f'{msum("switchyard_discovery_updates_total")} / {msum("switchyard_discovery_errors_total")}')
row("TLS handshakes", ", ".join(f"{k}: {v}" for k, v in sorted(mby("switchyard_tls_handshakes_total", "result").items())) or "-")

w = max(len(a) for a, _ in rows if a is not None)
print()
for a, b in rows:
    if a is None:
        print(f"{b}")
    else:
        print(f"  {a:<{w}}  {b}")
print()
print(f"run folder: {run}")
PYEOF
