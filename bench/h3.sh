#!/usr/bin/env bash
# bench/h3.sh: HTTP/3 against HTTP/2 over TLS on one switchyard TLS listener with `http3 = true`
# (same port: TCP for h2, UDP for h3), in front of one nginx upstream, on loopback, in
# interleaved rounds at equal connections x streams. HTTP/3 load: examples/h3load.rs; HTTP/2
# load: h2load (nghttp2-client). See bench/README.md ("HTTP/3 against HTTP/2").
#
#   bench/h3.sh                                    # 3 rounds x 10 s x {h3, h2}, GET / (64 bytes)
#   SCENARIOS=get64,get16k,post1k bench/h3.sh      # also 16 KiB responses and 1 KiB POSTs
#   SWITCHYARD_BIN=target/release/switchyard H3LOAD_BIN=target/release/examples/h3load bench/h3.sh
#   CONNECTIONS=1 STREAMS=64 DURATION=5 ROUNDS=1 bench/h3.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

# ---------------------------------------------------------------- settings --
DURATION=${DURATION:-10}          # seconds per measured run
DURATION=${DURATION%s}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-get64}     # get64, get16k, post1k
CONNECTIONS=${CONNECTIONS:-4}     # connections, for both protocols
STREAMS=${STREAMS:-16}            # concurrent streams per connection, for both protocols
THREADS=${THREADS:-1}             # load generator threads (h2load -t, h3load -t)
WORKERS=${WORKERS:-1}             # switchyard worker threads (SWITCHYARD_WORKER_THREADS)
WARMUP=${WARMUP:-2}               # seconds of unmeasured load per protocol before round 1; 0 = none
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-}
H3LOAD_BIN=${H3LOAD_BIN:-}

for v in DURATION ROUNDS CONNECTIONS STREAMS THREADS WORKERS WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "h3.sh: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
(( DURATION > 0 && DURATION <= 600 && ROUNDS > 0 && ROUNDS <= 20 )) || { echo "h3.sh: need 0 < DURATION <= 600 and 0 < ROUNDS <= 20" >&2; exit 2; }
(( CONNECTIONS > 0 && STREAMS > 0 && THREADS > 0 && WORKERS > 0 && THREADS <= CONNECTIONS )) || { echo "h3.sh: CONNECTIONS, STREAMS, THREADS, WORKERS must be > 0 and THREADS <= CONNECTIONS" >&2; exit 2; }
IFS=, read -ra SCENARIO_LIST <<< "$SCENARIOS"
for s in "${SCENARIO_LIST[@]}"; do
    [[ $s == get64 || $s == get16k || $s == post1k ]] || { echo "h3.sh: unknown scenario '$s' (have get64, get16k, post1k)" >&2; exit 2; }
done
log() { printf '[h3] %s\n' "$*" >&2; }
die() { printf '[h3] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ process care --
# Every process this script starts is recorded here and ended by PID on exit (TERM, then KILL).
. "$BENCH_DIR/lib.sh"   # free_port, wait_listen, children_of, cpu_ticks, machine_ticks, stop_on_exit
STARTED_PIDS=()
TMP=""
stop_on_exit


# ------------------------------------------------------------------- tools --
need_commands nginx:nginx h2load:nghttp2-client curl:curl python3:python3 openssl:openssl ss:iproute2
NGINX_BIN=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d /tmp/switchyard-h3bench.XXXXXX)
chmod 755 "$TMP"   # nginx workers run as an unprivileged user and must read www/
RUN_DIR="$OUT_DIR/h3-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN_DIR"
CSV="$RUN_DIR/results.csv"
TABLE="$RUN_DIR/table.txt"

# ------------------------------------------------------------------ builds --
if [[ -z $SWITCHYARD_BIN || -z $H3LOAD_BIN ]]; then
    log "building: cargo build --release --bin switchyard --example h3load (set SWITCHYARD_BIN and H3LOAD_BIN to skip)"
    (cd "$REPO_DIR" && cargo build --release --bin switchyard --example h3load) > "$TMP/build.log" 2>&1 \
        || { tail -n 30 "$TMP/build.log" >&2; die "cargo build failed"; }
    target=$(cd "$REPO_DIR" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    SWITCHYARD_BIN=${SWITCHYARD_BIN:-$target/release/switchyard}
    H3LOAD_BIN=${H3LOAD_BIN:-$target/release/examples/h3load}
fi
[[ -x $SWITCHYARD_BIN ]] || die "SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable"
[[ -x $H3LOAD_BIN ]] || die "H3LOAD_BIN=$H3LOAD_BIN is not an executable"

# ------------------------------------------------------------- certificate --
# A throwaway CA and a leaf for localhost (h3load verifies the chain; h2load does not).
TLS_DIR=$TMP/tls
mkdir -p "$TLS_DIR/certs"
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$TLS_DIR/certs/bench.key" -out "$TLS_DIR/bench.csr"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$TLS_DIR/ext.cnf"
    openssl x509 -req -in "$TLS_DIR/bench.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
        -CAcreateserial -days 2 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/certs/bench.crt"
} > "$TLS_DIR/openssl.log" 2>&1 || { cat "$TLS_DIR/openssl.log" >&2; die "cannot make the benchmark certificates"; }

# ---------------------------------------------------------------- upstream --
# nginx, one worker: GET / = 64 bytes, GET /16k = 16 KiB, POST /echo = body read, "ok\n".
start_upstream() {
    local d=$TMP/upstream
    mkdir -p "$d/www" "$d/tmp"
    head -c 16384 /dev/zero | tr '\0' 'y' > "$d/www/16k"
    UPSTREAM_PORT=$(free_port)
    cat > "$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
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
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        client_max_body_size 1m;
        client_body_buffer_size 64k;
        location = / { return 200 "$(printf 'x%.0s' $(seq 1 63))\n"; }
        location = /16k { root $d/www; }
        location = /echo { return 200 "ok\n"; }
    }
}
EOF
    start_upstream_nginx "$d" "$UPSTREAM_PORT"
    log "upstream nginx pid $UPSTREAM_PID on 127.0.0.1:$UPSTREAM_PORT"
}

# -------------------------------------------------------------- switchyard --
start_switchyard() {
    local d=$TMP/switchyard
    mkdir -p "$d/routes"
    PORT=$(free_port)
    cat > "$d/gateway.toml" <<EOF
[gateway]
routes_dir = "routes"
drain_timeout = "1s"

[[listener]]
name = "bench-tls"
listen = "127.0.0.1:$PORT"
[listener.tls]
certs_dir = "$TLS_DIR/certs"
http3 = true

[access_log]
enabled = false
EOF
    cat > "$d/routes/bench.toml" <<EOF
[[upstream]]
name = "fast"
endpoints = ["127.0.0.1:$UPSTREAM_PORT"]

[[route]]
name = "all"
path_prefix = "/"
upstream = "fast"
EOF
    SWITCHYARD_WORKER_THREADS=$WORKERS TOKIO_WORKER_THREADS=$WORKERS SWITCHYARD_LOG="${SWITCHYARD_LOG:-warn}" \
        "$SWITCHYARD_BIN" --config "$d/gateway.toml" >"$d/stdout.log" 2>"$d/stderr.log" &
    SY_PID=$!
    STARTED_PIDS+=("$SY_PID")
    wait_listen "$SY_PID" "$PORT" || { cat "$d/stderr.log" >&2; die "switchyard did not start"; }
    local i; for i in $(seq 1 50); do [[ -n $(ss -Huln "sport = :$PORT" 2>/dev/null) ]] && break; sleep 0.1; done
    [[ -n $(ss -Huln "sport = :$PORT" 2>/dev/null) ]] || { cat "$d/stderr.log" >&2; die "switchyard does not listen on UDP $PORT (http3 = true)"; }
    # Both protocols answer, and the TCP side advertises the UDP one.
    local out
    out=$(curl -sk --http2 -o /dev/null -D "$TMP/h2.head" -w '%{http_version} %{http_code} %{size_download}' "https://127.0.0.1:$PORT/")
    [[ $out == "2 200 64" ]] || die "h2 GET / -> $out (want 2 200 64)"
    grep -qi "^alt-svc: h3=\":$PORT\"" "$TMP/h2.head" || die "no alt-svc h3=\":$PORT\" on the h2 response: $(tr -d '\r' < "$TMP/h2.head" | tr '\n' ' ')"
    "$H3LOAD_BIN" --url "https://localhost:$PORT/" --connect 127.0.0.1 --ca "$TLS_DIR/ca.crt" -n 10 -d 5 > "$TMP/h3check.log" 2>&1 \
        || { cat "$TMP/h3check.log" "$d/stderr.log" >&2; die "h3 GET / failed"; }
    log "switchyard pid $SY_PID on 127.0.0.1:$PORT (TCP: h2, UDP: h3), $WORKERS worker thread(s)"
}

# --------------------------------------------------------------- load runs --
# Each run sets R_REQUESTS R_SECONDS R_P50_MS R_P99_MS R_MAX_MS R_ERRORS.
scenario_args() {   # scenario_args SCENARIO TOOL: the path and body options for that tool
    case $1/$2 in
        get64/*) echo "/" ;;
        get16k/*) echo "/16k" ;;
        post1k/h2) echo "/echo -d $TMP/post1k" ;;
        post1k/h3) echo "/echo --post-bytes 1024" ;;
    esac
}
head -c 1024 /dev/zero | tr '\0' 'p' > "$TMP/post1k"

# run_bg LOGFILE CMD...: run a load tool as a recorded background job and wait for it, so an
# interrupt still ends it by PID.
run_bg() {
    local logf=$1; shift
    "$@" > "$logf" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait "$pid" || true
}

run_h3() {   # run_h3 SCENARIO LOGFILE [SECONDS]
    local path opts line
    read -r path opts <<< "$(scenario_args "$1" h3)"
    # shellcheck disable=SC2086
    run_bg "$2" "$H3LOAD_BIN" --url "https://localhost:$PORT$path" --connect 127.0.0.1 --ca "$TLS_DIR/ca.crt" \
        -c "$CONNECTIONS" -m "$STREAMS" -t "$THREADS" -d "${3:-$DURATION}" $opts
    line=$(grep '^csv: ' "$2" | tail -n 1 || true)
    [[ -n $line ]] || { sed 's/^/    h3load| /' "$2" >&2; return 1; }
    IFS=, read -r _ _ _ R_SECONDS R_REQUESTS R_ERRORS _ R_P50_MS _ R_P99_MS R_MAX_MS _ <<< "${line#csv: }"
}

run_h2() {   # run_h2 SCENARIO LOGFILE [SECONDS]
    local path opts reqlog=$2.requests stats
    read -r path opts <<< "$(scenario_args "$1" h2)"
    # shellcheck disable=SC2086
    run_bg "$2" h2load -t"$THREADS" -c"$CONNECTIONS" -m"$STREAMS" -D"${3:-$DURATION}" --log-file="$reqlog" \
        $opts "https://127.0.0.1:$PORT$path"
    grep -q '^finished in' "$2" || { sed 's/^/    h2load| /' "$2" >&2; return 1; }
    R_SECONDS=$(awk '/^finished in/ { v = $3; sub(/,$/, "", v); u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
        printf "%.3f", (u == "ms" ? v / 1e3 : (u == "us" ? v / 1e6 : v)) }' "$2")
    R_REQUESTS=$(awk '/^requests:/ { print $8 }' "$2")                                   # "N succeeded"
    R_ERRORS=$(awk '/^requests:/ { f = $10 + $12 + $14 } /^status codes:/ { s = $7 + $9 } END { print f + s }' "$2")
    # Percentiles from the per-request log (2xx/3xx), as bench/compare.sh does.
    stats=$(awk -F'\t' '$2 >= 200 && $2 < 400 { print $3 }' "$reqlog" | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR == 0) { print "0 0 0"; exit }
              printf "%.3f %.3f %.3f", v[int((NR - 1) * 0.50) + 1] / 1e3, v[int((NR - 1) * 0.99) + 1] / 1e3, v[NR] / 1e3 }')
    read -r R_P50_MS R_P99_MS R_MAX_MS <<< "$stats"
    rm -f "$reqlog"
}

# ---------------------------------------------------------------------- run --
n_s=${#SCENARIO_LIST[@]}
est=$(( ROUNDS * n_s * 2 * (DURATION + 1) + 2 * n_s * WARMUP + 5 ))
log "plan: $ROUNDS round(s) x $n_s scenario(s) [$SCENARIOS] x {h3, h2} x ${DURATION}s, $CONNECTIONS connections x $STREAMS streams, load threads $THREADS; ~${est}s"
start_upstream
start_switchyard

if (( WARMUP > 0 )); then
    for sc in "${SCENARIO_LIST[@]}"; do
        log "warm-up: $sc, ${WARMUP}s per protocol"
        run_h3 "$sc" "$TMP/warmup-h3.log" "$WARMUP" || true
        run_h2 "$sc" "$TMP/warmup-h2.log" "$WARMUP" || true
    done
fi

echo "round,scenario,protocol,position,status,seconds,requests,req_per_s,p50_ms,p99_ms,max_ms,errors,switchyard_cpu_s,req_per_cpu_s,load_cpu_s,other_cpu_s,connections,streams,threads,workers" > "$CSV"
for (( r = 1; r <= ROUNDS; r++ )); do
    for sc in "${SCENARIO_LIST[@]}"; do
        # Alternate which protocol goes first, round by round.
        if (( r % 2 )); then order=(h3 h2); else order=(h2 h3); fi
        pos=0
        for proto in "${order[@]}"; do
            pos=$(( pos + 1 ))
            kill -0 "$SY_PID" 2>/dev/null || { tail -n 20 "$TMP/switchyard/stderr.log" >&2; die "switchyard (pid $SY_PID) has died"; }
            logf="$RUN_DIR/run-$r-$sc-$proto.log"
            times > "$TMP/times0"; c0=$(cpu_ticks "$SY_PID"); u0=$(cpu_ticks "$UPSTREAM_PID" $(children_of "$UPSTREAM_PID")); m0=$(machine_ticks)
            if ! "run_$proto" "$sc" "$logf"; then
                log "round $r $sc $proto: the load tool gave no result"
                echo "$r,$sc,$proto,$pos,failed,,,,,,,,,,,,$CONNECTIONS,$STREAMS,$THREADS,$WORKERS" >> "$CSV"
                continue
            fi
            c1=$(cpu_ticks "$SY_PID"); u1=$(cpu_ticks "$UPSTREAM_PID" $(children_of "$UPSTREAM_PID")); m1=$(machine_ticks); times > "$TMP/times1"
            # CPU time of this shell's waited-for children (the load tool), from bash `times`.
            l0=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' "$TMP/times0")
            l1=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' "$TMP/times1")
            row=$(awk -v req="$R_REQUESTS" -v s="$R_SECONDS" -v dc=$(( c1 - c0 )) -v du=$(( u1 - u0 )) -v dm=$(( m1 - m0 )) \
                      -v hz="$CLK_TCK" -v l0="$l0" -v l1="$l1" 'BEGIN {
                cpu = dc / hz; load = l1 - l0; other = dm / hz - cpu - du / hz - load
                printf "%.1f,%.3f,%.0f,%.3f,%.3f", (s > 0 ? req / s : 0), cpu, (cpu > 0 ? req / cpu : 0), load, (other > 0 ? other : 0) }')
            IFS=, read -r rps cpu rpc lcpu ocpu <<< "$row"
            echo "$r,$sc,$proto,$pos,ok,$R_SECONDS,$R_REQUESTS,$rps,$R_P50_MS,$R_P99_MS,$R_MAX_MS,$R_ERRORS,$cpu,$rpc,$lcpu,$ocpu,$CONNECTIONS,$STREAMS,$THREADS,$WORKERS" >> "$CSV"
            log "round $r/$ROUNDS $sc $proto: $rps req/s, p99 $R_P99_MS ms, $rpc req/cpu-s (switchyard cpu ${cpu}s, load tool ${lcpu}s), errors $R_ERRORS"
        done
    done
done

# ------------------------------------------------------------------ report --
{
    echo "switchyard bench/h3.sh  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r); $(h2load --version 2>&1 | head -n 1)"
    echo "rounds=$ROUNDS duration=${DURATION}s connections=$CONNECTIONS streams/connection=$STREAMS load_threads=$THREADS switchyard_workers=$WORKERS"
    echo
    python3 - "$CSV" "$SCENARIOS" "$(nproc)" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
med = lambda xs: statistics.median(xs) if xs else None
hdr = ["scenario", "protocol", "req/s", "p50_ms", "p99_ms", "req/cpu-s", "load_cpu_s", "errors", "rounds"]
out, ratio = [], []
for sc in sys.argv[2].split(","):
    m = {}
    for proto in ("h3", "h2"):
        rs = [r for r in rows if r["scenario"] == sc and r["protocol"] == proto]
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            out.append([sc, proto, "FAILED", "-", "-", "-", "-", "-", "0/%d" % len(rs)])
            continue
        f = lambda k: med([float(r[k]) for r in ok])
        m[proto] = {k: f(k) for k in ("req_per_s", "p99_ms", "req_per_cpu_s")}
        out.append([sc, proto, "%.0f" % f("req_per_s"), "%.3f" % f("p50_ms"), "%.3f" % f("p99_ms"),
                    "%.0f" % f("req_per_cpu_s"), "%.2f" % f("load_cpu_s"),
                    "%d" % sum(int(r["errors"]) for r in ok), "%d/%d" % (len(ok), len(rs))])
    if len(m) == 2:
        h3, h2 = m["h3"], m["h2"]
        ratio.append("%-7s h3/h2: req/s %.2fx, req/cpu-s %.2fx, p99 %.3f vs %.3f ms" % (
            sc, h3["req_per_s"] / h2["req_per_s"], h3["req_per_cpu_s"] / h2["req_per_cpu_s"], h3["p99_ms"], h2["p99_ms"]))
w = [max(len(str(x)) for x in col) for col in zip(hdr, *out)]
line = lambda cells: "  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(cells))
print(line(hdr))
print(line(["-" * n for n in w]))
for r in out:
    print(line(r))
print()
print("medians across rounds; req/cpu-s = requests per CPU-second of the switchyard process;")
print("load_cpu_s = CPU seconds of the load tool (h3load or h2load); errors = total over rounds")
ok = [r for r in rows if r["status"] == "ok" and float(r["seconds"]) > 0]
if ok:
    share = lambda r: float(r["other_cpu_s"]) / (float(r["seconds"]) * int(sys.argv[3]))
    worst = max(ok, key=share)
    print("other processes used up to %.0f%% of the machine during a run (round %s %s %s)%s" % (
        100 * share(worst), worst["round"], worst["scenario"], worst["protocol"],
        "  <-- WARNING: the machine was not quiet" if share(worst) > 0.10 else ""))
for r in ratio:
    print(r)
PY
} | tee "$TABLE"
log "raw per-round results: $CSV"
log "table: $TABLE"
