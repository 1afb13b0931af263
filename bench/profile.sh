#!/usr/bin/env bash
# bench/profile.sh: where one proxied request's cost goes, for switchyard (and nginx as a proxy,
# for comparison), with one worker each in front of an nginx upstream on loopback.
#
#   bench/profile.sh cpu        # user and kernel CPU µs per request, req per CPU-second (wrk -t2 -c64)
#                               # (cpu, syscalls and perf also measure examples/hyper_floor if built)
#   bench/profile.sh syscalls   # system calls per request (strace -c on the proxy, wrk -c16)
#   bench/profile.sh callgrind  # user-space instructions per request (valgrind), switchyard then nginx
#   bench/profile.sh perf       # perf record -g of each proxy, then the top symbols
#   bench/profile.sh segments   # TCP segments on loopback per request (all three hops), and
#                               # how many were pure ACKs, delayed ACKs, quick ACKs
#   bench/profile.sh ab         # two builds of switchyard (SWITCHYARD_BIN against SWITCHYARD_BASE_BIN)
#                               # behind one upstream, measured as in cpu, alternating, ROUNDS
#                               # (default 10) each; then the means and the paired difference
#   bench/profile.sh floor      # cpu and callgrind of examples/hyper_floor: hyper's two HTTP/1
#                               # codecs and nothing else, the least a proxy on this stack costs
#   bench/profile.sh fixedload  # p50/p99 at a fixed offered load (rate64's: RATE req/s over 64
#                               # connections, h2load --rps), the upstream alone and each proxy in
#                               # turn, ROUNDS (default 5) rounds; CPU, sleeps and (with perf) system
#                               # calls per request. WORKERS=defaults: each proxy as shipped
#
# SWITCHYARD_BIN (default target/release/switchyard, built if missing), SECONDS_RUN (default 5),
# ACCESS_LOG=1 (switchyard writes its access log to a file, as it does by default to stdout),
# CALLGRIND_OUT (callgrind mode: keep the raw profile in this file), CALLGRIND_ARGS (callgrind
# mode: more valgrind options for switchyard's run), PERF_OUT (perf mode: keep
# each perf-NAME.data in this folder), CACHESIM_RPS (cachesim mode: requests per second per
# connection, default 10, 64 connections), CACHESIM_LL (cachesim mode: the simulated last-level
# cache in bytes, default 524288), CACHESIM_OUT (cachesim mode: keep each profile as
# CACHESIM_OUT.NAME), RATE (fixedload mode: offered requests per second, default 20000), WORKERS
# (`defaults`: nginx `worker_processes auto` and switchyard's default threads, not one each).
# Every process started here is stopped by PID on exit. See bench/README.md ("Profiling").
set -euo pipefail

MODE=${1:-cpu}
SECS=${SECONDS_RUN:-5}
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SWITCHYARD_BIN:-$REPO_DIR/target/release/switchyard}
log() { printf '[profile] %s\n' "$*" >&2; }

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
case $MODE in
    syscalls) command -v strace >/dev/null || need+=(strace) ;;
    callgrind) command -v valgrind >/dev/null || need+=(valgrind) ;;
    perf) command -v perf >/dev/null || need+=(linux-perf) ;;
    floor) command -v valgrind >/dev/null || need+=(valgrind) ;;
    cachesim)
        command -v valgrind >/dev/null || need+=(valgrind)
        command -v h2load >/dev/null || need+=(nghttp2-client)
        ;;
    fixedload) command -v h2load >/dev/null || need+=(nghttp2-client) ;;
    cpu|segments) ;;
    ab) [[ -x ${SWITCHYARD_BASE_BIN:-} ]] || { echo "ab: set SWITCHYARD_BASE_BIN to the build to compare against" >&2; exit 2; } ;;
    *) echo "usage: bench/profile.sh cpu|syscalls|callgrind|perf|floor|segments|ab|cachesim|fixedload" >&2; exit 2 ;;
esac
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    [[ $(id -u) -eq 0 ]] || { log "need root to apt-get install ${need[*]}"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
fi
if [[ ! -x $BIN ]]; then
    log "building switchyard (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release >&2)
fi

TMP=$(mktemp -d /tmp/switchyard-profile.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for i in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    log "nothing answers on port $1"; exit 1
}

# WORKERS=defaults: each proxy with its production default worker count, as users run it.
DEFAULTS=0
case ${WORKERS:-1} in
    defaults) DEFAULTS=1 ;;
    1) ;;
    *) echo "WORKERS is 1 (the default) or defaults" >&2; exit 2 ;;
esac

UP=$(free_port) NGX=$(free_port) SY=$(free_port)
BODY=$(printf 'x%.0s' $(seq 1 63))
mkdir -p "$TMP/up" "$TMP/px" "$TMP/sy/routes"
cat > "$TMP/up/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/up/nginx.pid; error_log $TMP/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; client_body_temp_path $TMP/up;
  server { listen 127.0.0.1:$UP; location / { return 200 "$BODY\n"; } } }
EOF
cat > "$TMP/px/nginx.conf" <<EOF
worker_processes $( ((DEFAULTS)) && echo auto || echo 1); daemon off; pid $TMP/px/nginx.pid; error_log $TMP/px/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; client_body_temp_path $TMP/px; proxy_temp_path $TMP/px;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
EOF
cat > "$TMP/sy/gateway.toml" <<EOF
[gateway]
routes_dir = "routes"
[[listener]]
name = "profile"
listen = "127.0.0.1:$SY"
[access_log]
$(if [[ -n ${ACCESS_LOG:-} ]]; then echo "path = \"$TMP/sy/access.log\""; else echo "enabled = false"; fi)
EOF
printf '[[upstream]]\nname = "up"\nendpoints = ["127.0.0.1:%s"]\n[[route]]\nname = "all"\npath_prefix = "/"\nupstream = "up"\n' "$UP" \
    > "$TMP/sy/routes/profile.toml"

nginx -c "$TMP/up/nginx.conf" -p "$TMP/up" & PIDS+=($!)
wait_port "$UP"
start_switchyard() {   # start_switchyard [wrapper...]: sets SY_PID (the wrapper's PID if any)
    local threads=(SWITCHYARD_WORKER_THREADS=1)
    ((DEFAULTS)) && threads=()
    env "${threads[@]}" SWITCHYARD_LOG=warn "$@" "$BIN" --config "$TMP/sy/gateway.toml" \
        >"$TMP/sy/stdout.log" 2>"$TMP/sy/stderr.log" &
    SY_PID=$!
    PIDS+=("$SY_PID")
    wait_port "$SY"
}
start_nginx_proxy() {  # sets NGX_WORKER (the first worker) and NGX_WORKERS (all, comma-separated)
    nginx -c "$TMP/px/nginx.conf" -p "$TMP/px" & PIDS+=($!)
    wait_port "$NGX"
    sleep 0.2   # let the master fork every worker
    NGX_WORKERS=$(ps -o pid= --ppid "${PIDS[-1]}" | tr -d ' ' | paste -sd, -)
    NGX_WORKER=${NGX_WORKERS%%,*}
}
requests() { awk '/requests in/ { print $1 }'; }
# start_measured: switchyard, the nginx proxy and, when built, examples/hyper_floor (the
# least a proxy on this stack costs, to set both beside); sets whos ("NAME PID PORT" each).
start_measured() {
    start_switchyard
    start_nginx_proxy
    whos=("switchyard $SY_PID $SY" "nginx $NGX_WORKER $NGX")
    if [[ -x $FLOOR_BIN ]]; then
        start_floor
        whos+=("hyper_floor $FLOOR_PID $FL")
    fi
}
FLOOR_BIN=$REPO_DIR/target/release/examples/hyper_floor
start_floor() {  # start_floor [wrapper...]: sets FL (its port) and FLOOR_PID
    FL=$(free_port)
    "$@" "$FLOOR_BIN" "127.0.0.1:$FL" "127.0.0.1:$UP" & FLOOR_PID=$!
    PIDS+=("$FLOOR_PID")
    wait_port "$FL"
}

# cpu_measure NAME PID PORT: user and kernel µs per request of process PID under wrk -t2 -c64.
cpu_measure() {
    wrk -t2 -c64 -d1s "http://127.0.0.1:$3/" >/dev/null
    # utime, stime and minor page faults from /proc/PID/stat; context switches from status.
    ctxsw() { awk '/ctxt_switches/ { n += $2 } END { print n }' "/proc/$1/status"; }
    read -r u0 s0 f0 < <(awk '{ print $14, $15, $10 }' "/proc/$2/stat"); c0=$(ctxsw "$2")
    n=$(wrk -t2 -c64 -d"${SECS}s" "http://127.0.0.1:$3/" | requests)
    read -r u1 s1 f1 < <(awk '{ print $14, $15, $10 }' "/proc/$2/stat"); c1=$(ctxsw "$2")
    awk -v who="$1" -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" \
        -v f=$((f1 - f0)) -v c=$((c1 - c0)) 'BEGIN {
        printf "%-11s %8d requests  user %.2f µs/req  kernel %.2f µs/req  %.0f req per CPU-second  page faults %.4f/req  context switches %.4f/req\n",
            who, n, u / hz * 1e6 / n, s / hz * 1e6 / n, n / ((u + s) / hz), f / n, c / n }'
}
# cg_measure NAME PID PORT OUT: warm up, count instructions over SECS of load, report.
cg_measure() {
    local n ir out
    wrk -t1 -c8 -d2s "http://127.0.0.1:$3/" >/dev/null
    callgrind_control -i on "$2" >/dev/null 2>&1
    n=$(wrk -t1 -c8 -d"${SECS}s" "http://127.0.0.1:$3/" | requests)
    callgrind_control -i off "$2" >/dev/null 2>&1
    callgrind_control -d "$2" >/dev/null 2>&1
    sleep 0.5
    out=$(ls "$4".* | tail -n 1)
    ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    echo "$1: $n requests, $((ir / n)) user-space instructions per request"
    CG_LAST=$out
}

# tcp_counters: the kernel's TCP counters that say how many segments went (all sockets).
tcp_counters() {
    awk '$1 == "Tcp:" && !h { split($0, n); h = 1; next }
         $1 == "Tcp:" { for (i = 2; i <= NF; i++) v[n[i]] = $i }
         $1 == "TcpExt:" && !e { split($0, m); e = 1; next }
         $1 == "TcpExt:" { for (i = 2; i <= NF; i++) v[m[i]] = $i }
         END { print v["OutSegs"], v["DelayedACKs"], v["TCPPureAcks"], v["TCPHPAcks"], v["TCPHPHits"] }' \
        /proc/net/snmp /proc/net/netstat
}

case $MODE in
segments)
    # Every segment on loopback is one that some process sent and another received: a proxy
    # that makes more of them costs the kernel more per request, on both sides.
    start_measured
    for who in "${whos[@]}"; do
        set -- $who
        wrk -t2 -c64 -d1s "http://127.0.0.1:$3/" >/dev/null
        read -r o0 d0 p0 a0 h0 < <(tcp_counters)
        n=$(wrk -t2 -c64 -d"${SECS}s" "http://127.0.0.1:$3/" | requests)
        read -r o1 d1 p1 a1 h1 < <(tcp_counters)
        awk -v who="$1" -v n="$n" -v o=$((o1 - o0)) -v d=$((d1 - d0)) -v p=$((p1 - p0)) \
            -v a=$((a1 - a0)) -v h=$((h1 - h0)) 'BEGIN {
            printf "%-11s %8d requests  segments %.3f/req  delayed ACKs %.3f/req  pure ACKs received %.3f/req  header-predicted ACKs %.3f/req  data hits %.3f/req\n",
                who, n, o / n, d / n, p / n, a / n, h / n }'
    done
    ;;
cpu)
    start_measured
    for who in "${whos[@]}"; do
        cpu_measure $who
    done
    ;;
syscalls)
    start_measured
    for who in "${whos[@]}"; do
        set -- $who
        wrk -t1 -c16 -d1s "http://127.0.0.1:$3/" >/dev/null
        strace -c -f -p "$2" -o "$TMP/strace-$1.txt" & st=$!
        sleep 0.5
        n=$(wrk -t1 -c16 -d"${SECS}s" "http://127.0.0.1:$3/" | requests)
        kill -INT "$st"; wait "$st" 2>/dev/null || true
        echo "== $1: $n requests; calls per request:"
        awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ { printf "  %-14s %.3f\n", $NF, $4 / n }' "$TMP/strace-$1.txt" | head -n 8
    done
    ;;
callgrind)
    # CALLGRIND_ARGS: more valgrind options (e.g. --separate-callers=4, for the call chain
    # that leads to a function inlined everywhere).
    start_switchyard valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/cg.out" ${CALLGRIND_ARGS:-}
    cg_measure switchyard "$SY_PID" "$SY" "$TMP/cg.out"
    callgrind_annotate "$CG_LAST" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n 3,25p
    # CALLGRIND_OUT=FILE keeps the raw profile (for callgrind_annotate --threshold=100 FILE).
    if [[ -n ${CALLGRIND_OUT:-} ]]; then cp "$CG_LAST" "$CALLGRIND_OUT"; fi
    # NGINX as the same proxy, one process (no master) under the same tool: the user-space gap
    # as one number.
    sed 's/daemon off;/daemon off; master_process off;/' "$TMP/px/nginx.conf" > "$TMP/px/nginx-cg.conf"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/ngx-cg.out" \
        nginx -c "$TMP/px/nginx-cg.conf" -p "$TMP/px" >"$TMP/px/valgrind.log" 2>&1 &
    PIDS+=($!)
    wait_port "$NGX"
    cg_measure nginx "${PIDS[-1]}" "$NGX" "$TMP/ngx-cg.out"
    ;;
perf)
    # Each measured one after the other: the shares by binary, then the top symbols (PERF_TOP,
    # default 30). The kernel's symbols side by side show where the kernel time differs.
    start_measured
    for who in "${whos[@]}"; do
        set -- $who
        wrk -t2 -c64 -d1s "http://127.0.0.1:$3/" >/dev/null
        perf record -F 2999 -g -p "$2" -o "$TMP/perf-$1.data" -- sleep "$SECS" >/dev/null 2>&1 & pr=$!
        wrk -t2 -c64 -d"${SECS}s" "http://127.0.0.1:$3/" >/dev/null
        wait "$pr" || true
        if [[ -n ${PERF_OUT:-} ]]; then mkdir -p "$PERF_OUT" && cp "$TMP/perf-$1.data" "$PERF_OUT/"; fi
        echo "== $1"
        perf report -g none -i "$TMP/perf-$1.data" --no-children --sort dso 2>/dev/null | grep -v '^#' | sed '/^$/d' | head -n 5 || true
        perf report -g none -i "$TMP/perf-$1.data" --no-children --sort sym 2>/dev/null | grep -v '^#' | sed '/^$/d' \
            | head -n "${PERF_TOP:-30}" || true
    done
    ;;
ab)
    # Two builds, each one serving thread, behind the same upstream; runs alternate between
    # them (the order flips each round), so that both see the machine's slow and fast spells
    # alike. One run decides nothing on this kind of machine; the paired differences say how
    # far the mean can be trusted.
    start_switchyard
    NEW_PID=$SY_PID NEW_PORT=$SY
    BASE_PORT=$(free_port)
    sed "s/127.0.0.1:$SY\"/127.0.0.1:$BASE_PORT\"/" "$TMP/sy/gateway.toml" > "$TMP/sy/gateway-base.toml"
    SWITCHYARD_WORKER_THREADS=1 SWITCHYARD_LOG=warn "$SWITCHYARD_BASE_BIN" --config "$TMP/sy/gateway-base.toml" \
        >"$TMP/sy/base-stdout.log" 2>"$TMP/sy/base-stderr.log" &
    BASE_PID=$!
    PIDS+=("$BASE_PID")
    wait_port "$BASE_PORT"
    for r in $(seq 1 "${ROUNDS:-10}"); do
        if ((r % 2)); then
            cpu_measure base "$BASE_PID" "$BASE_PORT"; cpu_measure new "$NEW_PID" "$NEW_PORT"
        else
            cpu_measure new "$NEW_PID" "$NEW_PORT"; cpu_measure base "$BASE_PID" "$BASE_PORT"
        fi
    done | tee "$TMP/ab.txt"
    # Fields: name, requests, user µs ($5), kernel µs ($8), req per CPU-second ($10).
    awk '{ n[$1]++; u[$1] += $5; k[$1] += $8; r[$1] += $10; v[$1, n[$1]] = $10 }
         END {
           for (w in n) printf "mean %-4s  user %.2f µs/req  kernel %.2f µs/req  %.0f req per CPU-second  (%d runs)\n", w, u[w] / n[w], k[w] / n[w], r[w] / n[w], n[w]
           m = n["new"] < n["base"] ? n["new"] : n["base"]
           for (i = 1; i <= m; i++) { d = v["new", i] - v["base", i]; s += d; ss += d * d }
           mean = s / m; sd = m > 1 ? sqrt((ss - m * mean * mean) / (m - 1)) : 0
           printf "new - base, paired by round: %+.0f req per CPU-second (%+.1f %%), standard error %.0f\n", mean, 100 * mean / (r["base"] / n["base"]), sd / sqrt(m)
         }' "$TMP/ab.txt"
    ;;
floor)
    # examples/hyper_floor: hyper's HTTP/1 server and client codecs and nothing else (one
    # thread, one upstream connection per client connection, driven in its task).
    if [[ ! -x $FLOOR_BIN ]]; then
        log "building examples/hyper_floor (cargo build --release --example hyper_floor)"
        (cd "$REPO_DIR" && cargo build --release --example hyper_floor >&2)
    fi
    start_floor
    cpu_measure hyper_floor "$FLOOR_PID" "$FL"
    kill -TERM "$FLOOR_PID"; wait "$FLOOR_PID" 2>/dev/null || true
    start_floor valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/floor-cg.out" \
        --log-file="$TMP/floor-valgrind.log"
    cg_measure hyper_floor "$FLOOR_PID" "$FL" "$TMP/floor-cg.out"
    if [[ -n ${CALLGRIND_OUT:-} ]]; then cp "$CG_LAST" "$CALLGRIND_OUT"; fi
    ;;
cachesim)
    # What a request costs in caches when requests come one by one, as at a fixed offered load
    # (rate64): 64 connections, each sending CACHESIM_RPS requests per second, so that between
    # two requests on a connection the other 63 have run theirs. Valgrind's simulator: L1 code
    # and data 32 KiB each, 8-way, and a last level of CACHESIM_LL bytes, 16-way, all with
    # 64-byte lines (the host's L2 is 1 MiB per core, shared with the kernel's socket buffers
    # and the other processes on the core, so half of it is what the proxy keeps). A line
    # missed in L1 costs about a dozen cycles from L2; one missed in the last level, tens from
    # L3 or a hundred and more from memory. Counted in the proxy's own process only: what the
    # kernel and the other processes evict between two bursts comes on top, which is why the
    # lines a request touches matter more at a fixed load than saturated.
    if [[ ! -x $FLOOR_BIN ]]; then
        log "examples/hyper_floor is not built (cargo build --release --example hyper_floor); measuring without it"
    fi
    rps=${CACHESIM_RPS:-10}
    sim=(valgrind --tool=callgrind --cache-sim=yes --I1=32768,8,64 --D1=32768,8,64
        --LL="${CACHESIM_LL:-524288}",16,64 --instr-atstart=no)
    # cs_measure NAME PID PORT OUT
    cs_measure() {
        local n out
        h2load --h1 -c64 -D2 --rps="$rps" "http://127.0.0.1:$3/" >/dev/null 2>&1
        callgrind_control -i on "$2" >/dev/null 2>&1
        n=$(h2load --h1 -c64 -D"$SECS" --rps="$rps" "http://127.0.0.1:$3/" 2>&1 | awk '/^requests:/ { print $8 }')
        callgrind_control -i off "$2" >/dev/null 2>&1
        callgrind_control -d "$2" >/dev/null 2>&1
        sleep 0.5
        out=$(ls "$4".* | tail -n 1)
        if [[ -n ${CACHESIM_OUT:-} ]]; then cp "$out" "$CACHESIM_OUT.$1"; fi
        # Events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
        callgrind_annotate "$out" 2>/dev/null | awk -v who="$1" -v n="$n" '/PROGRAM TOTALS/ {
            for (i = 1; i <= 9; i++) { v[i] = $(2 * i - 1); gsub(",", "", v[i]) }
            printf "%-11s %6d requests  per request: %6.0f instructions  L1 code misses %5.0f  L1 data misses %4.0f  last-level misses: code %4.1f, data %5.1f\n",
                who, n, v[1] / n, v[4] / n, (v[5] + v[6]) / n, v[7] / n, (v[8] + v[9]) / n }'
    }
    start_switchyard "${sim[@]}" --callgrind-out-file="$TMP/sy-cs.out" --log-file="$TMP/sy-valgrind.log"
    cs_measure switchyard "$SY_PID" "$SY" "$TMP/sy-cs.out"
    kill -TERM "$SY_PID"; wait "$SY_PID" 2>/dev/null || true
    if [[ -x $FLOOR_BIN ]]; then
        start_floor "${sim[@]}" --callgrind-out-file="$TMP/floor-cs.out" --log-file="$TMP/floor-valgrind.log"
        cs_measure hyper_floor "$FLOOR_PID" "$FL" "$TMP/floor-cs.out"
        kill -TERM "$FLOOR_PID"; wait "$FLOOR_PID" 2>/dev/null || true
    fi
    sed 's/daemon off;/daemon off; master_process off;/' "$TMP/px/nginx.conf" > "$TMP/px/nginx-cs.conf"
    "${sim[@]}" --callgrind-out-file="$TMP/ngx-cs.out" nginx -c "$TMP/px/nginx-cs.conf" -p "$TMP/px" \
        >"$TMP/px/valgrind.log" 2>&1 &
    PIDS+=($!)
    wait_port "$NGX"
    cs_measure nginx "${PIDS[-1]}" "$NGX" "$TMP/ngx-cs.out"
    ;;
fixedload)
    # rate64's load by itself: RATE req/s spread over 64 connections (h2load --rps), each proxy
    # and the upstream alone ("direct": what the load generator and the upstream leave without a
    # proxy) in turn, ROUNDS rounds. CPU is summed over every thread of every process of the
    # proxy (nginx: its workers); voluntary sleeps from /proc; system calls per request from
    # perf's syscall tracepoints when perf is installed (`perf stat` counts in the kernel and
    # barely slows the proxy, unlike strace).
    rate=${RATE:-20000}
    per_conn=$(awk -v r="$rate" 'BEGIN { printf "%.3f", r / 64 }')
    start_switchyard
    start_nginx_proxy
    whos=("direct - $UP" "switchyard $SY_PID $SY" "nginx $NGX_WORKERS $NGX")
    # sum_field FIELD FILE PIDS: FIELD of FILE (stat: a field number; status: a key) over the threads of PIDS.
    sum_field() {
        local pid total=0 t
        for pid in ${3//,/ }; do
            for t in /proc/"$pid"/task/*; do
                if [[ $2 == stat ]]; then
                    total=$((total + $(awk -v f="$1" '{ print $f }' "$t/stat")))
                else
                    total=$((total + $(awk -v k="$1:" '$1 == k { print $2 }' "$t/status")))
                fi
            done
        done
        echo "$total"
    }
    calls="raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait"
    hz=$(getconf CLK_TCK)
    for r in $(seq 1 "${ROUNDS:-5}"); do
        for who in "${whos[@]}"; do
            set -- $who
            h2load --h1 -c64 -D2 --rps="$per_conn" "http://127.0.0.1:$3/" >/dev/null 2>&1
            stat_pid=""
            if [[ $2 != - ]] && command -v perf >/dev/null; then
                perf stat -x, -e "$calls" -p "$2" -o "$TMP/calls" -- sleep "$SECS" >/dev/null 2>&1 &
                stat_pid=$!
            fi
            if [[ $2 != - ]]; then
                u0=$(sum_field 14 stat "$2"); s0=$(sum_field 15 stat "$2"); v0=$(sum_field voluntary_ctxt_switches status "$2")
            fi
            rm -f "$TMP/lat.log"
            h2load --h1 -c64 -D"$SECS" --rps="$per_conn" --log-file="$TMP/lat.log" "http://127.0.0.1:$3/" >/dev/null 2>&1
            cost="-"
            if [[ $2 != - ]]; then
                u1=$(sum_field 14 stat "$2"); s1=$(sum_field 15 stat "$2"); v1=$(sum_field voluntary_ctxt_switches status "$2")
                n=$(wc -l < "$TMP/lat.log")
                cost=$(awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v v=$((v1 - v0)) -v hz="$hz" 'BEGIN {
                    printf "user %.2f µs/req  kernel %.2f µs/req  sleeps %.3f/req", u / hz * 1e6 / n, s / hz * 1e6 / n, v / n }')
            fi
            if [[ -n $stat_pid ]]; then
                wait "$stat_pid" || true
                # perf counted over SECS of the run: per request at the offered rate.
                cost+=$(awk -F, -v n=$((rate * SECS)) '$3 ~ /sys_enter/ && $1 ~ /^[0-9]+$/ {
                    name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all"
                    printf "  %s %.2f", name, $1 / n } END { printf " syscalls/req" }' "$TMP/calls")
            fi
            sort -n -k3 "$TMP/lat.log" | awk -v who="$1" -v r="$r" -v cost="$cost" '{ v[NR] = $3 } END {
                printf "round %d %-11s %7d requests  p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  %s\n", r, who, NR,
                    v[int((NR - 1) * 0.50) + 1] / 1e3, v[int((NR - 1) * 0.99) + 1] / 1e3, v[int((NR - 1) * 0.999) + 1] / 1e3, cost }'
        done
    done
    ;;
esac
