#!/usr/bin/env bash
# bench/compare.sh: switchyard vs NGINX vs HAProxy as equivalent reverse proxies
# in front of one fast upstream, on loopback, in interleaved rounds.
#
# See bench/README.md for what every figure means. Quick start:
#   bench/compare.sh                                      # everything, ~15 min
#   SCENARIOS=get64,post1k,get16k bench/compare.sh        # plain HTTP/1.1 only, ~5 min
#   PROXIES=nginx,haproxy DURATION=3 ROUNDS=1 bench/compare.sh
#   SWITCHYARD_BIN=target/release/switchyard bench/compare.sh   # skip the cargo build
#   UPSTREAM_MODE=slow PROXIES=switchyard_rr,switchyard_p2c SCENARIOS=get64 bench/compare.sh
#                                                         # one of three upstreams slow: p99 by balancer
#   PROXIES=switchyard_bare,switchyard_full SCENARIOS=get64,post1k bench/compare.sh
#                                                         # the cost of retry/timeout/limits/rate-limit layers
#   UPSTREAM_MODE=failing PROXIES=nginx,haproxy,switchyard SCENARIOS=get64 bench/compare.sh
#                                                         # one of three upstreams refuses connections: error rate
#   SWITCHYARD_BASE_BIN=/tmp/before/switchyard PROXIES=nginx,switchyard_base,switchyard SCENARIOS=get64 bench/compare.sh
#                                                         # before/after a change, interleaved in one run
#   PROXIES=switchyard SCENARIOS=soak IDLE_CONNS=0 bench/compare.sh
#                                                         # 10 min at RATE req/s, RSS sampled every 30 s
#   WORKERS=defaults SCENARIOS=get64,post1k bench/compare.sh
#                                                         # every proxy as shipped: nginx worker_processes
#                                                         # auto, haproxy's default nbthread, switchyard's
#                                                         # default threads
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

# ---------------------------------------------------------------- settings --
DURATION=${DURATION:-10}                 # seconds per measured run ("10" or "10s")
DURATION=${DURATION%s}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-get64,post1k,get16k,rate64,tlsh1,tlsh2,tls13hs}
PROXIES=${PROXIES:-nginx,haproxy,switchyard}
WORKERS=${WORKERS:-1}                    # worker processes/threads given to EACH proxy, or
                                         # "defaults": each proxy's shipped default
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}  # nginx worker processes of the fast upstream
CONNECTIONS=${CONNECTIONS:-64}           # wrk -c
THREADS=${THREADS:-2}                    # wrk -t
WARMUP=${WARMUP:-2}                      # seconds of un-measured load per proxy before round 1; 0 = none
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-}
SWITCHYARD_BASE_BIN=${SWITCHYARD_BASE_BIN:-}  # proxy "switchyard_base": another build (e.g. the commit
                                         # before a change) run beside "switchyard", for before/after
UPSTREAM_MODE=${UPSTREAM_MODE:-single}   # single: one fast upstream; slow: two fast + one slow (SLOW_MS);
                                         # failing: two fast + one refusing connections
SLOW_MS=${SLOW_MS:-50}                   # slow mode: delay of the slow upstream per request
BALANCE=${BALANCE:-round_robin}          # balance of the plain "switchyard" proxy
RATE=${RATE:-20000}                      # rate64 and soak: offered load, requests/s over all connections
IDLE_CONNS=${IDLE_CONNS:-10000}          # memory: idle keep-alive connections to open per proxy; 0 = skip
SOAK_SECONDS=${SOAK_SECONDS:-600}        # soak: how long
SOAK_SAMPLE=${SOAK_SAMPLE:-30}           # soak: seconds between RSS samples

DEFAULTS=0
if [[ $WORKERS == defaults ]]; then DEFAULTS=1; WORKERS=$(nproc); fi   # WORKERS then only labels rows
for v in DURATION ROUNDS WORKERS UPSTREAM_WORKERS CONNECTIONS THREADS WARMUP SLOW_MS RATE IDLE_CONNS SOAK_SECONDS SOAK_SAMPLE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "compare.sh: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
(( DURATION > 0 && ROUNDS > 0 && WORKERS > 0 && RATE > 0 && SOAK_SAMPLE > 0 )) || { echo "compare.sh: DURATION, ROUNDS, WORKERS, RATE and SOAK_SAMPLE must be > 0" >&2; exit 2; }
(( IDLE_CONNS <= 10000 )) || { echo "compare.sh: IDLE_CONNS is at most 10000 (switchyard's default max_connections; the fd hard limit)" >&2; exit 2; }
[[ $UPSTREAM_MODE == single || $UPSTREAM_MODE == slow || $UPSTREAM_MODE == failing ]] || { echo "compare.sh: UPSTREAM_MODE must be single, slow or failing, got '$UPSTREAM_MODE'" >&2; exit 2; }

IFS=, read -ra SCENARIO_LIST <<< "$SCENARIOS"
IFS=, read -ra PROXY_LIST <<< "$PROXIES"
log() { printf '[compare] %s\n' "$*" >&2; }
die() { printf '[compare] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ process care --
# Every process this script starts is recorded here and ended by PID on exit.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # free_port, wait_listen, children_of, cpu_ticks, machine_ticks, stop_on_exit
STARTED_PIDS=()
TMP=""
stop_on_exit


# Record the current children of a started process (so nginx workers are
# ended by PID even if their master had to be SIGKILLed).
track_children() { local c; for c in $(children_of "$1"); do STARTED_PIDS+=("$c"); done; }

# ------------------------------------------------------------------- tools --
need_commands nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client curl:curl python3:python3 openssl:openssl ss:iproute2
NGINX_BIN=$(command -v nginx)
HAPROXY_BIN=$(command -v haproxy)
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
chmod 755 "$TMP"   # nginx workers run as an unprivileged user and must read www/
mkdir -p "$OUT_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
RUN_DIR="$OUT_DIR/compare-$STAMP"        # results.csv, table.txt, one load-tool log per run
mkdir -p "$RUN_DIR"
CSV="$RUN_DIR/results.csv"
TABLE="$RUN_DIR/table.txt"

# ------------------------------------------------------------- certificate --
# One certificate for every proxy's TLS listener (ECDSA P-256, localhost and 127.0.0.1), made
# fresh for each run: switchyard reads certs/ (bench.crt + bench.key), nginx the same two files,
# haproxy one PEM holding both.
TLS_DIR=$TMP/tls
mkdir -p "$TLS_DIR/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$TLS_DIR/certs/bench.key" -out "$TLS_DIR/certs/bench.crt" >"$TLS_DIR/openssl.log" 2>&1 \
    || { cat "$TLS_DIR/openssl.log" >&2; die "cannot make the benchmark certificate"; }
cat "$TLS_DIR/certs/bench.crt" "$TLS_DIR/certs/bench.key" > "$TLS_DIR/bench.pem"
chmod 644 "$TLS_DIR/certs/bench.key" "$TLS_DIR/bench.pem"   # nginx workers are unprivileged

# ------------------------------------------------------------------- ports --

# -------------------------------------------------------- /proc accounting --
# cpu_ticks (utime+stime of PIDs) and machine_ticks come from lib.sh.

# Sum of VmRSS (KiB) over the given PIDs.
rss_kib() {
    local total=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$(( total + ${v:-0} ))
    done
    echo "$total"
}

# children_cpu_s VAR: CPU seconds used so far by this shell's waited-for
# children (bash `times`); taken around a load run, the difference is the load
# generator's CPU time.
# Must run in the current shell (not in $(...)), so it stores into a variable.
children_cpu_s() {
    times > "$TMP/times"
    printf -v "$1" '%s' "$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' "$TMP/times")"
}

# The PIDs that make up a proxy: its main process plus direct children
# (nginx: master + workers; haproxy and switchyard: one process).
proxy_pids() { local main=$1; echo "$main" $(children_of "$main"); }

# ---------------------------------------------------------------- upstream --
# A second, separate nginx serving fixed responses: the cheapest upstream we have.
BODY63=$(printf 'x%.0s' $(seq 1 63))   # + "\n" in the config = a 64-byte body
start_upstream() {
    local d=$TMP/upstream
    mkdir -p "$d/www" "$d/tmp"
    head -c 16384 /dev/zero | tr '\0' 'y' > "$d/www/16k"
    UPSTREAM_PORT=$(free_port)
    UPSTREAM_ADDRS=("127.0.0.1:$UPSTREAM_PORT")
    local second_listen=""
    if [[ $UPSTREAM_MODE == slow || $UPSTREAM_MODE == failing ]]; then
        UPSTREAM_PORT2=$(free_port)
        second_listen="listen 127.0.0.1:$UPSTREAM_PORT2 backlog=4096;"
    fi
    cat > "$d/nginx.conf" <<EOF
worker_processes $UPSTREAM_WORKERS;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 10000;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        $second_listen
        client_max_body_size 1m;
        client_body_buffer_size 64k;
        location = / { return 200 "$BODY63\n"; }
        location = /16k { root $d/www; }
        # "echo": nginx reads (and discards) the request body, then answers 200
        # with a small body. The proxy still streams 1 KiB up and a response down.
        location = /echo { return 200 "ok\n"; }
    }
}
EOF
    start_upstream_nginx "$d" "$UPSTREAM_PORT"
    log "upstream nginx pid $UPSTREAM_PID on 127.0.0.1:$UPSTREAM_PORT (worker_processes $UPSTREAM_WORKERS)"
    [[ $UPSTREAM_MODE == slow ]] && start_slow_upstream
    [[ $UPSTREAM_MODE == failing ]] && start_failing_upstream
    return 0
}

# Failing mode: nginx answers on a second port too, and a third address is a free loopback port
# that nothing listens on (connections to it are refused at once). Proxies balance over all
# three, the refusing one listed second: one upstream in three fails.
start_failing_upstream() {
    DEAD_PORT=$(free_port)
    [[ -z $(ss -Htln "sport = :$DEAD_PORT" 2>/dev/null) ]] || die "port $DEAD_PORT picked for the refusing upstream is in use"
    UPSTREAM_ADDRS=("127.0.0.1:$UPSTREAM_PORT" "127.0.0.1:$DEAD_PORT" "127.0.0.1:$UPSTREAM_PORT2")
    log "failing mode: upstreams ${UPSTREAM_ADDRS[*]}; 127.0.0.1:$DEAD_PORT has nothing listening (connection refused)"
}

# Slow mode: nginx answers on a second port too, and a third upstream (python asyncio, the
# same three paths and bodies) answers every request after SLOW_MS. Proxies balance over all
# three, listed slow one second: one upstream in three is slow.
start_slow_upstream() {
    local d=$TMP/slow
    mkdir -p "$d"
    SLOW_PORT=$(free_port)
    cat > "$d/slow.py" <<'EOF'
import asyncio, sys
port, delay = int(sys.argv[1]), int(sys.argv[2]) / 1000.0
small = b"x" * 63 + b"\n"
big = b"y" * 16384
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            for l in lines[1:]:
                if l.lower().startswith("content-length:"):
                    length = int(l.split(":", 1)[1])
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay)
            body = big if path == "/16k" else (b"ok\n" if path == "/echo" else small)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
EOF
    python3 "$d/slow.py" "$SLOW_PORT" "$SLOW_MS" >"$d/stdout.log" 2>"$d/stderr.log" &
    SLOW_PID=$!
    STARTED_PIDS+=("$SLOW_PID")
    wait_listen "$SLOW_PID" "$SLOW_PORT" || { cat "$d/stderr.log" >&2; die "slow upstream did not start"; }
    UPSTREAM_ADDRS=("127.0.0.1:$UPSTREAM_PORT" "127.0.0.1:$SLOW_PORT" "127.0.0.1:$UPSTREAM_PORT2")
    log "slow mode: upstreams ${UPSTREAM_ADDRS[*]}; 127.0.0.1:$SLOW_PORT (python, pid $SLOW_PID) answers after ${SLOW_MS} ms"
}

# ----------------------------------------------------------------- proxies --
# Each start_proxy_<name> writes its config under $TMP/<name>, starts it in the
# foreground-mode as a background job, and sets PROXY_PID[name], PROXY_PORT[name].
# It returns non-zero (after printing why) if the proxy did not come up.
declare -A PROXY_PID PROXY_PORT PROXY_TLS_PORT PROXY_STATUS PROXY_LOG

start_proxy_nginx() {
    local d=$TMP/nginx port tls_port
    mkdir -p "$d/tmp"
    port=$(free_port)
    tls_port=$(free_port)
    cat > "$d/nginx.conf" <<EOF
worker_processes $( ((DEFAULTS)) && echo auto || echo "$WORKERS");
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 12000; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    # nginx closes a client keep-alive connection after 1000 requests by
    # default; hyper and haproxy do not, so lift it for a like-for-like test.
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    # keep a client's x-request-id, else generate one (as switchyard does)
    map \$http_x_request_id \$bench_request_id {
        ""      \$request_id;
        default \$http_x_request_id;
    }
    upstream fast {
$(for a in "${UPSTREAM_ADDRS[@]}"; do echo "        server $a;"; done)
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    # TLS: the versions and ALPN switchyard offers, a session cache and tickets (resumption).
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    ssl_certificate $TLS_DIR/certs/bench.crt;
    ssl_certificate_key $TLS_DIR/certs/bench.key;
    server {
        listen 127.0.0.1:$port backlog=4096;
        listen 127.0.0.1:$tls_port ssl http2 backlog=4096;
        location / {
            proxy_pass http://fast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # the same header work switchyard does
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$bench_request_id;
$([[ $UPSTREAM_MODE == failing ]] && echo "            proxy_next_upstream error timeout;   # nginx's default, stated: try the next server on a refused connect")
            add_header X-Request-Id \$bench_request_id always;
        }
    }
}
EOF
    PROXY_LOG[nginx]="$d/stderr.log $d/error.log"
    if ! "$NGINX_BIN" -t -q -p "$d" -c "$d/nginx.conf" 2>"$d/stderr.log"; then
        return 1
    fi
    "$NGINX_BIN" -p "$d" -c "$d/nginx.conf" >"$d/stdout.log" 2>"$d/stderr.log" &
    PROXY_PID[nginx]=$!
    PROXY_PORT[nginx]=$port
    PROXY_TLS_PORT[nginx]=$tls_port
    STARTED_PIDS+=("$!")
    wait_listen "$!" "$port" || return 1
    sleep 0.2   # let the master fork its workers before we record them
    track_children "${PROXY_PID[nginx]}"
}

# start_haproxy NAME SERVER_OPTS: haproxy with SERVER_OPTS appended to every `server` line.
# In failing mode the backend also gets `retries 3` and `option redispatch` (a retry of a refused
# connect, the last one on another server), what an HAProxy user sets to hide a dead server.
start_haproxy() {
    local name=$1 server_opts=$2 d=$TMP/$1 port tls_port
    mkdir -p "$d"
    port=$(free_port)
    tls_port=$(free_port)
    cat > "$d/haproxy.cfg" <<EOF
global
$( ((DEFAULTS)) && echo "    # nbthread: haproxy's default (one per CPU it may run on)" || echo "    nbthread $WORKERS")
    maxconn 9000        # fits a 20000-fd hard limit (haproxy reserves 2 fds per conn)

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:$port
    bind 127.0.0.1:$tls_port ssl crt $TLS_DIR/bench.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2
    # the same header work switchyard does
    option forwardfor
    http-request set-header X-Forwarded-Proto http unless { ssl_fc }
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
    http-request set-var(txn.rid) req.hdr(x-request-id) if { req.hdr(x-request-id) -m found }
    http-request set-var(txn.rid) unique-id unless { var(txn.rid) -m found }
    http-request set-header X-Request-Id %[var(txn.rid)]
    http-response set-header X-Request-Id %[var(txn.rid)]
    default_backend fast

backend fast
$([[ $UPSTREAM_MODE == failing ]] && printf '    retries 3\n    option redispatch\n')
$(i=0; for a in "${UPSTREAM_ADDRS[@]}"; do i=$((i + 1)); echo "    server up$i $a$server_opts"; done)
EOF
    PROXY_LOG[$name]="$d/stderr.log"
    if ! "$HAPROXY_BIN" -c -q -f "$d/haproxy.cfg" >"$d/stderr.log" 2>&1; then
        return 1
    fi
    # -db: foreground, no master-worker: one process, nbthread threads.
    "$HAPROXY_BIN" -db -f "$d/haproxy.cfg" >"$d/stdout.log" 2>"$d/stderr.log" &
    PROXY_PID[$name]=$!
    PROXY_PORT[$name]=$port
    PROXY_TLS_PORT[$name]=$tls_port
    STARTED_PIDS+=("$!")
    wait_listen "$!" "$port"
}

start_proxy_haproxy()       { start_haproxy haproxy ""; }
# haproxy_check: the same with active TCP health checks on every server (`check`: a connect every
# 2 s, down after 3 failures, up after 2 successes), for the failing mode.
start_proxy_haproxy_check() { start_haproxy haproxy_check " check"; }

# start_switchyard NAME BALANCE [UPSTREAM_TOML] [ROUTE_TOML]: switchyard with `balance = BALANCE`
# over the upstreams, plus a TLS listener with the bench certificate. UPSTREAM_TOML and ROUTE_TOML,
# if given, are appended to the [[upstream]] and the [[route]] table (keys first, then sub-tables).
start_switchyard() {
    local name=$1 balance=$2 upstream_toml=${3:-} route_toml=${4:-} d=$TMP/$1 port tls_port
    mkdir -p "$d/routes"
    port=$(free_port)
    tls_port=$(free_port)
    PROXY_LOG[$name]="$d/stderr.log"
    : > "$d/stderr.log"
    if [[ -z $SWITCHYARD_BIN ]]; then
        echo "switchyard binary unavailable (build failed or not built)" >> "$d/stderr.log"
        [[ -f $TMP/build.log ]] && tail -n 30 "$TMP/build.log" >> "$d/stderr.log"
        return 1
    fi
    cat > "$d/gateway.toml" <<EOF
[gateway]
routes_dir = "routes"
drain_timeout = "1s"

[[listener]]
name = "bench"
listen = "127.0.0.1:$port"

[[listener]]
name = "bench-tls"
listen = "127.0.0.1:$tls_port"
[listener.tls]
certs_dir = "$TLS_DIR/certs"

[access_log]
enabled = false
EOF
    cat > "$d/routes/bench.toml" <<EOF
[[upstream]]
name = "fast"
endpoints = [$(printf '"%s", ' "${UPSTREAM_ADDRS[@]}" | sed 's/, $//')]
balance = "$balance"
${upstream_toml}
[[route]]
name = "all"
path_prefix = "/"
upstream = "fast"
${route_toml}
EOF
    # The gateway must honour SWITCHYARD_WORKER_THREADS (its runtime's worker
    # count); TOKIO_WORKER_THREADS is what a #[tokio::main] runtime reads.
    # In defaults mode neither is set: the gateway picks its own thread count.
    local threads_env=(SWITCHYARD_WORKER_THREADS="$WORKERS" TOKIO_WORKER_THREADS="$WORKERS")
    ((DEFAULTS)) && threads_env=()
    env "${threads_env[@]}" SWITCHYARD_LOG="${SWITCHYARD_LOG:-warn}" \
        "$SWITCHYARD_BIN" --config "$d/gateway.toml" >"$d/stdout.log" 2>"$d/stderr.log" &
    PROXY_PID[$name]=$!
    PROXY_PORT[$name]=$port
    PROXY_TLS_PORT[$name]=$tls_port
    STARTED_PIDS+=("$!")
    wait_listen "$!" "$port"
}

start_proxy_switchyard()     { start_switchyard switchyard "$BALANCE"; }
start_proxy_switchyard_base() { SWITCHYARD_BIN=$SWITCHYARD_BASE_BIN start_switchyard switchyard_base "$BALANCE"; }
start_proxy_switchyard_rr()  { start_switchyard switchyard_rr round_robin; }
start_proxy_switchyard_p2c() { start_switchyard switchyard_p2c p2c_ewma; }

# The cost of the resilience layers: the same route without and with them.
# switchyard_bare: no retries at all (not even the default one on connect-failure), no timeout,
# no rate limit, upstream limits too high to matter.
start_proxy_switchyard_bare() {
    start_switchyard switchyard_bare "$BALANCE" '
[upstream.limits]
max_connections = 1000000
max_pending_requests = 1000000
max_requests = 1000000
max_retries = 1000000
' '
[route.retry]
attempts = 0
'
}
# switchyard_full: the full stack, present on every request but never triggered on a healthy
# upstream: retry policy with budget, whole-request timeout, upstream limits (the defaults,
# 1024 each, far above CONNECTIONS) and a rate limit per client IP that is never reached.
start_proxy_switchyard_full() {
    start_switchyard switchyard_full "$BALANCE" '
[upstream.limits]
max_connections = 1024
max_pending_requests = 1024
max_requests = 1024
max_retries = 3
' '
timeout = "15s"
rate_limit = { requests_per_second = 10000000, burst = 10000000, key = "client_ip" }

[route.retry]
attempts = 2
on = ["connect-failure", "reset", "5xx"]
per_try_timeout = "2s"
backoff = "25ms"
budget = 0.2
'
}
# switchyard_outlier: the default retry policy plus passive ejection with its defaults
# (5 consecutive failures, 30 s, max_ejection_percent 10: one endpoint can always be ejected).
start_proxy_switchyard_outlier() {
    start_switchyard switchyard_outlier "$BALANCE" '
[upstream.outlier]
'
}

# A proxy is usable only if it answers all three paths correctly.
check_proxy() {
    local name=$1 port=${PROXY_PORT[$1]} out
    out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/") || return 1
    [[ $out == "200 64" ]] || { echo "GET / -> $out (want 200 64)"; return 1; }
    out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/16k") || return 1
    [[ $out == "200 16384" ]] || { echo "GET /16k -> $out (want 200 16384)"; return 1; }
    out=$(head -c 1024 /dev/zero | tr '\0' 'p' | curl -s -o /dev/null -w '%{http_code}' \
        -H 'content-type: application/octet-stream' --data-binary @- "http://127.0.0.1:$port/echo") || return 1
    [[ $out == "200" ]] || { echo "POST /echo -> $out (want 200)"; return 1; }
    [[ $1 == hyper_floor ]] && return 0   # plain HTTP only, by design
    local tls=${PROXY_TLS_PORT[$1]:-}
    [[ -n $tls ]] || { echo "no TLS listener"; return 1; }
    wait_listen "${PROXY_PID[$1]}" "$tls" || { echo "TLS port $tls not listening"; return 1; }
    for v in --http1.1 --http2; do
        out=$(curl -sk "$v" -o /dev/null -w '%{http_version} %{http_code} %{size_download}' "https://127.0.0.1:$tls/") || return 1
        [[ $out == *" 200 64" ]] || { echo "TLS $v GET / -> $out (want 200 64)"; return 1; }
    done
}

# hyper_floor: examples/hyper_floor, hyper's HTTP/1 server and client codecs and nothing else
# (one thread, plain HTTP only, an upstream connection per client connection): the least a
# proxy on switchyard's stack can cost. HYPER_FLOOR_BIN, default the release example (built
# by `cargo build --release --example hyper_floor`). Only the plain-HTTP scenarios apply.
start_proxy_hyper_floor() {
    local name=hyper_floor d=$TMP/hyper_floor port
    local bin=${HYPER_FLOOR_BIN:-$REPO_DIR/target/release/examples/hyper_floor}
    mkdir -p "$d"
    port=$(free_port)
    PROXY_LOG[$name]="$d/stderr.log"
    : > "$d/stderr.log"
    if [[ ! -x $bin ]]; then
        echo "no $bin: build it with cargo build --release --example hyper_floor" >> "$d/stderr.log"
        return 1
    fi
    "$bin" "127.0.0.1:$port" "${UPSTREAM_ADDRS[0]}" >"$d/stdout.log" 2>"$d/stderr.log" &
    PROXY_PID[$name]=$!
    PROXY_PORT[$name]=$port
    STARTED_PIDS+=("$!")
    wait_listen "$!" "$port"
}

start_proxy() {
    local name=$1 why=""
    PROXY_STATUS[$name]=failed
    if ! declare -F "start_proxy_$name" >/dev/null; then
        log "unknown proxy '$name' (known: nginx, haproxy, haproxy_check, switchyard, switchyard_base, switchyard_rr, switchyard_p2c, switchyard_bare, switchyard_full, switchyard_outlier, hyper_floor)"; return
    fi
    if "start_proxy_$name" && why=$(check_proxy "$name"); then
        PROXY_STATUS[$name]=ok
        log "$name pid ${PROXY_PID[$name]} on 127.0.0.1:${PROXY_PORT[$name]}"
        return
    fi
    local pid=${PROXY_PID[$name]:-} rc
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
        rc=0; wait "$pid" 2>/dev/null || rc=$?
        why="exited with status $rc${why:+; $why}"
    fi
    log "$name FAILED to start or to answer correctly${why:+: $why}; continuing without it. Its output:"
    local f; for f in ${PROXY_LOG[$name]}; do [[ -s $f ]] && sed 's/^/    | /' "$f" | tail -n 40 >&2; done
    [[ -n ${PROXY_PID[$name]:-} ]] && kill -TERM "${PROXY_PID[$name]}" 2>/dev/null || true
}

# --------------------------------------------------------------- load tools --
# Every load run sets these R_* values; a scenario function must set them all.
#   R_REQUESTS R_SECONDS R_P50_MS R_P99_MS R_MEAN_MS R_MAX_MS
#   R_ERR_CONNECT R_ERR_READ R_ERR_WRITE R_ERR_TIMEOUT R_ERR_STATUS
mkdir -p "$TMP/lua"
WRK_DONE='
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%d max_us=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d err_status=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      math.floor(latency.mean), latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
'
printf '%s\n' "$WRK_DONE" > "$TMP/lua/get.lua"
{ printf 'wrk.method = "POST"\nwrk.body = string.rep("p", 1024)\nwrk.headers["Content-Type"] = "application/octet-stream"\n'
  printf '%s\n' "$WRK_DONE"; } > "$TMP/lua/post1k.lua"

# run_wrk URL LUA LOGFILE [seconds]: wrk -t$THREADS -c$CONNECTIONS --latency; sets R_*.
# The figures come from the script's done() hook (exact, in microseconds);
# wrk's own --latency text is kept in LOGFILE for the record.
run_wrk() {
    local url=$1 lua=$2 logf=$3 secs=${4:-$DURATION} line kv
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency -s "$lua" "$url" > "$logf" 2>&1 || true
    line=$(grep '^BENCH ' "$logf" | tail -n 1 || true)
    if [[ -z $line ]]; then
        sed 's/^/    wrk| /' "$logf" >&2
        return 1
    fi
    declare -A m
    for kv in ${line#BENCH }; do m[${kv%%=*}]=${kv#*=}; done
    R_REQUESTS=${m[requests]}
    R_SECONDS=$(awk -v u="${m[duration_us]}" 'BEGIN { printf "%.3f", u / 1e6 }')
    R_P50_MS=$(awk -v u="${m[p50_us]}" 'BEGIN { printf "%.3f", u / 1e3 }')
    R_P99_MS=$(awk -v u="${m[p99_us]}" 'BEGIN { printf "%.3f", u / 1e3 }')
    R_MEAN_MS=$(awk -v u="${m[mean_us]}" 'BEGIN { printf "%.3f", u / 1e3 }')
    R_MAX_MS=$(awk -v u="${m[max_us]}" 'BEGIN { printf "%.3f", u / 1e3 }')
    R_ERR_CONNECT=${m[err_connect]} R_ERR_READ=${m[err_read]} R_ERR_WRITE=${m[err_write]}
    R_ERR_TIMEOUT=${m[err_timeout]} R_ERR_STATUS=${m[err_status]}
}

# run_h2load URL LOGFILE [h2load options...]: h2load for $DURATION seconds with
# -t$THREADS -c$CONNECTIONS; sets R_*. Percentiles come from h2load's per-request
# --log-file (start_us, status, duration_us), not from its mean/max summary.
run_h2load() {
    local url=$1 logf=$2; shift 2
    local reqlog=$logf.requests
    h2load -t"$THREADS" -c"$CONNECTIONS" -D"$DURATION" --log-file="$reqlog" "$@" "$url" > "$logf" 2>&1 || true
    grep -q '^finished in' "$logf" || { sed 's/^/    h2load| /' "$logf" >&2; return 1; }
    R_SECONDS=$(awk '/^finished in/ { v = $3; sub(/,$/, "", v); u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
        printf "%.3f", (u == "ms" ? v / 1e3 : (u == "us" ? v / 1e6 : v)) }' "$logf")
    R_REQUESTS=$(awk '/^requests:/ { print $8 }' "$logf")                     # "N succeeded"
    R_ERR_CONNECT=0 R_ERR_READ=0 R_ERR_WRITE=0
    R_ERR_TIMEOUT=$(awk '/^requests:/ { print $14 }' "$logf")                 # "N timeout"
    R_ERR_STATUS=$(awk '/^requests:/ { f = $10 + $12 } /^status codes:/ { s = $7 + $9 } END { print f + s }' "$logf")
    local stats
    stats=$(awk -F'\t' '$2 >= 200 && $2 < 400 { print $3 }' "$reqlog" | sort -n | awk '
        { v[NR] = $1; sum += $1 }
        END { if (NR == 0) { print "0 0 0 0"; exit }
              p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
              printf "%.3f %.3f %.3f %.3f", p50 / 1e3, p99 / 1e3, sum / NR / 1e3, v[NR] / 1e3 }')
    read -r R_P50_MS R_P99_MS R_MEAN_MS R_MAX_MS <<< "$stats"
    rm -f "$reqlog"
}

# run_h2load_batches URL LOGFILE [h2load options...]: for load that h2load cannot run by
# duration (HTTP/1.1 with "Connection: close": every request on a new connection, a full
# handshake; h2load does not reconnect in -D mode), run batches of -n $HS_BATCH requests with
# -c $CONNECTIONS until $DURATION seconds of measured time, and sum them; sets R_*.
HS_BATCH=${HS_BATCH:-2000}
run_h2load_batches() {
    local url=$1 logf=$2; shift 2
    local reqlog=$logf.requests total=0 secs=0 failed=0 timeout=0 one
    : > "$logf"; : > "$reqlog"
    while awk -v s="$secs" -v d="$DURATION" 'BEGIN { exit !(s < d) }'; do
        h2load -t"$THREADS" -c"$CONNECTIONS" -n"$HS_BATCH" --log-file="$reqlog.1" "$@" "$url" > "$logf.1" 2>&1 || true
        cat "$logf.1" >> "$logf"; cat "$reqlog.1" >> "$reqlog" 2>/dev/null || true
        grep -q '^finished in' "$logf.1" || { sed 's/^/    h2load| /' "$logf.1" >&2; return 1; }
        one=$(awk '/^finished in/ { v = $3; sub(/,$/, "", v); u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
            printf "%.6f", (u == "ms" ? v / 1e3 : (u == "us" ? v / 1e6 : v)) }' "$logf.1")
        secs=$(awk -v a="$secs" -v b="$one" 'BEGIN { printf "%.6f", a + b }')
        total=$(( total + $(awk '/^requests:/ { print $8 }' "$logf.1") ))
        failed=$(( failed + $(awk '/^requests:/ { f = $10 + $12 } /^status codes:/ { s = $7 + $9 } END { print f + s }' "$logf.1") ))
        timeout=$(( timeout + $(awk '/^requests:/ { print $14 }' "$logf.1") ))
    done
    R_SECONDS=$(awk -v s="$secs" 'BEGIN { printf "%.3f", s }')
    R_REQUESTS=$total R_ERR_CONNECT=0 R_ERR_READ=0 R_ERR_WRITE=0 R_ERR_TIMEOUT=$timeout R_ERR_STATUS=$failed
    local stats
    stats=$(awk -F'\t' '$2 >= 200 && $2 < 400 { print $3 }' "$reqlog" | sort -n | awk '
        { v[NR] = $1; sum += $1 }
        END { if (NR == 0) { print "0 0 0 0"; exit }
              p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
              printf "%.3f %.3f %.3f %.3f", p50 / 1e3, p99 / 1e3, sum / NR / 1e3, v[NR] / 1e3 }')
    read -r R_P50_MS R_P99_MS R_MEAN_MS R_MAX_MS <<< "$stats"
    rm -f "$reqlog" "$reqlog.1" "$logf.1"
}

# --------------------------------------------------------------- scenarios --
# One function per scenario: scenario_NAME PROXY LOGFILE runs the load for
# $DURATION seconds against that proxy and sets the R_* values. To add one
# (TLS, h2c, fixed-rate...), write scenario_NAME and name it in SCENARIOS.
scenario_get64()  { run_wrk "http://127.0.0.1:${PROXY_PORT[$1]}/"     "$TMP/lua/get.lua"    "$2"; }
scenario_post1k() { run_wrk "http://127.0.0.1:${PROXY_PORT[$1]}/echo" "$TMP/lua/post1k.lua" "$2"; }
scenario_get16k() { run_wrk "http://127.0.0.1:${PROXY_PORT[$1]}/16k"  "$TMP/lua/get.lua"    "$2"; }
# An h2load-driven scenario, not in the default list: the get64 load from a
# second client (cross-checks wrk). h2/TLS scenarios follow this shape once the
# start_proxy_* functions also open an h2c / TLS listener (see README).
scenario_h1get64() { run_h2load "http://127.0.0.1:${PROXY_PORT[$1]}/" "$2" --h1; }
# TLS (same certificate for every proxy; TLS 1.3 is what h2load and all three negotiate):
# tls13hs: a full TLS 1.3 handshake per request (HTTP/1.1, "Connection: close"; h2load never
#          resumes a session), so req/s = handshakes/s;
# tlsh1 / tlsh2: GET / over keep-alive TLS connections (handshake once, then reused), HTTP/1.1
#          and HTTP/2 (ALPN h2, one stream at a time per connection).
scenario_tls13hs() { run_h2load_batches "https://127.0.0.1:${PROXY_TLS_PORT[$1]}/" "$2" --h1 -H 'Connection: close'; }
scenario_tlsh1()   { run_h2load "https://127.0.0.1:${PROXY_TLS_PORT[$1]}/" "$2" --h1; }
scenario_tlsh2()   { run_h2load "https://127.0.0.1:${PROXY_TLS_PORT[$1]}/" "$2"; }
# rate64: GET / at a fixed offered load (RATE req/s spread over the connections, h2load --rps),
# the same for every proxy, so p50/p99 compare at equal load and are not bent by coordinated
# omission the way a closed-loop run's are (wrk sends the next request only after a response).
per_conn_rate() { awk -v r="$RATE" -v c="$CONNECTIONS" 'BEGIN { printf "%.3f", r / c }'; }
scenario_rate64() { run_h2load "http://127.0.0.1:${PROXY_PORT[$1]}/" "$2" --h1 --rps="$(per_conn_rate)"; }
# soak: the rate64 load for SOAK_SECONDS (not DURATION), sampling the proxy's RSS every
# SOAK_SAMPLE seconds into $RUN_DIR/soak-PROXY.csv; growth is reported under the table.
scenario_soak() {
    local p=$1 samples=$RUN_DIR/soak-$1.csv sampler rc=0
    local -a pids
    read -ra pids <<< "$(proxy_pids "${PROXY_PID[$p]}")"
    echo "seconds,rss_kib" > "$samples"
    ( t=0; while :; do echo "$t,$(rss_kib "${pids[@]}")" >> "$samples"; sleep "$SOAK_SAMPLE"; t=$(( t + SOAK_SAMPLE )); done ) &
    sampler=$!
    STARTED_PIDS+=("$sampler")
    DURATION=$SOAK_SECONDS run_h2load "http://127.0.0.1:${PROXY_PORT[$p]}/" "$2" --h1 --rps="$(per_conn_rate)" || rc=$?
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    echo "$SOAK_SECONDS,$(rss_kib "${pids[@]}")" >> "$samples"
    return "$rc"
}

for s in "${SCENARIO_LIST[@]}"; do
    declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (have: $(declare -F | awk '$3 ~ /^scenario_/ { sub(/^scenario_/, "", $3); printf "%s ", $3 }'))"
done

# --------------------------------------------------------------------- run --
n_s=${#SCENARIO_LIST[@]} n_p=${#PROXY_LIST[@]}
est=$(( ROUNDS * n_s * n_p * (DURATION + 1) + n_p * WARMUP + 5 + (IDLE_CONNS > 0 ? n_p * (5 + IDLE_CONNS / 2000) : 0) ))
[[ " ${SCENARIO_LIST[*]} " == *" soak "* ]] && est=$(( est + ROUNDS * n_p * (SOAK_SECONDS - DURATION) ))
log "plan: $ROUNDS round(s) x $n_s scenario(s) [$SCENARIOS] x $n_p prox(ies) [$PROXIES] x ${DURATION}s"
log "estimated time: ~${est}s (~$(( (est + 59) / 60 )) min), plus a cargo build if switchyard is included and SWITCHYARD_BIN is unset"
log "each proxy gets $( ((DEFAULTS)) && echo "its default worker count" || echo "WORKERS=$WORKERS worker(s)"); wrk -t$THREADS -c$CONNECTIONS; machine: $(nproc) CPU(s)"

if [[ " ${PROXY_LIST[*]} " == *" switchyard"* && -z $SWITCHYARD_BIN ]]; then
    log "building switchyard: cargo build --release (set SWITCHYARD_BIN to skip)"
    if (cd "$REPO_DIR" && cargo build --release) > "$TMP/build.log" 2>&1; then
        SWITCHYARD_BIN=$REPO_DIR/target/release/switchyard
    else
        log "cargo build failed; switchyard will be marked failed"
        tail -n 30 "$TMP/build.log" | sed 's/^/    cargo| /' >&2
    fi
fi
if [[ -n $SWITCHYARD_BIN && ! -x $SWITCHYARD_BIN ]]; then
    log "SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable; switchyard will be marked failed"
    SWITCHYARD_BIN=""
fi

start_upstream
for p in "${PROXY_LIST[@]}"; do start_proxy "$p"; done

RUNNING=()
for p in "${PROXY_LIST[@]}"; do [[ ${PROXY_STATUS[$p]} == ok ]] && RUNNING+=("$p"); done
((${#RUNNING[@]})) || die "no proxy is running"

# Idle RSS: each proxy as started, before any load (one request first, so lazily built state
# such as the upstream connection exists, as it would a second after start in production).
MEM_CSV="$RUN_DIR/memory.csv"
echo "proxy,idle_rss_kib,conns,rss_before_kib,rss_after_kib,per_conn_bytes" > "$MEM_CSV"
declare -A IDLE_RSS
for p in "${RUNNING[@]}"; do
    curl -s -o /dev/null "http://127.0.0.1:${PROXY_PORT[$p]}/" || true
done
sleep 1
for p in "${RUNNING[@]}"; do
    read -ra pids <<< "$(proxy_pids "${PROXY_PID[$p]}")"
    IDLE_RSS[$p]=$(rss_kib "${pids[@]}")
done

if (( WARMUP > 0 )); then
    for p in "${RUNNING[@]}"; do
        log "warm-up: $p, ${WARMUP}s"
        run_wrk "http://127.0.0.1:${PROXY_PORT[$p]}/" "$TMP/lua/get.lua" "$TMP/warmup-$p.log" "$WARMUP" || true
    done
fi

echo "round,scenario,proxy,position,status,seconds,requests,req_per_s,p50_ms,p99_ms,mean_ms,max_ms,proxy_cpu_s,req_per_cpu_s,rss_mib,upstream_cpu_s,load_cpu_s,machine_cpu_s,other_cpu_s,err_connect,err_read,err_write,err_timeout,err_status,errors,workers,connections,threads" > "$CSV"

for (( r = 1; r <= ROUNDS; r++ )); do
    for (( si = 0; si < n_s; si++ )); do
        sc=${SCENARIO_LIST[$si]}
        # Rotate the proxy order each round and scenario so that no proxy is
        # always first (cold) or last (after the machine has warmed up).
        order=()
        for (( k = 0; k < n_p; k++ )); do order+=("${PROXY_LIST[$(( (k + r - 1 + si) % n_p ))]}"); done
        pos=0
        for p in "${order[@]}"; do
            pos=$(( pos + 1 ))
            if [[ ${PROXY_STATUS[$p]} != ok ]]; then
                echo "$r,$sc,$p,$pos,failed,,,,,,,,,,,,,,,,,,,,,$WORKERS,$CONNECTIONS,$THREADS" >> "$CSV"
                continue
            fi
            if [[ $p == hyper_floor && $sc == tls* ]]; then
                continue   # plain HTTP only: no row rather than a failed one
            fi
            main=${PROXY_PID[$p]}
            if ! kill -0 "$main" 2>/dev/null; then
                log "$p (pid $main) has died; its output:"
                for f in ${PROXY_LOG[$p]}; do [[ -s $f ]] && tail -n 20 "$f" | sed 's/^/    | /' >&2; done
                PROXY_STATUS[$p]=failed
                echo "$r,$sc,$p,$pos,failed,,,,,,,,,,,,,,,,,,,,,$WORKERS,$CONNECTIONS,$THREADS" >> "$CSV"
                continue
            fi
            read -ra pids <<< "$(proxy_pids "$main")"
            read -ra upids <<< "$(proxy_pids "$UPSTREAM_PID")"
            logf="$TMP/run-$r-$sc-$p.log"
            children_cpu_s l0
            c0=$(cpu_ticks "${pids[@]}"); u0=$(cpu_ticks "${upids[@]}"); m0=$(machine_ticks)
            if ! "scenario_$sc" "$p" "$logf"; then
                log "round $r $sc $p: load tool gave no result"
                echo "$r,$sc,$p,$pos,failed,,,,,,,,,,,,,,,,,,,,,$WORKERS,$CONNECTIONS,$THREADS" >> "$CSV"
                continue
            fi
            c1=$(cpu_ticks "${pids[@]}"); u1=$(cpu_ticks "${upids[@]}"); m1=$(machine_ticks)
            children_cpu_s l1
            rss=$(rss_kib "${pids[@]}")
            errors=$(( R_ERR_CONNECT + R_ERR_READ + R_ERR_WRITE + R_ERR_TIMEOUT + R_ERR_STATUS ))
            row=$(awk -v req="$R_REQUESTS" -v s="$R_SECONDS" -v dc=$(( c1 - c0 )) -v du=$(( u1 - u0 )) \
                      -v hz="$CLK_TCK" -v rss="$rss" -v dm=$(( m1 - m0 )) -v l0="$l0" -v l1="$l1" 'BEGIN {
                cpu = dc / hz; load = l1 - l0; other = dm / hz - cpu - du / hz - load
                printf "%.1f,%.3f,%.0f,%.2f,%.3f,%.3f,%.3f,%.3f", (s > 0 ? req / s : 0), cpu, (cpu > 0 ? req / cpu : 0),
                    rss / 1024, du / hz, load, dm / hz, (other > 0 ? other : 0) }')
            IFS=, read -r rps cpu rpc rss_mib ucpu lcpu mcpu ocpu <<< "$row"
            echo "$r,$sc,$p,$pos,ok,$R_SECONDS,$R_REQUESTS,$rps,$R_P50_MS,$R_P99_MS,$R_MEAN_MS,$R_MAX_MS,$cpu,$rpc,$rss_mib,$ucpu,$lcpu,$mcpu,$ocpu,$R_ERR_CONNECT,$R_ERR_READ,$R_ERR_WRITE,$R_ERR_TIMEOUT,$R_ERR_STATUS,$errors,$WORKERS,$CONNECTIONS,$THREADS" >> "$CSV"
            cp "$logf" "$RUN_DIR/"
            log "round $r/$ROUNDS $sc $p: ${rps} req/s, p99 ${R_P99_MS} ms, ${rpc} req/cpu-s (cpu ${cpu}s), rss ${rss_mib} MiB, errors $errors"
        done
    done
done

# ------------------------------------------------------------------ memory --
# Memory per idle keep-alive client connection: IDLE_CONNS connections that have each served
# one request (bench/idle_conns.py); RSS after minus before, divided by their number.
for p in "${RUNNING[@]}"; do
    line=""
    if (( IDLE_CONNS > 0 )) && kill -0 "${PROXY_PID[$p]}" 2>/dev/null; then
        n=$IDLE_CONNS
        # haproxy: maxconn 9000 (2 fds per connection under a 20000-fd hard limit).
        [[ $p == haproxy* ]] && (( n > 8500 )) && n=8500
        log "memory: $p, $n idle keep-alive connections"
        read -ra pids <<< "$(proxy_pids "${PROXY_PID[$p]}")"
        if line=$(python3 "$BENCH_DIR/idle_conns.py" "${PROXY_PORT[$p]}" "$n" "${pids[@]}" 2>"$TMP/idle-$p.err"); then
            log "memory: $p: $line"
        else
            log "memory: $p: failed: $(tail -n 1 "$TMP/idle-$p.err")"
            line=""
        fi
        sleep 1   # let the proxy close the connections before the next one is measured
    fi
    declare -A mm=()
    for kv in $line; do mm[${kv%%=*}]=${kv#*=}; done
    echo "$p,${IDLE_RSS[$p]},${mm[conns]:-},${mm[rss_before_kib]:-},${mm[rss_after_kib]:-},${mm[per_conn_bytes]:-}" >> "$MEM_CSV"
done

# ------------------------------------------------------------------ report --
{
    echo "switchyard bench/compare.sh  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
    echo "nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///'), haproxy $("$HAPROXY_BIN" -v | awk 'NR==1 {print $3}'), $(wrk --version 2>&1 | awk 'NR==1 {print $1, $2}')"
    echo "rounds=$ROUNDS duration=${DURATION}s workers/proxy=$( ((DEFAULTS)) && echo "defaults" || echo "$WORKERS") upstream_workers=$UPSTREAM_WORKERS wrk -t$THREADS -c$CONNECTIONS upstream_mode=$UPSTREAM_MODE$([[ $UPSTREAM_MODE == slow ]] && echo " slow_ms=$SLOW_MS")$([[ $UPSTREAM_MODE == failing ]] && echo " refusing=127.0.0.1:$DEAD_PORT")"
    echo
    python3 - "$CSV" "$PROXIES" "$SCENARIOS" "$(nproc)" "$UPSTREAM_MODE" "$MEM_CSV" "$RUN_DIR" <<'PY'
import csv, os, statistics, sys
path, proxies, scenarios = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
rows = list(csv.DictReader(open(path)))
med = lambda xs: statistics.median(xs) if xs else None
hdr = ["scenario", "proxy", "req/s", "p50_ms", "p99_ms", "req/cpu-s", "rss_MiB", "errors", "rounds"]
out, ratios = [], []
for sc in scenarios:
    best_peer, sy = None, None
    for px in proxies:
        rs = [r for r in rows if r["scenario"] == sc and r["proxy"] == px]
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            out.append([sc, px, "FAILED", "-", "-", "-", "-", "-", "0/%d" % len(rs)])
            continue
        f = lambda k: med([float(r[k]) for r in ok])
        rpc = f("req_per_cpu_s")
        out.append([sc, px, "%.0f" % f("req_per_s"), "%.3f" % f("p50_ms"), "%.3f" % f("p99_ms"),
                    "%.0f" % rpc, "%.1f" % f("rss_mib"), "%d" % sum(int(r["errors"]) for r in ok),
                    "%d/%d" % (len(ok), len(rs))])
        if px == "switchyard":
            sy = rpc
        elif px in ("nginx", "haproxy") and (best_peer is None or rpc > best_peer[1]):
            best_peer = (px, rpc)
    if sy is not None and best_peer:
        # The same ratio within each round (switchyard against the better peer of that round):
        # how far one run's medians can be trusted on a machine whose speed drifts.
        by_round = []
        for rnd in sorted({r["round"] for r in rows if r["scenario"] == sc}, key=int):
            got = {r["proxy"]: float(r["req_per_cpu_s"]) for r in rows
                   if r["scenario"] == sc and r["round"] == rnd and r["status"] == "ok"}
            peers = [got[p] for p in ("nginx", "haproxy") if p in got]
            if "switchyard" in got and peers:
                by_round.append("%.2f" % (got["switchyard"] / max(peers)))
        ratios.append("%-8s switchyard req/cpu-s / best of nginx,haproxy (%s) = %.2fx  (by round: %s)" % (
            sc, best_peer[0], sy / best_peer[1], " ".join(by_round)))
    else:
        why = "switchyard not run or failed" if sy is None else "no nginx/haproxy result"
        ratios.append("%-8s switchyard req/cpu-s / best of nginx,haproxy = n/a (%s)" % (sc, why))
w = [max(len(str(x)) for x in col) for col in zip(hdr, *out)]
line = lambda cells: "  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(cells))
print(line(hdr))
print(line(["-" * n for n in w]))
for r in out:
    print(line(r))
print()
print("medians across rounds; errors = total over rounds (socket errors + non-2xx/3xx)")
ok = [r for r in rows if r["status"] == "ok" and float(r["seconds"]) > 0]
if ok:
    ncpu = int(sys.argv[4])
    share = lambda r: float(r["other_cpu_s"]) / (float(r["seconds"]) * ncpu)
    worst = max(ok, key=share)
    print("other processes used up to %.0f%% of the machine during a run (round %s %s %s)%s" % (
        100 * share(worst), worst["round"], worst["scenario"], worst["proxy"],
        "  <-- WARNING: the machine was not quiet; treat req/s and latency with care" if share(worst) > 0.10 else ""))
for r in ratios:
    print(r)
# p99 at equal load (the fixed-rate scenarios) against nginx.
for sc in scenarios:
    if sc not in ("rate64", "soak"):
        continue
    p99 = {px: med([float(r["p99_ms"]) for r in rows if r["scenario"] == sc and r["proxy"] == px and r["status"] == "ok"])
           for px in ("nginx", "switchyard")}
    if all(v is not None for v in p99.values()):
        print("%-8s p99 at a fixed offered load: switchyard %.3f ms vs nginx %.3f ms (%s)" % (
            sc, p99["switchyard"], p99["nginx"], "ok" if p99["switchyard"] <= p99["nginx"] else "HIGHER"))
# Memory: idle RSS and the cost of an idle keep-alive connection.
mem = [r for r in csv.DictReader(open(sys.argv[6]))]
if mem:
    print()
    print("memory: idle RSS as started (after one request); per idle keep-alive client connection (RSS delta / conns)")
    for r in mem:
        per = ("%.1f KiB (%s conns)" % (float(r["per_conn_bytes"]) / 1024, r["conns"])) if r["per_conn_bytes"] else "not measured"
        print("  %-20s idle RSS %6.1f MiB   per idle connection %s" % (r["proxy"], int(r["idle_rss_kib"] or 0) / 1024, per))
# Soak: RSS over time.
for px in proxies:
    f = os.path.join(sys.argv[7], "soak-%s.csv" % px)
    if not os.path.exists(f):
        continue
    s = [(int(r["seconds"]), int(r["rss_kib"])) for r in csv.DictReader(open(f))]
    if len(s) < 3:
        continue
    # The first sample is before the load started; growth is judged from the first loaded one.
    first, last, peak = s[1][1], s[-1][1], max(v for _, v in s[1:])
    print("soak %-14s %d s: RSS %.1f MiB at %d s -> %.1f MiB at the end (peak %.1f MiB, growth %+.1f%%); samples in %s" % (
        px, s[-1][0], first / 1024, s[1][0], last / 1024, peak / 1024, 100.0 * (last - first) / first, f))
for sc in scenarios:
    p99 = {}
    for px in ("switchyard_rr", "switchyard_p2c"):
        ok = [float(r["p99_ms"]) for r in rows if r["scenario"] == sc and r["proxy"] == px and r["status"] == "ok"]
        if ok:
            p99[px] = med(ok)
    if len(p99) == 2:
        print("%-8s p99 switchyard p2c_ewma %.3f ms vs round_robin %.3f ms (%.2fx)" % (
            sc, p99["switchyard_p2c"], p99["switchyard_rr"], p99["switchyard_rr"] / max(p99["switchyard_p2c"], 1e-9)))
# The cost of the resilience layers, switchyard_full against switchyard_bare (medians).
for sc in scenarios:
    m = {}
    for px in ("switchyard_bare", "switchyard_full"):
        ok = [r for r in rows if r["scenario"] == sc and r["proxy"] == px and r["status"] == "ok"]
        if ok:
            m[px] = {k: med([float(r[k]) for r in ok]) for k in ("req_per_s", "p99_ms", "req_per_cpu_s")}
    if len(m) == 2:
        b, f = m["switchyard_bare"], m["switchyard_full"]
        pct = lambda k: 100.0 * (f[k] / b[k] - 1) if b[k] else float("nan")
        print("%-8s layers (switchyard_full vs switchyard_bare): req/s %+.1f%%, req/cpu-s %+.1f%%, p99 %.3f -> %.3f ms (%+.1f%%)" % (
            sc, pct("req_per_s"), pct("req_per_cpu_s"), b["p99_ms"], f["p99_ms"], pct("p99_ms")))
# Failing mode: the error rate wrk sees: (non-2xx/3xx + socket errors) / completed requests,
# summed over rounds.
if sys.argv[5] == "failing":
    print()
    print("failing mode: error rate seen by wrk = (non-2xx/3xx + socket errors) / requests, summed over rounds")
    for sc in scenarios:
        for px in proxies:
            ok = [r for r in rows if r["scenario"] == sc and r["proxy"] == px and r["status"] == "ok"]
            if not ok:
                continue
            req = sum(int(r["requests"]) for r in ok)
            st = sum(int(r["err_status"]) for r in ok)
            sock = sum(int(r["errors"]) - int(r["err_status"]) for r in ok)
            print("%-8s %-20s error rate %.4f%%  (%d non-2xx/3xx + %d socket errors / %d requests)" % (
                sc, px, 100.0 * (st + sock) / req if req else float("nan"), st, sock, req))
PY
} | tee "$TABLE"
log "raw per-round results: $CSV"
log "table: $TABLE"
