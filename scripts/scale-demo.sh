#!/usr/bin/env bash
# Scale-out on one machine: three Gatehouse service instances sharing their state in etcd,
# one connector with tunnels to all three, and the demo's sample app, all on loopback (see
# docs/scale-out.md). Installs etcd-server and protobuf-compiler with apt-get when missing:
# only this mode needs them. Ctrl-C stops everything.
#
# Usage: scripts/scale-demo.sh
# Environment: GATEHOUSE=path (a gatehouse built with --features etcd; default: build one
# with `cargo build --release --features etcd`), SCALE_DIR=dir (default: a new directory in
# /tmp), SCALE_HTTPS_BASE=8440 (instance i serves https on BASE+i and tunnels on BASE+100+i).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  echo "scale-demo: installing $*"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need etcd || apt_install etcd-server
need protoc || apt_install protobuf-compiler
need curl || apt_install curl

GH="${GATEHOUSE:-}"
if [ -z "$GH" ]; then
  cargo build --release --features etcd --quiet
  GH=target/release/gatehouse
fi
DIR="${SCALE_DIR:-$(mktemp -d /tmp/gatehouse-scale.XXXXXX)}"
mkdir -p "$DIR"
BASE="${SCALE_HTTPS_BASE:-8440}"
ETCD_CLIENT=$((BASE + 200)); ETCD_PEER=$((BASE + 201)); APP_PORT=$((BASE + 202))

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

etcd --name m1 --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "m1=http://127.0.0.1:$ETCD_PEER" >"$DIR/etcd.log" 2>&1 &
PIDS+=($!)
"$GH" demo-app --port "$APP_PORT" >"$DIR/app.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$ETCD_CLIENT") 2>/dev/null && break; sleep 0.1; done

for i in 1 2 3; do
  cat >"$DIR/service-$i.toml" <<EOF
state_dir = "state-$i"
workers = 1
public_name = "localhost"
events_file = "events-$i.jsonl"
[listen]
https = "127.0.0.1:$((BASE + i))"
tunnel = "127.0.0.1:$((BASE + 100 + i))"
[state]
backend = "etcd"
endpoints = ["http://127.0.0.1:$ETCD_CLIENT"]
prefix = "/gatehouse-demo"
[[apps]]
name = "public"
external_url = "https://public.localhost/"
internal_url = "http://127.0.0.1:$APP_PORT/"
EOF
  "$GH" service run --config "$DIR/service-$i.toml" --instance-id "instance-$i" \
    --advertise "localhost:$((BASE + 100 + i))" 2>"$DIR/service-$i.log" &
  PIDS+=($!)
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$((BASE + 100 + i))") 2>/dev/null && break; sleep 0.1; done
done

# One connector, registered with instance 1: it learns of the others from its configuration.
"$GH" service token create --config "$DIR/service-1.toml" --ttl 10m >"$DIR/token"
"$GH" connector register --service "https://localhost:$((BASE + 101))" --token "@$DIR/token" \
  --state-dir "$DIR/connector" >/dev/null
"$GH" connector run --state-dir "$DIR/connector" 2>"$DIR/connector.log" &
PIDS+=($!)

for i in 1 2 3; do
  url="https://public.localhost:$((BASE + i))/"
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$DIR/state-$i/ca.pem" \
      --resolve "public.localhost:$((BASE + i)):127.0.0.1" "$url" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  echo "instance $i: $url -> $code"
done
echo "scale-demo: three instances, one etcd, one connector; files and logs in $DIR"
echo "scale-demo: kill one instance (kill <pid of 'gatehouse service run ... instance-N'>) and the others serve on. Ctrl-C stops."
wait
