#!/usr/bin/env bash
# scripts/build-pgo.sh: the release build to run in production, optimised with a profile of
# switchyard's own request paths (profile-guided optimisation, rustc's `-Cprofile-generate` /
# `-Cprofile-use`).
#
#   scripts/build-pgo.sh            # -> target/pgo/switchyard (about 15 minutes on 2 cores)
#
# Three steps, each in its own target directory so that none undoes the other:
#   1. an instrumented release build (target/pgo-generate);
#   2. the training run: bench/compare.sh with only switchyard, one short round of every
#      scenario (plain HTTP/1.1 GET, 1 KiB POST, 16 KiB GET, a fixed-rate GET, HTTPS over
#      HTTP/1.1 and HTTP/2, a TLS 1.3 handshake per request), once with one worker and once
#      with the default threads, against a local NGINX upstream; the counts land in
#      target/pgo/data and are merged into target/pgo/switchyard.profdata;
#   3. the release build again with that profile (target/pgo-use), copied to target/pgo/switchyard.
# The profile is made from the code being built, every time: it is never stale and never
# committed. What it changes is where code goes and what is inlined, not what the code does;
# the tests run against ordinary builds. The README ("Build it for production", "Performance")
# says what it buys.
#
# Needs: rustup's llvm-tools component (llvm-profdata of the compiler's own LLVM; added here if
# missing) and what bench/compare.sh needs (nginx, haproxy, wrk, h2load, curl, openssl, ss;
# it installs them when root). PGO_SECONDS (default 5): the length of each training scenario.
# RUSTFLAGS, when set, is kept and the profile flags are added to it.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[build-pgo] %s\n' "$*" >&2; }

host=$(rustc -vV | awk '/^host:/ { print $2 }')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x $profdata ]]; then
    log "adding rustup's llvm-tools component (llvm-profdata)"
    rustup component add llvm-tools >&2
fi
[[ -x $profdata ]] || { log "no llvm-profdata at $profdata"; exit 1; }

out=$PWD/target/pgo
rm -rf "$out"
mkdir -p "$out/data/build" "$out/data/train"

log "1/3: instrumented build (target/pgo-generate)"
# Build scripts run instrumented too; what they count goes to data/build and is not used.
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-generate=$out/data/build" \
    cargo build --release --locked --target-dir target/pgo-generate

log "2/3: training run (bench/compare.sh, switchyard only)"
for workers in 1 defaults; do
    env LLVM_PROFILE_FILE="$out/data/train/switchyard-%p-%m.profraw" \
        SWITCHYARD_BIN="$PWD/target/pgo-generate/release/switchyard" \
        PROXIES=switchyard ROUNDS=1 DURATION="${PGO_SECONDS:-5}" IDLE_CONNS=0 \
        WORKERS="$workers" \
        bash bench/compare.sh >"$out/train-$workers.log" 2>&1 \
        || { tail -n 20 "$out/train-$workers.log" >&2; log "training run failed"; exit 1; }
done
shopt -s nullglob
raw=("$out"/data/train/*.profraw)
((${#raw[@]})) || { log "the training run left no profile"; exit 1; }
"$profdata" merge -o "$out/switchyard.profdata" "${raw[@]}"

log "3/3: optimised build (target/pgo-use)"
# From nothing: cargo sees the profile's path in RUSTFLAGS, not what is in the file, and would
# keep crates optimised with the previous run's counts.
rm -rf target/pgo-use
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$out/switchyard.profdata" \
    cargo build --release --locked --target-dir target/pgo-use
cp target/pgo-use/release/switchyard "$out/switchyard"
log "done: $out/switchyard"
