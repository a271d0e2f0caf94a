#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, all tests (unit, property, integration
# against real peers, fuzz-corpus replay). Installs the peers the tests need when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if need apt-get; then
    echo "test.sh: installing $* (needed by the integration tests)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "test.sh: please install $*" >&2
    exit 1
  fi
}
need curl || apt_install curl
need python3 || apt_install python3
need openssl || apt_install openssl
# nginx is an internal app in the end-to-end tests (Debian puts it in /usr/sbin).
[ -x /usr/sbin/nginx ] || need nginx || apt_install nginx-light || apt_install nginx
# The pre-authentication tests use the real oidc-provider (npm) and headless Chromium
# (Debian's package; playwright-core drives it and downloads no browser).
need node || apt_install nodejs
need npm || apt_install npm
[ -x /usr/bin/chromium ] || apt_install chromium
if [ ! -d tests/support/oidc/node_modules/oidc-provider ] \
   || [ ! -d tests/support/oidc/node_modules/playwright-core ]; then
  echo "test.sh: npm ci in tests/support/oidc"
  (cd tests/support/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi

# Scale-out (the service's `etcd` feature): a real etcd to test against, and protoc, which the
# etcd client's build needs for its gRPC code. The default build needs neither.
need etcd || apt_install etcd-server
need protoc || apt_install protobuf-compiler

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (default features, then with etcd)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features gatehouse/etcd -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --features gatehouse/etcd
