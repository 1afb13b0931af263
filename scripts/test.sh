#!/usr/bin/env bash
# Runs every check and test of switchyard. Installs the system packages the tests need when they
# are missing (Debian: apt-get), so a fresh machine and CI behave the same.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build (CI, a fresh clone) gains nothing from incremental state, which is most of the
# disk a debug build takes.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

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
# Python for the HTTP/3 interop tests (tests/http3_interop.rs run aioquic in a venv, below).
# Debian splits `venv` (and the ensurepip it needs) into python3-venv.
need python3 python3
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_pkgs+=(python3-venv)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_pkgs[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

# aioquic, an HTTP/3 client switchyard did not write, for tests/http3_interop.rs: a virtual
# environment under target/ (never committed), made again when aioquic is not the pinned version.
H3VENV=target/h3venv
AIOQUIC_VERSION=1.7.2
if ! "$H3VENV/bin/python" -c "import sys, aioquic; sys.exit(aioquic.__version__ != '$AIOQUIC_VERSION')" >/dev/null 2>&1; then
  echo "test.sh: making $H3VENV with aioquic==$AIOQUIC_VERSION"
  rm -rf "$H3VENV"
  python3 -m venv "$H3VENV"
  "$H3VENV/bin/python" -m pip install --quiet --disable-pip-version-check "aioquic==$AIOQUIC_VERSION"
fi
export SWITCHYARD_H3_PYTHON="$PWD/$H3VENV/bin/python"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo build"
cargo build --all-targets --locked
echo "== cargo test"
cargo test --locked -- --test-threads="${TEST_THREADS:-4}"
