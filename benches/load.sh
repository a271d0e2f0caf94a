#!/usr/bin/env bash
# End-to-end load benchmark on loopback, in one run, side by side:
#   direct    wrk -> nginx back end (plain HTTP)                       the floor
#   nginx     wrk -> nginx TLS reverse proxy -> back end               one hop, the peer to beat
#             (TLS 1.3, AES-128-GCM and the same certificate as the service)
#   gh-pass   wrk -> Gatehouse service (TLS) -> tunnel -> connector -> back end   passthrough app
#   gh-pre    the same, preauth app, with a valid session cookie
#   gh-pass-rustls  gh-pass on rustls's own TLS record layer (opt-in, see LOAD_TARGETS)
#   gh-pass-b gh-pass served by another gatehouse binary, LOAD_GH_B (opt-in): a change
#             measured against the build before it in the same rounds
#   stack     wrk -> nginx TLS front -> rathole server -> tunnel (TLS) -> rathole client -> back end
#             what users would build instead of Gatehouse: the same front as `nginx` and, like
#             the connector, an outbound-only tunnel from next to the back end (opt-in)
# for a 1 KiB and a 1 MiB file, at 64 and 256 connections; then Gatehouse passthrough with one
# and with two service workers (thread-per-core scaling).
#
# Pinning (2-core machines): wrk runs on CPU 1; every server process (back end, proxy,
# service, connector, stack front, rathole server and client) runs on CPU 0, so each proxy
# gets the same single core and the load generator never steals it. The scaling run leaves the
# servers unpinned.
#
# A run with any non-2xx answer makes the script fail (exit 1) after the summary, and writes
# no chart.
#
# Each run prints requests/s, p50 / p99 / p99.9 / max latency (the last two from the wrk hook
# benches/latency.lua) and transfer rate, and the CPU time (utime + stime from /proc/PID/stat,
# before and after the run) per request completed, in microseconds, of each server process on
# its path (all but wrk): back end (its nginx workers), nginx proxy (the workers of the proxy
# instance), service, connector, stack front (its nginx workers), rathole server and client. A
# Gatehouse run also prints the resident memory of service and connector. The summary gives
# each figure's ratio to nginx, the median CPU per request, the edge CPU (the TLS-terminating
# process alone: service against nginx proxy) and the path CPU (every server process) with
# ratios to nginx and to stack, gh-pass against gh-pass-rustls and against stack when they
# ran; then benches/chart.py draws the ratios of gh-pass and gh-pre to nginx and to stack
# (requests/s at 1 KiB, transfer rate at 1 MiB) as an SVG bar chart (LOAD_CHART).
#
# Results file (tab-separated, one line per run, in $WORK, removed at exit): name, size,
# connections, requests/s, p50, p99, transfer/s, non-2xx, p99.9, CPU us/request of service +
# connector, of service, of connector, of nginx proxy, of stack front, of rathole server, of
# rathole client, of back end ("-" where the process is not on the run's path).
#
# Usage: benches/load.sh [seconds per run, default 10]
# Subsets (environment): LOAD_SIZES="1k 1m", LOAD_CONNS="64 256",
# LOAD_TARGETS="direct nginx nginx-nolog gh-pass gh-pre" (also nginx-new and gh-new: a new TLS
# connection for every request, compared with each other; nginx-tls12: the proxy at nginx
# 1.22's own TLS defaults; stack: nginx in front of rathole, opt-in because its four runs add
# nearly a fifth to the default run's time, and a release build of rathole where it is missing;
# gh-pass-rustls: gh-pass served by a second service and connector,
# pinned and configured as the first, started with GATEHOUSE_TLS_RECORDS=rustls so that
# traffic after the handshake stays on rustls's record layer, where the first stack runs
# Gatehouse's own, set explicitly as GATEHOUSE_TLS_RECORDS=gatehouse so that an exported
# value cannot blur the comparison; both stacks run throughout, so rounds stay interleaved),
# LOAD_REPEAT=1 (rounds, interleaved),
# LOAD_SCALING=1 (0 skips the 1-vs-2-worker runs), LOAD_IDLE=0 (N > 0 also measures resident
# memory per idle keep-alive TLS connection with N connections, nginx proxy and service, and
# the rustls-path service when gh-pass-rustls is among the targets),
# LOAD_GH_B=path (the binary gh-pass-b runs on the second stack's ports, started like the
# first; gh-pass-rustls and gh-pass-b share those ports, so a run takes one of them),
# LOAD_PERF=1 (records a perf profile of service and connector during each Gatehouse run;
# LOAD_PERF=dwarf for call graphs through code without frame pointers),
# LOAD_GH=path (a gatehouse binary to measure instead of building this checkout),
# LOAD_ALLOCS=1 (counts allocations per request in service and connector, with uprobes on
# mimalloc's entry points: needs root and perf; slows those runs, so only their counts count),
# LOAD_CHART=docs/load.svg (where the SVG chart goes; empty: no chart),
# RATHOLE=~/.cargo/bin/rathole (the rathole binary for stack; installed with
# `cargo install rathole --version 0.5.0` when missing and stack is among the targets; not
# --locked: its lock file pins time 0.3.29, which no longer compiles with Rust 1.95).
# Needs: wrk, nginx, openssl, python3, curl (installed with apt-get when missing), and a
# release build (`cargo build --release`, done here); for stack, rathole (see RATHOLE).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
ROOT="$(pwd)"

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  echo "load.sh: installing $*"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need wrk || apt_install wrk
[ -x /usr/sbin/nginx ] || need nginx || apt_install nginx-light
need openssl || apt_install openssl
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

TARGETS="${LOAD_TARGETS:-direct nginx nginx-nolog gh-pass gh-pre}"
# SECOND: what the second Gatehouse stack runs, rustls (gh-pass-rustls) or b (gh-pass-b).
PEER_STACK=""; SECOND=""
for target in $TARGETS; do
  case $target in
    stack) PEER_STACK=yes ;;
    gh-pass-rustls | gh-pass-b)
      [ -z "$SECOND" ] || { echo "load.sh: gh-pass-rustls and gh-pass-b share ports: pick one" >&2; exit 2; }
      SECOND=${target#gh-pass-} ;;
  esac
done
if [ "$SECOND" = b ] && [ ! -x "${LOAD_GH_B:-}" ]; then
  echo "load.sh: gh-pass-b needs LOAD_GH_B, a gatehouse binary" >&2; exit 2
fi
# rathole only for stack: its release build (LTO, one codegen unit) takes minutes. Pinned to
# the version whose TLS transport the stack's comments describe; openssl-sys links the
# system's libssl, so it needs its headers.
RATHOLE="${RATHOLE:-$HOME/.cargo/bin/rathole}"
if [ -n "$PEER_STACK" ] && [ ! -x "$RATHOLE" ]; then
  dpkg -s libssl-dev pkg-config >/dev/null 2>&1 || apt_install libssl-dev pkg-config
  echo "load.sh: installing rathole (cargo install rathole --version 0.5.0)"
  # Not --locked: rathole 0.5.0's lock file pins time 0.3.29, which Rust 1.95 cannot compile.
  cargo install rathole --version 0.5.0 --quiet
  RATHOLE="${CARGO_HOME:-$HOME/.cargo}/bin/rathole"
fi

if [ -z "${LOAD_GH:-}" ]; then cargo build --release --quiet; fi
GH="${LOAD_GH:-$ROOT/target/release/gatehouse}"

WORK="$(mktemp -d /tmp/gatehouse-load.XXXXXX)"
# nginx workers run as nobody: they must be able to read the files.
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The event log alone grows by hundreds of megabytes per run: keep only perf profiles.
  if [ -n "${LOAD_PERF:-}" ]; then
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name 'perf-*.data' -exec rm -rf {} +
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

CPUS=$(nproc)
if [ "$CPUS" -ge 2 ]; then SERVER_CPU=0; CLIENT_CPU=1; else SERVER_CPU=0; CLIENT_CPU=0; fi

BACKEND=18900; PROXY=18901; HTTPS=18902; TUNNEL=18903; PROXY_NOLOG=18904; PROXY_TLS12=18905
# The second Gatehouse stack (gh-pass-rustls or gh-pass-b).
HTTPS_SECOND=18906; TUNNEL_SECOND=18907
# The peer stack (stack): nginx front, rathole's control port (the tunnel) and its service port
# (what the front proxies to).
STACK_FRONT=18908; RATHOLE_CONTROL=18910; RATHOLE_SERVICE=18911
mkdir -p "$WORK/www" "$WORK/tmp"
head -c 1024 /dev/urandom > "$WORK/www/1k.bin"
head -c 1048576 /dev/urandom > "$WORK/www/1m.bin"
# One certificate for both proxies, so that clients do the same handshake work with each: a
# self-signed P-256 leaf for every name the runs use.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=proxy.test \
  -addext "subjectAltName=DNS:proxy.test,DNS:pass.test,DNS:pre.test,DNS:localhost,IP:127.0.0.1" \
  -addext basicConstraints=critical,CA:FALSE -keyout "$WORK/proxy.key" -out "$WORK/proxy.pem" 2>/dev/null

# One worker each, like the one core they get. The back end logs nothing (it is the same for
# every run). The proxy logs each request to a buffered access log, as Gatehouse writes a JSON
# event per request (batched every 200 ms); the same proxy without its log answers on a second
# port (target nginx-nolog), to show what the log costs. Both speak TLS 1.3 and prefer
# AES-128-GCM, as the service does (nginx 1.22's own default is TLS 1.2 at most, and the
# client's AES-256-GCM); target nginx-tls12, not in the default set, is that default.
cat > "$WORK/nginx.conf" <<EOF
daemon off; worker_processes 1; error_log $WORK/error.log; pid $WORK/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp;
  fastcgi_temp_path $WORK/tmp; uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  keepalive_requests 1000000;
  sendfile on;
  server { listen 127.0.0.1:$BACKEND; root $WORK/www; }
}
EOF
cat > "$WORK/proxy.conf" <<EOF
daemon off; worker_processes 1; error_log $WORK/proxy-error.log; pid $WORK/proxy.pid;
events { worker_connections 16384; }
worker_rlimit_nofile 20000;
http {
  access_log $WORK/proxy-access.log combined buffer=64k flush=1s; client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp;
  fastcgi_temp_path $WORK/tmp; uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  keepalive_requests 1000000; keepalive_timeout 600s;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_prefer_server_ciphers on;
  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 256; }
  server {
    listen 127.0.0.1:$PROXY ssl; ssl_certificate $WORK/proxy.pem; ssl_certificate_key $WORK/proxy.key;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering on; }
  }
  server {
    listen 127.0.0.1:$PROXY_NOLOG ssl; ssl_certificate $WORK/proxy.pem; ssl_certificate_key $WORK/proxy.key;
    access_log off;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering on; }
  }
  server {
    listen 127.0.0.1:$PROXY_TLS12 ssl; ssl_certificate $WORK/proxy.pem; ssl_certificate_key $WORK/proxy.key;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2; ssl_prefer_server_ciphers off;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering on; }
  }
}
EOF
# The masters' pids: the CPU figures count their workers, which do the serving.
taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null & PIDS+=($!)
BACKEND_MASTER=$!
taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/proxy.conf" -p "$WORK" 2>/dev/null & PIDS+=($!)
PROXY_MASTER=$!

# The peer stack (stack), only when it runs. The front is its own nginx instance, configured
# as the proxy above (TLS settings, certificate, buffered access log, keep-alive upstream), so
# that its workers' CPU is the front's alone; its upstream is rathole's service port. rathole
# server and client, like service and connector, are the ends of a tunnel that the back end's
# side opens, here over rathole's TLS transport: it takes the same certificate (as PKCS#12 for
# the server, as the trusted root for the client), where its noise transport would take a
# generated keypair and RustCrypto's ciphers instead of OpenSSL's assembly. rathole 0.5.0 does
# not let the TLS settings be chosen: native-tls's acceptor (Mozilla's intermediate profile)
# disables TLS 1.3 and prefers ChaCha20-Poly1305, so the tunnel runs TLS 1.2 with
# ECDHE-ECDSA-CHACHA20-POLY1305 (printed at start) where Gatehouse's runs TLS 1.3 with
# AES-128-GCM: what a user of rathole gets. rathole's own defaults otherwise (TCP_NODELAY, a
# data channel per front connection, info logging); its tokio runtime sizes itself to the one
# CPU it is pinned to.
STACK_MASTER=""; RATHOLE_SERVER_PID=""; RATHOLE_CLIENT_PID=""
if [ -n "$PEER_STACK" ]; then
  mkdir -p "$WORK/stack-tmp"
  cat > "$WORK/stack.conf" <<EOF
daemon off; worker_processes 1; error_log $WORK/stack-error.log; pid $WORK/stack.pid;
events { worker_connections 16384; }
worker_rlimit_nofile 20000;
http {
  access_log $WORK/stack-access.log combined buffer=64k flush=1s; client_body_temp_path $WORK/stack-tmp; proxy_temp_path $WORK/stack-tmp;
  fastcgi_temp_path $WORK/stack-tmp; uwsgi_temp_path $WORK/stack-tmp; scgi_temp_path $WORK/stack-tmp;
  keepalive_requests 1000000; keepalive_timeout 600s;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_prefer_server_ciphers on;
  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
  upstream rathole { server 127.0.0.1:$RATHOLE_SERVICE; keepalive 256; }
  server {
    listen 127.0.0.1:$STACK_FRONT ssl; ssl_certificate $WORK/proxy.pem; ssl_certificate_key $WORK/proxy.key;
    location / { proxy_pass http://rathole; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering on; }
  }
}
EOF
  openssl pkcs12 -export -in "$WORK/proxy.pem" -inkey "$WORK/proxy.key" -passout pass:bench \
    -out "$WORK/rathole.p12"
  cat > "$WORK/rathole-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$RATHOLE_CONTROL"
[server.transport]
type = "tls"
[server.transport.tls]
pkcs12 = "$WORK/rathole.p12"
pkcs12_password = "bench"
[server.services.backend]
token = "bench-token"
bind_addr = "127.0.0.1:$RATHOLE_SERVICE"
EOF
  cat > "$WORK/rathole-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$RATHOLE_CONTROL"
[client.transport]
type = "tls"
[client.transport.tls]
trusted_root = "$WORK/proxy.pem"
hostname = "localhost"
[client.services.backend]
token = "bench-token"
local_addr = "127.0.0.1:$BACKEND"
EOF
  taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/stack.conf" -p "$WORK" 2>/dev/null & PIDS+=($!)
  STACK_MASTER=$!
  # taskset execs rathole, so $! is rathole's own pid.
  taskset -c "$SERVER_CPU" "$RATHOLE" --server "$WORK/rathole-server.toml" >"$WORK/rathole-server.log" 2>&1 &
  PIDS+=($!); RATHOLE_SERVER_PID=$!
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$RATHOLE_CONTROL") 2>/dev/null && break; sleep 0.1; done
  taskset -c "$SERVER_CPU" "$RATHOLE" --client "$WORK/rathole-client.toml" >"$WORK/rathole-client.log" 2>&1 &
  PIDS+=($!); RATHOLE_CLIENT_PID=$!
  # The server opens its service port once the client's control channel is up.
  code=""
  for _ in $(seq 100); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$STACK_FRONT/1k.bin" || true)
    [ "$code" = 200 ] && break; sleep 0.1
  done
  if [ "$code" != 200 ]; then
    echo "load.sh: the stack does not answer (front: $code); rathole's logs:" >&2
    cat "$WORK/rathole-server.log" "$WORK/rathole-client.log" >&2
    exit 1
  fi
  # What the tunnel negotiates, asked by a client that offers what rathole's does (the server's
  # preference decides). rathole logs an error for this connection, which sends no hello.
  # (awk reads to the end: an early exit would fail the pipeline on SIGPIPE.)
  tunnel_tls=$(timeout 10 openssl s_client -connect "127.0.0.1:$RATHOLE_CONTROL" -servername localhost \
    -CAfile "$WORK/proxy.pem" </dev/null 2>/dev/null | awk '/^New,/ && !n {print; n = 1}' || true)
  echo "== stack: $("$RATHOLE" -V 2>/dev/null | awk 'NR == 1'), tunnel: ${tunnel_tls:-TLS parameters unknown}"
fi

# Pids of the stacks: SERVICE_PID / CONNECTOR_PID for the one on Gatehouse's record layer,
# SECOND_SERVICE_PID / SECOND_CONNECTOR_PID for the second (gh-pass-rustls, gh-pass-b).
SERVICE_PID=""; CONNECTOR_PID=""; SECOND_SERVICE_PID=""; SECOND_CONNECTOR_PID=""
start_gatehouse() { # workers, pin (yes/no), stack (gatehouse, the default; rustls or b: the second)
  local workers=$1 pin=$2 stack=${3:-gatehouse}
  # The second stack has its own ports, files and state, so that both stacks can run at once
  # and gh-pass and gh-pass-rustls (or gh-pass-b) interleave in each round like the other
  # targets.
  local sfx="" pre="" https=$HTTPS tunnel=$TUNNEL records=gatehouse GH=$GH
  if [ "$stack" != gatehouse ]; then
    sfx=-$stack; pre=SECOND_; https=$HTTPS_SECOND; tunnel=$TUNNEL_SECOND
  fi
  if [ "$stack" = rustls ]; then records=rustls; fi
  if [ "$stack" = b ]; then GH=$LOAD_GH_B; fi
  local hash
  hash=$(echo bench-pw | "$GH" dev-idp hash --iterations 1000)
  cat > "$WORK/service$sfx.toml" <<EOF
state_dir = "state$sfx"
workers = $workers
public_name = "localhost"
hsts = "off"
events_file = "events$sfx.jsonl"
[limits]
# One load generator is one client address: per-address limits off for the benchmark.
rate = 0
connections_per_ip = 100000
# The idle-memory run keeps connections open while it opens the rest.
keepalive_timeout = "10m"
[[certificates]]
hosts = ["127.0.0.1", "pass.test", "pre.test", "localhost"]
cert = "$WORK/proxy.pem"
key = "$WORK/proxy.key"
[listen]
https = "127.0.0.1:$https"
tunnel = "127.0.0.1:$tunnel"
[dev_idp]
[[dev_idp.users]]
username = "bench"
password_hash = "$hash"
groups = ["staff"]
[[apps]]
name = "pass"
external_url = "https://pass.test/"
internal_url = "http://127.0.0.1:$BACKEND/"
[[apps]]
name = "pre"
external_url = "https://pre.test/"
internal_url = "http://127.0.0.1:$BACKEND/"
mode = "preauth"
provider = "dev"
[apps.access]
groups = ["staff"]
${LOAD_PRE_EXTRA:-}
EOF
  rm -rf "$WORK/state$sfx" "$WORK/connector$sfx"
  # taskset execs the command, so $! is the server's own pid. Both the service and the
  # connector get the variable: both ends of the tunnel, as well as the client-facing side, are
  # TLS.
  local cpus; cpus=$([ "$pin" = yes ] && echo "$SERVER_CPU" || echo "0-$((CPUS - 1))")
  GATEHOUSE_TLS_RECORDS="$records" taskset -c "$cpus" \
    "$GH" service run --config "$WORK/service$sfx.toml" 2>"$WORK/service$sfx.log" &
  PIDS+=($!)
  printf -v "${pre}SERVICE_PID" %s "$!"
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$tunnel") 2>/dev/null && break; sleep 0.1; done
  "$GH" service token create --config "$WORK/service$sfx.toml" --role admin --ttl 10m > "$WORK/token$sfx"
  "$GH" connector register --service "https://localhost:$tunnel" --token "@$WORK/token$sfx" \
    --group default --state-dir "$WORK/connector$sfx" >/dev/null 2>&1
  GATEHOUSE_TLS_RECORDS="$records" taskset -c "$cpus" \
    "$GH" connector run --state-dir "$WORK/connector$sfx" 2>"$WORK/connector$sfx.log" &
  PIDS+=($!)
  printf -v "${pre}CONNECTOR_PID" %s "$!"
  for _ in $(seq 100); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --resolve "pass.test:$https:127.0.0.1" \
      "https://pass.test:$https/1k.bin" || true)
    [ "$code" = 200 ] && break; sleep 0.1
  done
  sleep 1
}

stop_gatehouse() { # stack (gatehouse, the default, or the second: rustls or b)
  local service=$SERVICE_PID connector=$CONNECTOR_PID
  if [ "${1:-gatehouse}" != gatehouse ]; then service=$SECOND_SERVICE_PID; connector=$SECOND_CONNECTOR_PID; fi
  kill "$service" "$connector" 2>/dev/null || true
  wait "$service" "$connector" 2>/dev/null || true
}

session_cookie() {
  python3 tests/support/oidc/login.py --ca "$WORK/proxy.pem" \
    --resolve "pre.test:$HTTPS:127.0.0.1" --resolve "localhost:$HTTPS:127.0.0.1" \
    --user bench --password bench-pw --url "https://pre.test:$HTTPS/1k.bin" 2>/dev/null \
    | tail -1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print("__Host-gh-session-pre=" + r["cookie_attrs"]["__Host-gh-session-pre"]["value"])'
}

# LOAD_ALLOCS: count calls into the allocator (mimalloc's entry points, as uprobes) in the
# service and the connector during each Gatehouse run. The probes slow every allocation, so
# such a run's speed figures are not comparable with others; its counts are.
alloc_rate() { # perf stat -x, output file, requests
  awk -F, -v r="$2" '$3 ~ /^ghalloc:/ {n += $1} END {printf "%.2f", n / r}' "$1"
}
if [ -n "${LOAD_ALLOCS:-}" ]; then
  need perf || apt_install linux-perf
  perf probe -q -d 'ghalloc:*' 2>/dev/null || true
  for fn in mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned; do
    perf probe -q -x "$GH" -a "ghalloc:${fn#mi_}=$fn"
  done
  trap 'perf probe -q -d "ghalloc:*" 2>/dev/null || true; cleanup' EXIT
fi

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
# Resident KiB per idle connection (LOAD_IDLE), by serving process, for the summary.
IDLE_RESULTS="$WORK/idle.tsv"
: > "$IDLE_RESULTS"
# CPU time (user + system, clock ticks) a process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
# Microseconds of CPU per request: ticks, requests; "-" when no request completed.
per_request() { awk -v u="$1" -v r="${2:-0}" -v hz="$HZ" 'BEGIN {if (r > 0) printf "%.1f", u / hz * 1e6 / r; else printf "-"}'; }
# The server processes, by role, in the order of the results' CPU columns (after service +
# connector): every one is measured in the runs whose path it is on.
ROLES=(service connector proxy front rathole-server rathole-client backend)
path_roles() { # run name
  case $1 in
    direct) echo backend ;;
    nginx*) echo proxy backend ;;
    stack) echo front rathole-server rathole-client backend ;;
    gh-*) echo service connector backend ;;
  esac
}
# The pids a role's CPU counts: an nginx instance's workers, not their master, which only
# watches them (the proxy's workers serve nginx, nginx-nolog, nginx-tls12 and nginx-new alike).
role_pids() { # role, service pid, connector pid
  case $1 in
    service) echo "$2" ;;
    connector) echo "$3" ;;
    proxy) pgrep -P "$PROXY_MASTER" || true ;;
    front) if [ -n "$STACK_MASTER" ]; then pgrep -P "$STACK_MASTER" || true; fi ;;
    rathole-server) echo "$RATHOLE_SERVER_PID" ;;
    rathole-client) echo "$RATHOLE_CLIENT_PID" ;;
    backend) pgrep -P "$BACKEND_MASTER" || true ;;
  esac
}
role_ticks() { # role, service pid, connector pid
  local t=0 pid
  for pid in $(role_pids "$@"); do t=$((t + $(ticks "$pid"))); done
  echo "$t"
}
# run NAME SIZE CONNECTIONS URL [wrk header args...]
run() {
  local name=$1 size=$2 conns=$3 url=$4; shift 4
  # gh-pass-rustls and gh-pass-b are served by the second stack, every other gh-* run by the
  # first.
  local svc=$SERVICE_PID con=$CONNECTOR_PID
  if [[ $name == gh-pass-rustls || $name == gh-pass-b ]]; then svc=$SECOND_SERVICE_PID; con=$SECOND_CONNECTOR_PID; fi
  local out role
  local -A before=()
  for role in $(path_roles "$name"); do before[$role]=$(role_ticks "$role" "$svc" "$con"); done
  local perf_data="$WORK/perf-$name-$size-$conns.data" perf_pid="" alloc_pids=()
  if [[ -n ${LOAD_ALLOCS:-} && $name == gh-* ]]; then
    local pid
    for pid in "$svc" "$con"; do
      perf stat -x, -e 'ghalloc:*' -p "$pid" -o "$WORK/allocs-$pid" -- sleep "$DURATION" 2>/dev/null &
      alloc_pids+=($!)
    done
  fi
  if [[ -n ${LOAD_PERF:-} && $name == gh-* ]]; then
    local graph=-g; [ "$LOAD_PERF" = dwarf ] && graph="--call-graph=dwarf,16384"
    perf record -q -F 499 $graph -p "$svc,$con" -o "$perf_data" -- sleep "$DURATION" 2>/dev/null &
    perf_pid=$!
  fi
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --latency \
    -s "$ROOT/benches/latency.lua" "$@" "$url" 2>&1)
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    echo "  perf profile: $perf_data (perf report -i $perf_data --no-children --sort dso,symbol)"
  fi
  local allocs=""
  if [ ${#alloc_pids[@]} -gt 0 ]; then
    wait "${alloc_pids[@]}" || true
    local total; total=$(awk '/requests in/ {print $1}' <<<"$out")
    allocs=" allocations/req: service $(alloc_rate "$WORK/allocs-$svc" "$total"), connector $(alloc_rate "$WORK/allocs-$con" "$total")"
  fi
  local rps p50 p99 p999 max rate non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  p999=$(awk '$1=="tail" {print $3}' <<<"$out")
  max=$(awk '$1=="tail" {print $5}' <<<"$out")
  rate=$(awk '/^Transfer\/sec:/ {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
  # CPU per request of each server process on the path: steadier than requests/s on a shared
  # host, whose stolen time is not charged to the processes. Each process apart, as a change
  # of TLS code (gh-pass-rustls) shows on both ends of the tunnel, and the edge (service,
  # proxy, front) is compared apart from the tunnel and the back end.
  local requests path_used=0 parts="" rss="" cpu=-
  local -A used=() cpu_of=()
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  for role in "${ROLES[@]}"; do cpu_of[$role]=-; done
  for role in $(path_roles "$name"); do
    used[$role]=$(( $(role_ticks "$role" "$svc" "$con") - ${before[$role]} ))
    cpu_of[$role]=$(per_request "${used[$role]}" "$requests")
    path_used=$(( path_used + ${used[$role]} ))
    parts+="${parts:+, }${role/backend/back end} ${cpu_of[$role]}"
  done
  if [ -n "$parts" ]; then rss=" cpu $(per_request "$path_used" "$requests") us/req ($parts);"; fi
  if [[ $name == gh-* ]]; then
    cpu=$(per_request $(( ${used[service]} + ${used[connector]} )) "$requests")
    rss+=" rss service $(awk '/VmRSS/ {print $2}' "/proc/$svc/status") KiB, connector $(awk '/VmRSS/ {print $2}' "/proc/$con/status") KiB"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$size" "$conns" "$rps" "$p50" "$p99" \
    "$rate" "${non2xx:-0}" "$p999" "$cpu" "${cpu_of[service]}" "${cpu_of[connector]}" "${cpu_of[proxy]}" \
    "${cpu_of[front]}" "${cpu_of[rathole-server]}" "${cpu_of[rathole-client]}" "${cpu_of[backend]}" >> "$RESULTS"
  printf '  %-14s %-3s c=%-4s %10s req/s  p50 %-9s p99 %-9s p99.9 %-9s max %-9s %10s/s  non-2xx %s%s%s\n' \
    "$name" "$size" "$conns" "$rps" "$p50" "$p99" "$p999" "$max" "$rate" "${non2xx:-0}" "$rss" "$allocs"
}

echo "== load: ${DURATION}s per run; servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
start_gatehouse 1 yes
# The second stack idles on the same core while the others run: it costs next to nothing,
# and starting it once keeps gh-pass and gh-pass-rustls (or gh-pass-b) in the same rounds.
if [ -n "$SECOND" ]; then start_gatehouse 1 yes "$SECOND"; fi
COOKIE=$(session_cookie)
for round in $(seq "${LOAD_REPEAT:-1}"); do
for size in ${LOAD_SIZES:-1k 1m}; do
  for conns in ${LOAD_CONNS:-64 256}; do
    for target in $TARGETS; do
      case $target in
        direct) run direct "$size" "$conns" "http://127.0.0.1:$BACKEND/$size.bin" ;;
        nginx) run nginx "$size" "$conns" "https://127.0.0.1:$PROXY/$size.bin" ;;
        nginx-nolog) run nginx-nolog "$size" "$conns" "https://127.0.0.1:$PROXY_NOLOG/$size.bin" ;;
        nginx-tls12) run nginx-tls12 "$size" "$conns" "https://127.0.0.1:$PROXY_TLS12/$size.bin" ;;
        # The peer stack; not in the default set.
        stack) run stack "$size" "$conns" "https://127.0.0.1:$STACK_FRONT/$size.bin" ;;
        # The same request bytes as gh-pre (a browser sends its cookies either way), so
        # the difference between the two is what pre-authentication does.
        gh-pass) run gh-pass "$size" "$conns" "https://127.0.0.1:$HTTPS/$size.bin" \
          -H "Host: pass.test" -H "Cookie: $COOKIE" ;;
        # gh-pass byte for byte, on the rustls-record-layer stack (the pass app ignores the
        # cookie, which the first stack issued). Not in the default set.
        gh-pass-rustls) run gh-pass-rustls "$size" "$conns" "https://127.0.0.1:$HTTPS_SECOND/$size.bin" \
          -H "Host: pass.test" -H "Cookie: $COOKIE" ;;
        # gh-pass byte for byte, served by LOAD_GH_B. Not in the default set.
        gh-pass-b) run gh-pass-b "$size" "$conns" "https://127.0.0.1:$HTTPS_SECOND/$size.bin" \
          -H "Host: pass.test" -H "Cookie: $COOKIE" ;;
        # A new TLS connection for every request (resumed after the first of each client
        # connection): what a storm of reconnecting clients costs. Not in the default set.
        nginx-new) run nginx-new "$size" "$conns" "https://127.0.0.1:$PROXY/$size.bin" \
          -H "Connection: close" ;;
        gh-new) run gh-new "$size" "$conns" "https://127.0.0.1:$HTTPS/$size.bin" \
          -H "Host: pass.test" -H "Cookie: $COOKIE" -H "Connection: close" ;;
        gh-pre) run gh-pre "$size" "$conns" "https://127.0.0.1:$HTTPS/$size.bin" \
          -H "Host: pre.test" -H "Cookie: $COOKIE" ;;
      esac
    done
  done
done
done
echo "== resident memory after the runs: service $(awk '/VmRSS/ {print $2, $3}' /proc/$SERVICE_PID/status), connector $(awk '/VmRSS/ {print $2, $3}' /proc/$CONNECTOR_PID/status)"
stop_gatehouse
if [ -n "$SECOND" ]; then
  echo "== resident memory after the runs (second stack, $SECOND): service $(awk '/VmRSS/ {print $2, $3}' /proc/$SECOND_SERVICE_PID/status), connector $(awk '/VmRSS/ {print $2, $3}' /proc/$SECOND_CONNECTOR_PID/status)"
  stop_gatehouse "$SECOND"
fi

# Resident memory per idle keep-alive connection: N TLS connections, each sent one request
# for the 1 KiB file and then left idle; RSS of the serving process before and after.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle_memory() { # name pid port sni
  local name=$1 pid=$2 port=$3 sni=$4 before after per_conn fifo="$WORK/idle.fifo"
  before=$(rss_kib "$pid")
  rm -f "$fifo"; mkfifo "$fifo"
  # The client holds its connections until its stdin (the fifo) closes.
  python3 benches/idle_clients.py 127.0.0.1 "$port" "$sni" /1k.bin "$LOAD_IDLE" < "$fifo" > "$WORK/idle.out" &
  local client=$!
  exec 9> "$fifo"
  for _ in $(seq 1200); do grep -qE '^(ready|failed)' "$WORK/idle.out" && break; sleep 0.25; done
  sleep 2 # let timers that release idle buffers run
  after=$(rss_kib "$pid")
  per_conn=$(awk -v a="$after" -v b="$before" -v n="$LOAD_IDLE" 'BEGIN {printf "%.2f", (a - b) / n}')
  printf '  %-14s %s idle connections (%s): RSS %s KiB -> %s KiB, %s KiB per connection\n' "$name" \
    "$LOAD_IDLE" "$(head -1 "$WORK/idle.out")" "$before" "$after" "$per_conn"
  printf '%s\t%s\n' "$name" "$per_conn" >> "$IDLE_RESULTS"
  exec 9>&-
  wait "$client" 2>/dev/null || true
}
if [ "${LOAD_IDLE:-0}" -gt 0 ]; then
  echo "== idle keep-alive connections: resident memory of the serving process"
  idle_memory nginx "$(pgrep -P "$PROXY_MASTER" | head -1)" "$PROXY" proxy.test
  start_gatehouse 1 yes
  idle_memory gh-pass "$SERVICE_PID" "$HTTPS" pass.test
  stop_gatehouse
  # A fresh stack, as for gh-pass, started once the other has stopped: both measurements
  # start from the same state.
  if [ -n "$SECOND" ]; then
    start_gatehouse 1 yes "$SECOND"
    idle_memory "gh-pass-$SECOND" "$SECOND_SERVICE_PID" "$HTTPS_SECOND" pass.test
    stop_gatehouse "$SECOND"
  fi
fi

if [ "${LOAD_SCALING:-1}" = 1 ]; then
  echo "== thread-per-core scaling (gh-pass, 1k, 256 connections, servers unpinned)"
  for workers in 1 2; do
    start_gatehouse "$workers" no
    run "gh-w$workers" 1k 256 "https://127.0.0.1:$HTTPS/1k.bin" -H "Host: pass.test"
    stop_gatehouse
  done
fi

echo "== summary: median over rounds; ratios to nginx and to stack (and gh-pre to gh-pass, gh-pass to gh-pass-rustls or gh-pass-b) in the same run"
python3 - "$RESULTS" "$IDLE_RESULTS" <<'PY'
import itertools, math, statistics, sys
from collections import defaultdict
def ms(t):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * f
    return float("nan")
def rate(t):
    for unit, f in (("GB", 1024.0), ("MB", 1.0), ("KB", 1 / 1024.0), ("B", 1 / 1048576.0)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * f
    return float("nan")
def num(t):
    try:
        return float(t)
    except ValueError:
        return float("nan")
# The results' CPU columns after service + connector, us per request, "-" (nan here) where the
# process is not on the run's path. In a median tuple: P + i, and the path's sum at PATH.
PROCS = ("service", "connector", "proxy", "front", "rathole server", "rathole client", "back end")
P = 6
PATH = P + len(PROCS)
runs = defaultdict(list)
order = []
for line in open(sys.argv[1]):
    fields = line.rstrip("\n").split("\t")
    fields += ["-"] * (10 + len(PROCS) - len(fields))
    # CPU per request (service + connector, us) is "-" for runs that are not Gatehouse's.
    name, size, conns, rps, p50, p99, tr, _, p999, cpu = fields[:10]
    procs = [num(t) for t in fields[10 : 10 + len(PROCS)]]
    on_path = [v for v in procs if not math.isnan(v)]
    key = (name, size, conns)
    if key not in order:
        order.append(key)
    # The path's CPU is summed within each run, then its median taken over the rounds.
    runs[key].append((float(rps), ms(p50), ms(p99), rate(tr), ms(p999), num(cpu), *procs,
                      sum(on_path) if on_path else float("nan")))
med = {k: tuple(statistics.median(v[i] for v in runs[k]) for i in range(PATH + 1)) for k in order}
# Resident KiB per idle keep-alive connection, by serving process (LOAD_IDLE).
idle = dict(line.rstrip("\n").split("\t") for line in open(sys.argv[2]))
def baseline(name):
    # New-connection runs are compared with nginx under the same load.
    return "nginx-new" if name.endswith("-new") else "nginx"
print(f"{'run':14} {'size':4} {'conns':>5} {'req/s':>9} {'x nginx':>8} {'p50 ms':>8} {'p99 ms':>8} {'x p99':>6} {'p99.9 ms':>9} {'MB/s':>8} {'x MB/s':>7} {'cpu us':>7} {'rounds':>6}")
for key in order:
    name, size, conns = key
    rps, p50, p99, tr, p999, cpu = med[key][:6]
    base = med.get((baseline(name), size, conns))
    x = lambda a, i: f"{a / base[i]:.2f}" if base and base[i] else "-"
    cpu_s = "-" if math.isnan(cpu) else f"{cpu:.1f}"
    print(f"{name:14} {size:4} {conns:>5} {rps:>9.0f} {x(rps, 0):>8} {p50:>8.2f} {p99:>8.2f} {x(p99, 2):>6} "
          f"{p999:>9.2f} {tr:>8.1f} {x(tr, 3):>7} {cpu_s:>7} {len(runs[key]):>6}")
print()
print("chart: x nginx in requests/s (1k) or transfer rate (1m); '|' is nginx (1.00)")
for key in order:
    name, size, conns = key
    base = med.get((baseline(name), size, conns))
    # The scaling runs are unpinned: not comparable with the pinned nginx run.
    if name == baseline(name) or name.startswith("gh-w") or not base:
        continue
    i = 0 if size == "1k" else 3
    ratio = med[key][i] / base[i]
    bar = ("#" * round(min(ratio, 3.0) * 20)).ljust(20)
    bar = bar[:20] + "|" + bar[20:]
    print(f"{name:14} {size:3} c={conns:<4} {bar:<62} {ratio:.2f}")
for (size, conns), other in itertools.product(
        sorted({(k[1], k[2]) for k in order}), ("gh-pass-rustls", "gh-pass-b")):
    a, b = med.get(("gh-pass", size, conns)), med.get((other, size, conns))
    if a and b:
        # Gatehouse's record layer against rustls's, the rest alike: above 1 in requests/s
        # and below 1 in CPU is what Gatehouse's own buys.
        r = lambda i: f"{a[i] / b[i]:.2f}" if b[i] else "-"
        line = (f"gh-pass / {other} {size} c={conns}: {r(0)} of the requests/s, "
                f"{r(5)} of the CPU per request ({a[5]:.1f} vs {b[5]:.1f} us)")
        if "gh-pass" in idle and other in idle:
            line += f", idle {idle['gh-pass']} vs {idle[other]} KiB per connection"
        print(line)
for size, conns in sorted({(k[1], k[2]) for k in order}):
    a, b = med.get(("gh-pass", size, conns)), med.get(("gh-pre", size, conns))
    if a and b:
        print(f"gh-pre / gh-pass {size} c={conns}: {b[0] / a[0]:.2f} of the requests/s")
# Against the stack users would build instead: nginx in front of rathole.
for size, conns in sorted({(k[1], k[2]) for k in order}):
    peer = med.get(("stack", size, conns))
    for name in ("gh-pass", "gh-pre"):
        a = med.get((name, size, conns))
        if a and peer and peer[0] and peer[2] and peer[3]:
            print(f"{name} / stack {size} c={conns}: {a[0] / peer[0]:.2f} of the requests/s, "
                  f"{a[3] / peer[3]:.2f} of the transfer rate, {a[2] / peer[2]:.2f} of the p99")

# CPU per request by process. The edge is the process that terminates the clients' TLS, alone:
# what Gatehouse's service costs where nginx would stand. The path is every server process
# (all but wrk): what the whole of each answer costs, tunnel and back end included.
def f1(v):
    return "-" if math.isnan(v) else f"{v:.1f}"
def ratio(a, b):
    return "-" if math.isnan(a) or math.isnan(b) or not b else f"{a / b:.2f}"
nan = float("nan")
print()
print("CPU per request, us: edge = the TLS-terminating process alone; path = every server process"
      " (ratios below 1 are cheaper)")
for size, conns in dict.fromkeys((k[1], k[2]) for k in order):
    # The scaling runs are unpinned: not comparable with the pinned ones.
    names = [k[0] for k in order if k[1:] == (size, conns) and not k[0].startswith("gh-w")]
    if not names:
        continue
    m = lambda name: med.get((name, size, conns))
    stack = m("stack")
    stack_front = stack[P + 3] if stack else nan
    stack_path = stack[PATH] if stack else nan
    print(f"{size} c={conns}")
    for name in names:
        if not name.startswith("gh-"):
            continue
        base = m(baseline(name))
        proxy = base[P + 2] if base else nan
        line = (f"  edge {name}: service {f1(m(name)[P])} / {baseline(name)} proxy {f1(proxy)} "
                f"= {ratio(m(name)[P], proxy)}")
        if stack and not name.endswith("-new"):
            line += f"; / stack front {f1(stack_front)} = {ratio(m(name)[P], stack_front)}"
        print(line)
    if stack and m("nginx"):
        print(f"  edge stack: front {f1(stack_front)} / nginx proxy {f1(m('nginx')[P + 2])} "
              f"= {ratio(stack_front, m('nginx')[P + 2])}")
    print(f"  {'path':14} {'total':>8} {'x nginx':>8} {'x stack':>8}  by process")
    for name in names:
        v = m(name)
        if math.isnan(v[PATH]):
            continue
        base = m(baseline(name))
        x_stack = "-" if name.endswith("-new") else ratio(v[PATH], stack_path)
        parts = ", ".join(f"{PROCS[i]} {v[P + i]:.1f}" for i in range(len(PROCS)) if not math.isnan(v[P + i]))
        print(f"  {name:14} {v[PATH]:>8.1f} {ratio(v[PATH], base[PATH] if base else nan):>8} {x_stack:>8}  {parts}")
PY

# A run with any non-2xx answer fails the benchmark: a proxy that answers errors fast is not
# fast (column 8 of the results is wrk's "Non-2xx or 3xx responses").
failed=$(awk -F'\t' '$8 > 0 {printf "  %s %s c=%s: %s non-2xx\n", $1, $2, $3, $8}' "$RESULTS")
# The chart (LOAD_CHART) only from a clean run, so that a failed one does not replace it.
CHART="${LOAD_CHART-docs/load.svg}"
if [ -n "$CHART" ] && [ -z "$failed" ]; then
  note="${DURATION} s per run; servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
  note+="; $(date -u +%F); gatehouse ${LOAD_GH:-$(git describe --always --dirty 2>/dev/null || echo '(no git)')}"
  if [ -n "$PEER_STACK" ]; then note+="; $("$RATHOLE" -V 2>/dev/null | awk 'NR == 1')"; fi
  python3 benches/chart.py "$RESULTS" "$CHART" "$note" || echo "load.sh: no chart written"
fi
if [ -n "$failed" ]; then
  echo "load.sh: FAILED: runs with non-2xx answers:"
  echo "$failed"
  exit 1
fi
