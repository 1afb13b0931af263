#!/usr/bin/env bash
# bench/fleet.sh: fleet mode, publish -> every gateway serving.
#
# Three gateway processes (the release binary) follow one routes source; a load of 2 clients per
# gateway sends GET /a back to back the whole time; 20 sets are published one after another
# with `switchyard routes publish`. For each publish it measures the time from starting the
# command to the moment the last gateway answered with the new set (the load's responses carry
# the set's tag), and it counts every request that failed meanwhile. Printed: median and max
# over the 20 publishes, requests ok and failed; once through a real ZooKeeper (Debian's
# package, started by the test) and once through the Consul HTTP API double.
#
# The measurement is the ignored test `measure_publish_to_serving` of tests/fleet_zookeeper.rs
# and tests/fleet_consul.rs; the same code runs with 5 publishes in CI (asserting no failure).
#
# Quick start: bench/fleet.sh            (about a minute after the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/out/fleet-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
cargo test --release --locked --test fleet_zookeeper --test fleet_consul -- \
  --ignored --nocapture --test-threads=1 measure_publish_to_serving 2>&1 | tee "$out/run.log" | grep -oE "fleet (zookeeper|consul).*|test result.*|FAILED.*|panicked.*"
echo "log: $out/run.log"
