#!/usr/bin/env bash
# Runs every check and test of switchyard. Installs the system packages the tests need when they
# are missing (Debian: apt-get), so a fresh machine and CI behave the same.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2")
}
need curl curl
need openssl openssl
need kill procps   # tests/cli.rs signals the binary with `kill -TERM PID`
# ZooKeeper for tests/discovery_zookeeper.rs (the tests start and stop their own servers).
[ -f /usr/share/java/zookeeper.jar ] || need_pkgs+=(zookeeper)
# A real headless browser for tests/dashboard.rs (driven over WebDriver by chromedriver).
need chromium chromium
need chromedriver chromium-driver
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_pkgs[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo build"
cargo build --all-targets --locked
echo "== cargo test"
cargo test --locked -- --test-threads="${TEST_THREADS:-4}"
