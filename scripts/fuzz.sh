#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ for DURATION seconds each (default 600), one after
# another, one libFuzzer process at a time. Prints per target the executions, exec/s and
# whether it crashed; exits non-zero when any target crashed (reproducers in
# fuzz/artifacts/<target>/, full logs in fuzz/artifacts/<target>.log). See fuzz/README.md.
#
#   scripts/fuzz.sh [DURATION]            every target
#   TARGETS="canonical_path route_file" scripts/fuzz.sh 60
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz when
# missing. New corpus entries are written to fuzz/corpus/<target>/ (minimise them with
# `cargo +nightly fuzz cmin <target>` before committing).
set -uo pipefail
cd "$(dirname "$0")/.."

duration="${1:-600}"
case "$duration" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz || exit 2
fi

if [ -n "${TARGETS:-}" ]; then
  read -r -a targets <<<"$TARGETS"
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 2; }

echo "== building ${targets[*]}"
cargo +nightly fuzz build || exit 2

mkdir -p fuzz/artifacts
failed=()
summary=()
for t in "${targets[@]}"; do
  log="fuzz/artifacts/$t.log"
  echo "== $t: ${duration}s (log: $log)"
  start=$(date +%s)
  cargo +nightly fuzz run "$t" -- -max_total_time="$duration" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  if [ "$rc" -eq 0 ]; then
    verdict="no crash"
  else
    artifact=$(sed -n 's/.*Test unit written to \([^ ]*\).*/\1/p' "$log" | tail -n1)
    verdict="CRASH (exit $rc) ${artifact:-see $log}"
    failed+=("$t")
    grep -m1 -A2 "panicked at" "$log" || grep -m3 "ERROR:" "$log" || tail -n 20 "$log"
  fi
  line=$(printf '%-22s %14s execs %8s exec/s %5ss  %s' "$t" "${execs:-?}" "${rate:-?}" "$took" "$verdict")
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary (${duration}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (reproduce: cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>)"
  exit 1
fi
