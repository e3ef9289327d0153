#!/usr/bin/env bash
# Postern against Postfix, in one run, on this machine, over loopback.
#
#   bench/compare.sh            # full run (about 8 minutes on 2 cores)
#   bench/compare.sh --quick    # one round, smaller counts (about 4 minutes)
#   bench/compare.sh --only 1k-many,100k-many   # only these load scenarios (any mode)
#   bench/compare.sh --only 100k-many --postern-only --servers postern-queue --rounds 3
#                               # a partial run: only the scenario(s) and servers named,
#                               # with the server's CPU time per message; it prints its
#                               # figures and leaves bench/results.md alone
#   bench/compare.sh --only cluster --rounds 3   # only cluster mode against memory
#   bench/compare.sh --only idle --servers postern-queue   # only memory per idle TLS session
#   PERF_DIR=/tmp/prof bench/compare.sh --only ...   # also a flat `perf` profile of Postern
#                               # during each of its loads, one file per run
#   WARMUP=0 bench/compare.sh ...   # no warm-up: by default every server first sees one
#                               # login per user before each measured load
#   POSTERN_BIN=/path/to/bins bench/compare.sh ...   # prebuilt binaries (no build), to
#                               # alternate a before and an after build in one window
#
# Besides Postfix, every scenario also runs straight into the STARTTLS + AUTH sink
# (the same load generator, no proxy in between): the fair ceiling for passthrough,
# next to the plain smtp-source -> smtp-sink one (no TLS, no AUTH). A last run relays
# through an XOAUTH2 smarthost and counts the token endpoint's requests.
#
# It also runs Postern passthrough with quotas in a private redis-server (cluster mode)
# against the same instance with its quotas in memory (1 KB, many per connection), and
# counts Redis script calls per message.
#
# Installs what it needs (postfix, its SASL tools, openssl), builds Postern in release,
# starts a discarding smarthost stand-in that demands STARTTLS and AUTH
# (`postern-bench sink`), then Postfix configured the way a hosting provider runs an
# authenticated relay (submission with STARTTLS and Cyrus SASL, relayhost with TLS
# and SASL, sender login maps), and Postern in queue and passthrough mode, both relaying
# to that sink. The same load (`postern-bench load`) runs against each, alternating,
# three rounds (medians). It prints a table and writes bench/results.md.
#
# Everything runs on 127.0.0.1 and is stopped at exit. Postfix runs as a private
# instance in a temporary folder; /etc/postfix/main.cf is only created (and removed
# again) when the package left none, and the script refuses to touch an existing one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL_SERVERS="postfix postern-queue postern-pass direct"
QUICK=0; ONLY=""; SERVERS=$ALL_SERVERS; ROUNDS_ARG=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --only) ONLY="$ONLY ${2:?--only SCENARIO[,SCENARIO...]}"; shift ;;
    --postern-only) SERVERS="postern-queue postern-pass" ;;
    --servers) SERVERS=${2:?--servers "LIST"}; shift ;;
    --rounds) ROUNDS_ARG=${2:?--rounds N}; shift ;;
    *) echo "usage: bench/compare.sh [--quick] [--only SCENARIO[,SCENARIO...]]... [--postern-only] [--servers LIST] [--rounds N]" >&2; exit 2 ;;
  esac
  shift
done
ONLY=${ONLY//,/ }
# A partial run measures what it was asked to and nothing else.
PARTIAL=0
[ -n "$ONLY" ] || [ "$SERVERS" != "$ALL_SERVERS" ] || [ -n "$ROUNDS_ARG" ] && PARTIAL=1
WITH_POSTFIX=0
case " $SERVERS " in *" postfix "*) WITH_POSTFIX=1 ;; esac
ROUNDS=3
N_SMALL=${N_SMALL:-10000}   # 1 KB messages, many per connection
N_CONN=${N_CONN:-3000}      # one message per connection
N_BIG=${N_BIG:-1000}        # 100 KB messages
N_LOGIN=5000    # STARTTLS + AUTH sessions
IDLE=10000      # idle TLS sessions held open (the target is stated at 10,000)
if [ "$QUICK" = 1 ]; then
  ROUNDS=1; N_SMALL=6000; N_CONN=1500; N_BIG=500; N_LOGIN=2000; IDLE=2000
fi
[ -n "$ROUNDS_ARG" ] && ROUNDS=$ROUNDS_ARG
CONC=50
SINK_PORT=25250; POSTFIX_PORT=25870; POSTERN_PORT=25871; REDIS_PORT=25379
OAUTH_SINK_PORT=25252; TOKEN_PORT=25443

export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
if [ "$WITH_POSTFIX" = 1 ]; then
  command -v postfix >/dev/null 2>&1 || need+=(postfix)
  command -v saslpasswd2 >/dev/null 2>&1 || need+=(sasl2-bin)
  [ -e /usr/lib/x86_64-linux-gnu/sasl2/libplain.so ] || [ -e /usr/lib/aarch64-linux-gnu/sasl2/libplain.so ] || need+=(libsasl2-modules)
fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${#need[@]}" -gt 0 ]; then
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -n "${POSTERN_BIN:-}" ]; then
  BIN=$POSTERN_BIN
else
  echo "== building Postern (release)"
  cargo build --release --locked --bins 2>&1 | tail -1
  BIN=$ROOT/target/release
fi
WORK=$(mktemp -d /tmp/postern-bench.XXXXXX)
chmod 0755 "$WORK"
PIDS=()
MAINCF_CREATED=0
cleanup() {
  set +e
  [ -n "${POSTFIX_DIR:-}" ] && postfix -c "$POSTFIX_DIR" stop >/dev/null 2>&1
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ "$MAINCF_CREATED" = 1 ] && rm -f /etc/postfix/main.cf
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

echo "== certificates and users"
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile san.ext -out server.pem 2>/dev/null
chmod 0644 server.key   # Postfix reads it as root; Postern below gets its own copy
install -m 0600 server.key postern.key
echo "relay-secret" > relay.pw
chmod 0600 relay.pw
USERS=20
: > users.txt
printf "users:\n" > users.yaml
for i in $(seq 1 $USERS); do
  pw="bench-password-$i"
  echo "bench$i:$pw" >> users.txt
  hash=$(printf '%s\n' "$pw" | "$BIN/postern" hash-password)
  printf "  - name: bench%s\n    password: \"%s\"\n    senders: [\"@bench.example\"]\n" "$i" "$hash" >> users.yaml
done
chmod 0600 users.yaml

echo "== sink on 127.0.0.1:$SINK_PORT (STARTTLS + AUTH, discarding)"
"$BIN/postern-bench" sink --listen 127.0.0.1:$SINK_PORT --tls starttls \
  --cert server.pem --key postern.key --user relay --password-file relay.pw \
  --count-file sink.count > sink.log 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do grep -q "sink listening" sink.log && break; sleep 0.1; done
grep -q "sink listening" sink.log || { echo "the sink did not start:"; cat sink.log; exit 1; }

if [ "$WITH_POSTFIX" = 1 ]; then
echo "== Postfix $(postconf -d -h mail_version 2>/dev/null || echo) on 127.0.0.1:$POSTFIX_PORT"
POSTFIX_DIR=$WORK/postfix
mkdir -p "$POSTFIX_DIR/sasl" "$WORK/postfix-queue" "$WORK/postfix-data"
if [ ! -e /etc/postfix/main.cf ]; then
  printf "# created by postern bench/compare.sh; removed at exit\nalternate_config_directories = %s\nmaillog_file = /dev/null\n" "$POSTFIX_DIR" > /etc/postfix/main.cf
  MAINCF_CREATED=1
elif ! grep -q "alternate_config_directories.*$POSTFIX_DIR" /etc/postfix/main.cf; then
  echo "bench/compare.sh: /etc/postfix/main.cf exists; refusing to change a configured Postfix." >&2
  echo "Run this on a machine where postfix has no configuration of its own." >&2
  exit 1
fi
cp /usr/share/postfix/master.cf.dist "$POSTFIX_DIR/master.cf"
cat >> "$POSTFIX_DIR/master.cf" <<EOF
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_restrictions=reject_sender_login_mismatch
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
EOF
# Postfix's own smtpd on port 25 is not needed.
sed -i 's/^smtp      inet/#smtp      inet/' "$POSTFIX_DIR/master.cf"
echo "@bench.example $(seq -s, -f 'bench%g' 1 $USERS)" > "$POSTFIX_DIR/senders"
cat > "$POSTFIX_DIR/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $WORK/postfix-queue
data_directory = $WORK/postfix-data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file_prefixes = /var, /dev/stdout, $WORK
maillog_file = $WORK/postfix.log
relayhost = [127.0.0.1]:$SINK_PORT
smtp_tls_security_level = encrypt
smtp_tls_CAfile = $WORK/ca.pem
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:relay:relay-secret
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtpd_tls_cert_file = $WORK/server.pem
smtpd_tls_key_file = $WORK/server.key
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $POSTFIX_DIR/sasl
smtpd_sasl_local_domain =
smtpd_sender_login_maps = hash:$POSTFIX_DIR/senders
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
message_size_limit = 26214400
alias_maps =
alias_database =
EOF
cat > "$POSTFIX_DIR/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $POSTFIX_DIR/sasl/sasldb2
mech_list: PLAIN LOGIN
EOF
for i in $(seq 1 $USERS); do
  printf 'bench-password-%s' "$i" | saslpasswd2 -p -c -f "$POSTFIX_DIR/sasl/sasldb2" -u relay.bench.test "bench$i"
done
chown postfix "$POSTFIX_DIR/sasl/sasldb2"
postmap -c "$POSTFIX_DIR" "$POSTFIX_DIR/senders"
# No chroot: the instance lives in a temporary folder.
postconf -c "$POSTFIX_DIR" -F '*/*/chroot = n' 
postfix -c "$POSTFIX_DIR" set-permissions >/dev/null 2>&1 || true
postfix -c "$POSTFIX_DIR" check 2>/dev/null || true
postfix -c "$POSTFIX_DIR" start >/dev/null 2>&1
sleep 2
fi

cat > postern-queue.yaml <<EOF
hostname: relay.bench.test
listeners:
  - address: "127.0.0.1:$POSTERN_PORT"
    tls: starttls
tls:
  certificate: server.pem
  private_key: postern.key
users:
  file: users.yaml
smarthost:
  address: "localhost:$SINK_PORT"
  tls: starttls
  ca_file: ca.pem
  username: relay
  password_file: relay.pw
delivery:
  mode: queue
  spool_directory: spool
  concurrency: 50
limits:
  max_connections: 20000
  max_connections_per_ip: 20000
log:
  level: info
EOF
sed 's/mode: queue/mode: passthrough/' postern-queue.yaml > postern-pass.yaml
# Cluster mode: the same passthrough instance with quotas (high enough never to refuse)
# kept in a private Redis, against it without (the same limits, in memory).
{ cat postern-pass.yaml; printf "rate_limits:\n  messages_per_hour: 100000000\n  recipients_per_day: 100000000\n"; } > postern-limited.yaml
{ cat postern-limited.yaml; printf "cluster:\n  redis: redis://127.0.0.1:$REDIS_PORT/0\n"; } > postern-cluster.yaml

POSTERN_PID=""
start_postern() { # mode
  rm -rf spool
  "$BIN/postern" serve -c "postern-$1.yaml" > "postern-$1.log" 2>&1 &
  POSTERN_PID=$!
  PIDS+=("$POSTERN_PID")
  for _ in $(seq 1 100); do grep -q " ready" "postern-$1.log" && return; sleep 0.1; done
  echo "postern did not start:"; cat "postern-$1.log"; exit 1
}
stop_postern() {
  kill "$POSTERN_PID" 2>/dev/null; wait "$POSTERN_PID" 2>/dev/null || true
}

# Memory (KiB) of a process and its children (Postfix: master and every daemon), as
# PSS: each shared page counted once across the processes that share it, so a
# hundred smtpd processes are not charged a hundred times for the same libraries.
tree_rss() {
  local root=$1 pid total=0 pss
  [ -z "$root" ] && { echo 0; return; }
  for pid in $(ps -e -o pid=,ppid= | awk -v r="$root" '$1==r || $2==r {print $1}'); do
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    total=$((total + ${pss:-0}))
  done
  echo "$total"
}
postfix_master() { cat "$WORK/postfix-queue/pid/master.pid" 2>/dev/null | tr -d ' '; }
# Samples tree_rss of $1 every 0.2 s into $2 until killed; the peak is `sort -n | tail -1`.
sample_rss() { while true; do tree_rss "$1" >> "$2"; sleep 0.2; done; }

COUNT_FILE=sink.count   # the sink whose count ends a run (the XOAUTH2 run has its own)
sink_count() { cat "$COUNT_FILE" 2>/dev/null || echo 0; }
# CPU time (clock ticks, user + system) a process has used: Postern is one process.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Runs one load; prints "rate p99_ms peak_rss_kib cpu_ms_per_message" (rate end to
# end: until the sink has every accepted message; CPU of the server process alone,
# meaningful for Postern and the sink only).
run_load() { # label server_pid port size per_conn total
  local label=$1 pid=$2 port=$3 size=$4 per=$5 total=$6
  local before start json ok t_end rate p99 peak sampler cpu0 cpu who=(--users-file users.txt)
  [ "$port" = "$SINK_PORT" ] && who=(--user relay --password-file relay.pw)
  if [ "$per" != 0 ] && [ "${WARMUP:-1}" = 1 ]; then
    # Warm-up, the same for every server: each user logs in once before the
    # measured load. Postern verifies a password with argon2 once and then
    # remembers the login for 5 minutes; in a 500-message run of 100 KB those
    # first 20 verifications were a quarter of its CPU, a cost of starting, not of
    # relaying (WARMUP=0 measures cold servers).
    "$BIN/postern-bench" load --target 127.0.0.1:$port --tls starttls --ca ca.pem \
      "${who[@]}" --concurrency 4 --messages-per-connection 0 --total "$USERS" \
      --size 1024 --from bench1@bench.example --max-seconds 30 --json > /dev/null 2>&1 || true
  fi
  before=$(sink_count)
  cpu0=$(cpu_ticks "$pid")
  : > "rss-$label"
  sample_rss "$pid" "rss-$label" & sampler=$!
  local perf_pid=""
  if [ -n "${PERF_DIR:-}" ] && [[ $label == postern-* ]]; then
    # A flat CPU profile of the server during the load (PERF_DIR=/some/dir).
    perf record -e cpu-clock ${PERF_ARGS:--F 2000} -p "$pid" -o "$PERF_DIR/$label.data" > /dev/null 2>&1 &
    perf_pid=$!
  fi
  start=$(date +%s.%N)
  json=$("$BIN/postern-bench" load --target 127.0.0.1:$port --tls starttls --ca ca.pem \
    "${who[@]}" --concurrency $CONC --messages-per-connection "$per" \
    --total "$total" --size "$size" --from bench1@bench.example --max-seconds 120 --json)
  ok=$(echo "$json" | sed 's/.*"messages":\([0-9]*\).*/\1/')
  if [ "$per" != 0 ]; then
    for _ in $(seq 1 1200); do
      [ "$(sink_count)" -ge $((before + ok)) ] && break
      sleep 0.05
    done
  fi
  t_end=$(date +%s.%N)
  cpu=$(echo "$cpu0 $(cpu_ticks "$pid") $(getconf CLK_TCK) $ok" | awk '{ if ($4 > 0) printf "%.3f", ($2-$1)*1000/$3/$4; else print 0 }')
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  [ -z "$perf_pid" ] || { kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; }
  rate=$(echo "$ok $start $t_end" | awk '{printf "%.0f", $1/($3-$2)}')
  p99=$(echo "$json" | sed 's/.*"message_p99_ms":\([0-9.]*\).*/\1/')
  [ "$per" = 0 ] && p99=$(echo "$json" | sed 's/.*"setup_p99_ms":\([0-9.]*\).*/\1/')
  peak=$(sort -n "rss-$label" | tail -1)
  echo "$label ok=$ok $json" >> loads.log
  echo "$rate $p99 ${peak:-0} $cpu"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RESULT
record() { RESULT["$1"]="${RESULT[$1]:-} $2"; }

SCENARIOS=(
  "1k-many 1024 100 $N_SMALL"
  "1k-one 1024 1 $N_CONN"
  "100k-many 102400 100 $N_BIG"
  "100k-one 102400 1 $N_BIG"
  "logins 1024 0 $N_LOGIN"
)

cluster_runs() {
  echo "== cluster mode: 1k-many through passthrough with and without Redis"
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" > redis.log 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do redis-cli -p $REDIS_PORT ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  evalsha_calls() { redis-cli -p $REDIS_PORT info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'; }
  for r in $(seq 1 $ROUNDS); do
    for server in limited cluster; do
      start_postern $server
      calls_before=$(evalsha_calls)
      read -r rate p99 peak _ <<< "$(run_load "postern-$server-cluster-$r" "$POSTERN_PID" $POSTERN_PORT 1024 100 "$N_SMALL")"
      printf "   %-14s %-10s %8s/s  p99 %8s ms\n" "postern-$server" "1k-many" "$rate" "$p99"
      record "cl-$server-rate" "$rate"; record "cl-$server-p99" "$p99"
      if [ $server = cluster ]; then
        record cl-calls "$(echo "${calls_before:-0} $(evalsha_calls) $N_SMALL" | awk '{printf "%.2f", ($2-$1)/$3}')"
      fi
      stop_postern
    done
  done
}

selected() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
SINK_PID=${PIDS[0]}

if [ "$PARTIAL" = 0 ]; then
echo "== ceiling: smtp-source -> smtp-sink (plain, no TLS), measured in each round"
smtp-sink -u postfix -c 127.0.0.1:25251 1000 > smtp-sink.log 2>&1 &
PIDS+=($!)
sleep 0.5
ceiling() { # count size extra-smtp-source-flags
  local n=$1 size=$2 s e
  shift 2
  s=$(date +%s.%N)
  smtp-source "$@" -s $CONC -m "$n" -l "$size" -f bench@bench.example -t rcpt@example.org 127.0.0.1:25251 >&2 ||
    { echo "smtp-source failed" >&2; echo 0; return; }
  e=$(date +%s.%N)
  echo "$n $s $e" | awk '{printf "%.0f", $1/($3-$2)}'
}
fi
# The ceiling is measured in every round, beside the servers, so that a busy
# moment of this shared machine weighs on it as on them.
round_ceiling() {
  [ "$PARTIAL" = 0 ] || return 0
  local many one big
  many=$(ceiling "$N_SMALL" 1024 -d); one=$(ceiling "$N_SMALL" 1024); big=$(ceiling "$N_BIG" 102400 -d)
  record ceiling-many "$many"; record ceiling-one "$one"; record ceiling-100k-many "$big"
  printf "   %-14s 1k-many %8s/s  1k-one %8s/s  100k-many %8s/s\n" ceiling "$many" "$one" "$big"
}

for r in $(seq 1 $ROUNDS); do
  echo "== round $r of $ROUNDS"
  round_ceiling
  for sc in "${SCENARIOS[@]}"; do
    read -r name size per total <<< "$sc"
    selected "$name" || continue
    for server in $SERVERS; do
      [ "$name" = logins ] && [ "$server" = postern-pass ] && continue
      case $server in
        direct) pid=$SINK_PID; port=$SINK_PORT ;;
        postfix) pid=$(postfix_master); port=$POSTFIX_PORT ;;
        postern-queue) start_postern queue; pid=$POSTERN_PID; port=$POSTERN_PORT ;;
        postern-pass) start_postern pass; pid=$POSTERN_PID; port=$POSTERN_PORT ;;
      esac
      read -r rate p99 peak cpu <<< "$(run_load "$server-$name-$r" "$pid" "$port" "$size" "$per" "$total")"
      [ "$server" = postfix ] && cpu=-
      printf "   %-14s %-10s %8s/s  p99 %8s ms  peak PSS %8s KiB  CPU %6s ms/msg\n" "$server" "$name" "$rate" "$p99" "$peak" "$cpu"
      record "$server-$name-cpu" "$cpu"
      record "$server-$name-rate" "$rate"
      record "$server-$name-p99" "$p99"
      record "$server-$name-peak" "$peak"
      case $server in postern-*) stop_postern ;; esac
    done
  done
done

idle_cost() { # pid port sessions -> KiB per session
  local pid=$1 port=$2 n=$3 before held
  before=$(tree_rss "$pid")
  "$BIN/postern-bench" idle --target 127.0.0.1:$port --tls starttls --ca ca.pem --sessions "$n" --hold 8 > idle.out &
  local holder=$!
  for _ in $(seq 1 600); do grep -q "^open" idle.out && break; sleep 0.1; done
  sleep 2
  held=$(tree_rss "$pid")
  cat idle.out >&2
  wait $holder || true
  echo "$before $held $n" | awk '{printf "%.1f", ($2-$1)/$3}'
}
m() { echo "${RESULT[$1]:-}" | tr ' ' '\n' | { grep -v '^$' || true; } | median; }
if [ "$PARTIAL" = 1 ]; then
  echo "== medians of $ROUNDS round(s) (partial run; bench/results.md left alone)"
  for sc in "${SCENARIOS[@]}"; do
    read -r name _ <<< "$sc"
    selected "$name" || continue
    for server in $SERVERS; do
      [ -n "${RESULT[$server-$name-rate]:-}" ] || continue
      printf "   %-14s %-10s %8s/s  p99 %8s ms  peak PSS %8s KiB  CPU %6s ms/msg\n" "$server" "$name" \
        "$(m "$server-$name-rate")" "$(m "$server-$name-p99")" "$(m "$server-$name-peak")" "$(m "$server-$name-cpu")"
    done
  done
  if [[ " $ONLY " == *" cluster "* ]]; then
    cluster_runs
    echo "   cluster mode 1k-many: $(m cl-cluster-rate)/s (p99 $(m cl-cluster-p99) ms) against $(m cl-limited-rate)/s in memory (p99 $(m cl-limited-p99) ms); $(m cl-calls) script calls per message"
  fi
  if [[ " $ONLY " == *" idle "* ]]; then
    start_postern queue
    echo "   postern idle TLS sessions: $(idle_cost "$POSTERN_PID" $POSTERN_PORT $IDLE) KiB each ($IDLE sessions)"
    stop_postern
  fi
  exit 0
fi

echo "== latency: one client, 1 KB, 100 per connection (direct to the sink, then through Postern passthrough)"
lat() { # port user-args...
  local port=$1; shift
  "$BIN/postern-bench" load --target 127.0.0.1:$port --tls starttls --ca ca.pem "$@" \
    --concurrency 1 --messages-per-connection 100 --total 3000 --size 1024 \
    --from bench1@bench.example --json | sed 's/.*"message_p50_ms":\([0-9.]*\),"message_p99_ms":\([0-9.]*\).*/\1 \2/'
}
for r in $(seq 1 $ROUNDS); do
  read -r p50 p99 <<< "$(lat $SINK_PORT --user relay --password-file relay.pw)"
  record direct-lat-p50 "$p50"; record direct-lat-p99 "$p99"
  start_postern pass
  read -r p50 p99 <<< "$(lat $POSTERN_PORT --users-file users.txt)"
  record pass-lat-p50 "$p50"; record pass-lat-p99 "$p99"
  stop_postern
done

cluster_runs

echo "== XOAUTH2: passthrough 1k-many to a sink taking only tokens from its own token endpoint"
# The sink serves the token endpoint (client credentials, tokens living an hour) and
# counts its requests: Postern should fetch one token per lifetime, not one per
# message or per smarthost connection.
echo "bench-client-secret" > oauth.secret
chmod 0600 oauth.secret
"$BIN/postern-bench" sink --listen 127.0.0.1:$OAUTH_SINK_PORT --tls starttls \
  --cert server.pem --key postern.key --count-file oauth-sink.count \
  --token-endpoint 127.0.0.1:$TOKEN_PORT --token-user relay@bench.example \
  --token-secret-file oauth.secret --token-lifetime 3600 --token-count-file tokens.count > oauth-sink.log 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do grep -q "sink listening" oauth-sink.log && break; sleep 0.1; done
# The passthrough configuration with another smarthost block.
awk '/^smarthost:/ {skip=1; next} skip && /^ / {next} {skip=0; print}' postern-pass.yaml > postern-oauth.yaml
cat >> postern-oauth.yaml <<EOF
smarthost:
  address: "localhost:$OAUTH_SINK_PORT"
  tls: starttls
  ca_file: ca.pem
  username: relay@bench.example
  oauth2:
    token_url: https://localhost:$TOKEN_PORT/oauth2/v2.0/token
    client_id: bench-client
    client_secret_file: oauth.secret
    scope: https://outlook.office365.com/.default
EOF
COUNT_FILE=oauth-sink.count
start_postern oauth
read -r OAUTH_RATE p99 peak _ <<< "$(run_load postern-oauth-1k-many "$POSTERN_PID" $POSTERN_PORT 1024 100 "$N_SMALL")"
OAUTH_OK=$(sink_count)
stop_postern
COUNT_FILE=sink.count
OAUTH_FETCHES=$(cat tokens.count 2>/dev/null || echo 0)
echo "   postern-oauth  1k-many    ${OAUTH_RATE}/s  p99 ${p99} ms; token fetches: $OAUTH_FETCHES for $OAUTH_OK messages"

echo "== idle TLS sessions"
start_postern queue
record postern-idle-kib "$(idle_cost "$POSTERN_PID" $POSTERN_PORT $IDLE)"
record postern-idle-rss "$(tree_rss "$POSTERN_PID")"
stop_postern
# Postfix serves 100 sessions by default (one smtpd process each): measure 90.
record postfix-idle-kib "$(idle_cost "$(postfix_master)" $POSTFIX_PORT 90)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }

OUT=$ROOT/bench/results.md
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), loopback,"
  echo "Postfix $(postconf -d -h mail_version 2>/dev/null), medians of $ROUNDS round(s), $CONC concurrent clients,"
  echo "STARTTLS + AUTH PLAIN on every connection, relaying to a STARTTLS + AUTH sink. Command: \`bench/compare.sh$([ $QUICK = 1 ] && echo ' --quick')\`."
  echo
  echo "| scenario | Postfix msg/s | Postern queue msg/s | ratio | Postern passthrough msg/s | ratio |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for name in 1k-many 1k-one 100k-many 100k-one; do
    pf=$(m "postfix-$name-rate"); pq=$(m "postern-queue-$name-rate"); pp=$(m "postern-pass-$name-rate")
    echo "| $name | $pf | $pq | $(ratio "$pq" "$pf")× | $pp | $(ratio "$pp" "$pf")× |"
  done
  pf=$(m postfix-logins-rate); pq=$(m postern-queue-logins-rate)
  echo "| logins (STARTTLS+AUTH+QUIT) /s | $pf | $pq | $(ratio "$pq" "$pf")× | | |"
  echo
  cm=$(m ceiling-many); co=$(m ceiling-one); cb=$(m ceiling-100k-many)
  echo "Ceiling, smtp-source → smtp-sink without TLS: $cm msg/s on reused connections, $co msg/s with a connection per message"
  echo "(1 KB), $cb msg/s at 100 KB on reused connections. Postern passthrough 1k-many is $(ratio "$(m postern-pass-1k-many-rate)" "$cm")× that ceiling."
  echo
  echo 'Passthrough against both yardsticks: the plain ceiling above, and the same load (`postern-bench load`,'
  echo "STARTTLS + AUTH) straight into the same STARTTLS + AUTH sink, with no proxy in between."
  echo
  echo "| scenario | plain ceiling msg/s | direct to the TLS+AUTH sink msg/s | Postern passthrough msg/s | ÷ plain | ÷ direct |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for name in 1k-many 1k-one 100k-many 100k-one; do
    case $name in 1k-many) c=$cm ;; 1k-one) c=$co ;; 100k-many) c=$cb ;; *) c="" ;; esac
    d=$(m "direct-$name-rate"); pp=$(m "postern-pass-$name-rate")
    echo "| $name | ${c:--} | $d | $pp | $([ -n "$c" ] && echo "$(ratio "$pp" "$c")×" || echo -) | $(ratio "$pp" "$d")× |"
  done
  echo
  echo "| memory | Postfix | Postern |"
  echo "| --- | ---: | ---: |"
  echo "| peak PSS, 1k-many (KiB) | $(m postfix-1k-many-peak) | $(m postern-queue-1k-many-peak) (queue), $(m postern-pass-1k-many-peak) (passthrough) |"
  echo "| peak PSS, 1k-one (KiB) | $(m postfix-1k-one-peak) | $(m postern-queue-1k-one-peak) |"
  echo "| PSS per idle TLS session (KiB) | $(m postfix-idle-kib) (90 sessions, its default limit is 100) | $(m postern-idle-kib) ($IDLE sessions) |"
  echo
  echo "Latency per message, one client (no queueing), 1 KB: direct to the sink p50 $(m direct-lat-p50) ms / p99 $(m direct-lat-p99) ms;"
  echo "through Postern passthrough p50 $(m pass-lat-p50) ms / p99 $(m pass-lat-p99) ms: Postern adds $(awk -v a="$(m pass-lat-p99)" -v b="$(m direct-lat-p99)" 'BEGIN{printf "%.2f", a-b}') ms at p99."
  echo "At 50 clients (saturated), 1k-many p99: direct $(m direct-1k-many-p99) ms, passthrough $(m postern-pass-1k-many-p99) ms."
  echo
  echo "Cluster mode (quotas in a local Redis), passthrough 1k-many: $(m cl-cluster-rate) msg/s against $(m cl-limited-rate) msg/s"
  echo "in memory ($(ratio "$(m cl-cluster-rate)" "$(m cl-limited-rate)")×), p99 $(m cl-cluster-p99) ms against $(m cl-limited-p99) ms; $(m cl-calls) Redis script calls per message."
  echo
  echo "XOAUTH2 smarthost (client-credentials tokens living an hour), passthrough 1k-many: $OAUTH_RATE msg/s;"
  echo "token fetches: $OAUTH_FETCHES for $OAUTH_OK messages."
} > "$OUT"
echo
cat "$OUT"
