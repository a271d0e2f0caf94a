#!/usr/bin/env bash
# Requests/s of one service instance against three sharing their state in etcd, side by side
# in one run, on loopback:
#   one     three wrk processes -> instance A                 -> connector -> nginx back end
#   three   one wrk process each -> instances A, B and C      -> connector -> nginx back end
# (as DNS round-robin or a balancer spreads clients). Every instance has one worker; the one
# connector keeps tunnels to all three, as it does in production. The load generator is the
# same in both runs (three wrk processes, the connections split between them), so the runs
# differ only in how many instances serve.
#
# Pinning (SCALE_PIN=yes, the default, on 2-core machines): every server process (instances,
# connector, back end, etcd) on CPU 0 and wrk on CPU 1, as benches/load.sh does: the same CPU
# budget for one and for three instances, so the comparison shows what spreading the load over
# instances costs or gains on one core. SCALE_PIN=no leaves everything unpinned.
#
# Each run prints requests/s (the sum over the wrk processes), p50 and p99 latency (of the
# first wrk process), non-2xx answers, and the CPU time per request of all instances together
# and of the connector (utime + stime from /proc/PID/stat). A run with a non-2xx answer makes
# the script fail after the summary.
#
# Usage: benches/scale.sh [seconds per run, default 10]
# Environment: LOAD_REPEAT=3 (rounds, interleaved), LOAD_CONNS=64 (connections in all),
# LOAD_SIZE=1k (1k or 1m), LOAD_GH=path (a gatehouse binary built with the etcd feature,
# instead of building this checkout with it).
# Needs: wrk, nginx, etcd (etcd-server), protoc (protobuf-compiler, for the build), openssl,
# curl; installed with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${LOAD_CONNS:-64}"
SIZE="${LOAD_SIZE:-1k}"

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  echo "scale.sh: installing $*"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need wrk || apt_install wrk
need nginx || [ -x /usr/sbin/nginx ] || apt_install nginx-light
need etcd || apt_install etcd-server
need openssl || apt_install openssl
need curl || apt_install curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ -n "${LOAD_GH:-}" ]; then
  GH=$LOAD_GH
else
  need protoc || apt_install protobuf-compiler
  cargo build --release --quiet --features etcd
  GH=target/release/gatehouse
fi

WORK=$(mktemp -d)
# nginx's worker (not root) reads the files served.
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

CPUS=$(nproc)
if [ "${SCALE_PIN:-yes}" = yes ] && [ "$CPUS" -ge 2 ]; then
  SERVER_CPU=0; CLIENT_CPU=1
else
  SERVER_CPU="0-$((CPUS - 1))"; CLIENT_CPU=$SERVER_CPU
fi
BACKEND=18950; ETCD=18951; ETCD_PEER=18952
HTTPS=(18960 18961 18962); TUNNEL=(18970 18971 18972)

mkdir -p "$WORK/www" "$WORK/tmp"
head -c 1024 /dev/urandom > "$WORK/www/1k.bin"
head -c 1048576 /dev/urandom > "$WORK/www/1m.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pass.test \
  -addext "subjectAltName=DNS:pass.test,DNS:localhost,IP:127.0.0.1" \
  -addext basicConstraints=critical,CA:FALSE -keyout "$WORK/front.key" -out "$WORK/front.pem" 2>/dev/null
cat > "$WORK/nginx.conf" <<EOF
daemon off; worker_processes 1; error_log $WORK/error.log; pid $WORK/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp;
  fastcgi_temp_path $WORK/tmp; uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  keepalive_requests 1000000; sendfile on;
  server { listen 127.0.0.1:$BACKEND; root $WORK/www; }
}
EOF
taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null & PIDS+=($!)
taskset -c "$SERVER_CPU" etcd --name m1 --data-dir "$WORK/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD" --advertise-client-urls "http://127.0.0.1:$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "m1=http://127.0.0.1:$ETCD_PEER" >"$WORK/etcd.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$ETCD") 2>/dev/null && break; sleep 0.1; done

SERVICE_PIDS=()
start_instance() { # index 0..2
  local i=$1
  cat > "$WORK/service$i.toml" <<EOF
state_dir = "state$i"
workers = 1
public_name = "localhost"
hsts = "off"
events_file = "events$i.jsonl"
[state]
backend = "etcd"
endpoints = ["http://127.0.0.1:$ETCD"]
prefix = "/gatehouse-scale-bench"
[limits]
rate = 0
connections_per_ip = 100000
[[certificates]]
hosts = ["127.0.0.1", "pass.test", "localhost"]
cert = "$WORK/front.pem"
key = "$WORK/front.key"
[listen]
https = "127.0.0.1:${HTTPS[$i]}"
tunnel = "127.0.0.1:${TUNNEL[$i]}"
[[apps]]
name = "pass"
external_url = "https://pass.test/"
internal_url = "http://127.0.0.1:$BACKEND/"
EOF
  taskset -c "$SERVER_CPU" "$GH" service run --config "$WORK/service$i.toml" \
    --instance-id "bench-$i" --advertise "localhost:${TUNNEL[$i]}" 2>"$WORK/service$i.log" &
  PIDS+=($!); SERVICE_PIDS+=($!)
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/${TUNNEL[$i]}") 2>/dev/null && break; sleep 0.1; done
}
start_instance 0
"$GH" service token create --config "$WORK/service0.toml" --role admin --ttl 10m > "$WORK/token"
"$GH" connector register --service "https://localhost:${TUNNEL[0]}" --token "@$WORK/token" \
  --group default --state-dir "$WORK/connector" >/dev/null 2>&1
taskset -c "$SERVER_CPU" "$GH" connector run --state-dir "$WORK/connector" 2>"$WORK/connector.log" &
PIDS+=($!); CONNECTOR_PID=$!
start_instance 1
start_instance 2
# Every instance serves through the connector before anything is measured.
for i in 0 1 2; do
  for _ in $(seq 200); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --resolve "pass.test:${HTTPS[$i]}:127.0.0.1" \
      "https://pass.test:${HTTPS[$i]}/1k.bin" || true)
    [ "$code" = 200 ] && break; sleep 0.1
  done
  [ "$code" = 200 ] || { echo "scale.sh: instance $i does not serve (HTTP $code)"; tail -n 3 "$WORK/service$i.log" "$WORK/connector.log" "$WORK/events$i.jsonl"; exit 1; }
done
sleep 1

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
per_request() { awk -v u="$1" -v r="$2" -v hz="$HZ" 'BEGIN {if (r > 0) printf "%.1f", u / hz * 1e6 / r; else printf "-"}'; }
service_ticks() { local sum=0 pid; for pid in "${SERVICE_PIDS[@]}"; do sum=$((sum + $(ticks "$pid"))); done; echo "$sum"; }

FAILED=0
declare -A TOTAL=() RUNS=()
run() { # name, then the https port of each of the three wrk processes
  local name=$1; shift
  local before_s before_c out i=0 pids=()
  before_s=$(service_ticks); before_c=$(ticks "$CONNECTOR_PID")
  local per=$((CONNS / 3))
  for port in "$@"; do
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$per" -d"${DURATION}s" --latency -H "Host: pass.test" \
      "https://127.0.0.1:$port/$SIZE.bin" >"$WORK/wrk-$i" 2>&1 &
    pids+=($!); i=$((i + 1))
  done
  wait "${pids[@]}"
  local rps requests non2xx p50 p99
  rps=$(awk '/^Requests\/sec:/ {s += $2} END {printf "%.0f", s}' "$WORK"/wrk-*)
  requests=$(awk '/requests in/ {s += $1} END {print s}' "$WORK"/wrk-*)
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {s += $5} END {print s + 0}' "$WORK"/wrk-*)
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk-0")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk-0")
  local svc con
  svc=$(per_request $(( $(service_ticks) - before_s )) "$requests")
  con=$(per_request $(( $(ticks "$CONNECTOR_PID") - before_c )) "$requests")
  printf '  %-6s %s c=%s %8s req/s  p50 %-9s p99 %-9s non-2xx %s  cpu us/req: instances %s, connector %s\n' \
    "$name" "$SIZE" "$CONNS" "$rps" "$p50" "$p99" "$non2xx" "$svc" "$con"
  [ "$non2xx" = 0 ] || FAILED=1
  TOTAL[$name]=$(awk -v a="${TOTAL[$name]:-0}" -v b="$rps" 'BEGIN {print a + b}')
  RUNS[$name]=$(( ${RUNS[$name]:-0} + 1 ))
  rm -f "$WORK"/wrk-*
}

echo "== scale: ${DURATION}s per run, $CONNS connections, $SIZE; servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
for round in $(seq "${LOAD_REPEAT:-3}"); do
  echo "round $round"
  run one "${HTTPS[0]}" "${HTTPS[0]}" "${HTTPS[0]}"
  run three "${HTTPS[0]}" "${HTTPS[1]}" "${HTTPS[2]}"
done
one=$(awk -v t="${TOTAL[one]}" -v n="${RUNS[one]}" 'BEGIN {printf "%.0f", t / n}')
three=$(awk -v t="${TOTAL[three]}" -v n="${RUNS[three]}" 'BEGIN {printf "%.0f", t / n}')
echo "== mean requests/s: one instance $one, three instances $three ($(awk -v a="$three" -v b="$one" 'BEGIN {printf "%.2f", a / b}')x)"
exit "$FAILED"
