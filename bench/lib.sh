# Helpers shared by the benchmark scripts (bench/compare.sh, bench/chaos.sh, bench/profile.sh,
# bench/h3.sh).
# Sourced, not run. Every process is handled by PID; nothing here kills by name.

# End every process in STARTED_PIDS (the caller's array of what it started): SIGTERM first
# (nginx, haproxy and switchyard drain or stop on it), up to 3 s, then SIGKILL; by PID only.
stop_started() {
    local pid i alive
    for pid in "${STARTED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 1 30); do
        alive=0
        for pid in "${STARTED_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for pid in "${STARTED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# On exit (normal, error, INT, TERM): end what STARTED_PIDS holds, remove $TMP, keep the
# exit status. Call once, right after setting STARTED_PIDS=() and TMP="".
stop_on_exit() {
    cleanup() {
        local rc=$?
        trap - EXIT INT TERM
        stop_started
        [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
        exit "$rc"
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# need_commands CMD:PACKAGE ...: apt-get install the Debian package of every command that is
# missing (root needed; the caller's `log` and `die` report).
need_commands() {
    local spec missing=()
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
    done
    ((${#missing[@]})) || return 0
    log "installing missing packages: ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
}

# Direct children of a PID (nginx workers of their master).
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

# start_upstream_nginx DIR PORT: check and start the nginx of DIR/nginx.conf (NGINX_BIN) as the
# benchmarks' upstream on PORT, wait until it listens, and track it and its workers in
# STARTED_PIDS. Sets UPSTREAM_PID; dies (the caller's `die`) with nginx's own words on failure.
start_upstream_nginx() {
    local d=$1 port=$2 c
    "$NGINX_BIN" -t -q -p "$d" -c "$d/nginx.conf" 2>"$d/check.log" || { cat "$d/check.log" >&2; die "upstream nginx config invalid"; }
    "$NGINX_BIN" -p "$d" -c "$d/nginx.conf" >"$d/stdout.log" 2>"$d/stderr.log" &
    UPSTREAM_PID=$!
    STARTED_PIDS+=("$UPSTREAM_PID")
    wait_listen "$UPSTREAM_PID" "$port" || { cat "$d/stderr.log" "$d/error.log" >&2 2>/dev/null; die "upstream nginx did not start"; }
    sleep 0.2   # the master forks its workers after it listens
    for c in $(children_of "$UPSTREAM_PID"); do STARTED_PIDS+=("$c"); done
}

# free_port: a loopback TCP port no one listens on now, never the same twice in one run. The
# port is released before the server that gets it binds it (these scripts start other
# programs, which take a port number); wait_listen then checks the right process got it.
USED_PORTS=" "
free_port() {
    local p
    while :; do
        p=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
        [[ $USED_PORTS == *" $p "* ]] && continue
        USED_PORTS+="$p "
        echo "$p"; return
    done
}

# wait_listen PID PORT [TENTHS]: until something listens on PORT, while PID lives (10 s default).
wait_listen() {
    local pid=$1 port=$2 n=${3:-100} i
    for i in $(seq 1 "$n"); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]] && return 0
        sleep 0.1
    done
    return 1
}

# cpu_ticks PID...: sum of utime+stime (clock ticks, all threads) over the given PIDs.
cpu_ticks() {
    local total=0 pid stat rest
    local -a f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) }          # drop "pid (comm) ": comm may hold spaces
        read -ra f <<< "$rest"     # f[0] is field 3 (state): utime = field 14, stime = field 15
        total=$(( total + f[11] + f[12] ))
    done
    echo "$total"
}

# machine_ticks: busy ticks of the whole machine (all CPUs), from the first line of /proc/stat.
machine_ticks() {
    local _c u n sy _i _w irq sirq st _rest
    read -r _c u n sy _i _w irq sirq st _rest < /proc/stat
    echo $(( u + n + sy + irq + sirq + st ))
}
