#!/usr/bin/env bash
# The delivery log's cost: the same load against Postern with `delivery_log` on, then
# off (then on and off again with ROUNDS=2), 1 KB messages, many per connection.
#
#   bench/delivery-log.sh                 # queue mode (two log entries per message)
#   MODE=passthrough bench/delivery-log.sh
#
# Builds Postern in release, starts a discarding stand-in smarthost (`postern-bench
# sink`, STARTTLS and AUTH) and Postern relaying to it, all on 127.0.0.1 free ports,
# and prints the end-to-end rate (until the sink has every accepted message) of each run
# and the CPU time Postern used for it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${MODE:-queue}
N=${N:-6000}
CONC=${CONC:-50}
ROUNDS=${ROUNDS:-1}
cargo build --release --locked --bins 2>&1 | tail -1
BIN=$ROOT/target/release
WORK=$(mktemp -d /tmp/postern-logbench.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SINK_PORT=$(free_port)
POSTERN_PORT=$(free_port)

cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile san.ext -out server.pem 2>/dev/null
chmod 0600 server.key
echo "relay-secret" > relay.pw
chmod 0600 relay.pw
: > users.txt
printf "users:\n" > users.yaml
for i in 1 2 3 4 5; do
  pw="bench-password-$i"
  echo "bench$i:$pw" >> users.txt
  hash=$(printf '%s\n' "$pw" | "$BIN/postern" hash-password)
  printf "  - name: bench%s\n    password: \"%s\"\n    senders: [\"@bench.example\"]\n" "$i" "$hash" >> users.yaml
done
chmod 0600 users.yaml

"$BIN/postern-bench" sink --listen 127.0.0.1:$SINK_PORT --tls starttls \
  --cert server.pem --key server.key --user relay --password-file relay.pw \
  --count-file sink.count > sink.log 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do grep -q "sink listening" sink.log && break; sleep 0.1; done

config() { # enabled
  cat <<YAML
hostname: relay.bench.test
listeners:
  - address: "127.0.0.1:$POSTERN_PORT"
    tls: starttls
tls:
  certificate: server.pem
  private_key: server.key
users:
  file: users.yaml
smarthost:
  address: "localhost:$SINK_PORT"
  tls: starttls
  ca_file: ca.pem
  username: relay
  password_file: relay.pw
delivery:
  mode: $MODE
  spool_directory: spool
  concurrency: 50
delivery_log:
  enabled: $1
limits:
  max_connections: 20000
  max_connections_per_ip: 20000
log:
  level: warn
YAML
}

sink_count() { cat sink.count 2>/dev/null || echo 0; }
run() { # on|off
  local enabled=true
  [ "$1" = off ] && enabled=false
  config $enabled > postern.yaml
  rm -rf spool
  "$BIN/postern" serve -c postern.yaml > postern.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$POSTERN_PORT) 2>/dev/null && break; sleep 0.1; done
  local before start json ok end
  before=$(sink_count)
  start=$(date +%s.%N)
  json=$("$BIN/postern-bench" load --target 127.0.0.1:$POSTERN_PORT --tls starttls --ca ca.pem \
    --users-file users.txt --concurrency $CONC --messages-per-connection 100 \
    --total "$N" --size 1024 --from bench1@bench.example --max-seconds 120 --json)
  ok=$(echo "$json" | sed 's/.*"messages":\([0-9]*\).*/\1/')
  for _ in $(seq 1 1200); do
    [ "$(sink_count)" -ge $((before + ok)) ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  local entries=0
  [ -d spool/delivery-log ] && entries=$(cat spool/delivery-log/*.jsonl 2>/dev/null | wc -l)
  # Postern's own CPU time (user + system): less disturbed by other load than the rate.
  local cpu
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat")
  kill $pid; wait $pid 2>/dev/null || true
  echo "$MODE log=$1 messages=$ok rate=$(echo "$ok $start $end" | awk '{printf "%.0f", $1/($3-$2)}')/s postern_cpu_s=$cpu log_entries=$entries client=$json"
}
for _ in $(seq 1 "$ROUNDS"); do
  run on
  run off
done
