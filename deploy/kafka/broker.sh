#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft, combined broker+controller) for
# development and tests of streamer.  No Docker, no Kafka tarball: the broker's
# jars come from Maven Central through ./pom.xml and run with plain `java`.
#
# Usage: broker.sh start|stop|status|fetch [--port N]
#
#   fetch   download the Kafka jars into $STREAMER_KAFKA_LIB (no-op when done)
#   start   fetch if needed, format a fresh data dir, start the broker in the
#           background, and return only once it answers requests
#   stop    stop the broker this script started on the port, delete its
#           temporary data dir; harmless when nothing runs
#   status  print "running ..." (exit 0) or "stopped" (exit 3)
#
# Environment (all optional):
#   STREAMER_KAFKA_PORT             client (PLAINTEXT) port, default 9092;
#                                   --port N takes precedence
#   STREAMER_KAFKA_CONTROLLER_PORT  KRaft controller port, default port+1
#   STREAMER_KAFKA_PARTITIONS       num.partitions for auto-created topics (3)
#   STREAMER_KAFKA_DATA_DIR         data dir to use instead of a `mktemp -d`;
#                                   one given here is kept on `stop`
#   STREAMER_KAFKA_LIB              jar directory, default <script dir>/lib
#   STREAMER_KAFKA_RUN_DIR          pid files etc., default <script dir>/run
#   STREAMER_KAFKA_START_TIMEOUT    seconds to wait for readiness (90)
#   STREAMER_KAFKA_HEAP_OPTS        broker heap flags ("-Xmx512m -Xms256m")
#   JAVA_HOME                       Java 17+ to use (else `java` on PATH)
#
# Files: <run dir>/broker-<port>.pid holds the java pid, .datadir next to it
# the data dir (server.properties, broker.log, kraft-logs/), .owned marks a
# data dir that `stop` deletes.  The broker log is <data dir>/broker.log.
#
# Needs: bash, Java 17+, coreutils, flock (util-linux); mvn only for the
# one-time fetch (Maven Central, ~45 MB of jars).
#
# Exit codes: 0 ok; 1 error (one line on stderr saying why; for a failed start
# also the tail of the broker log); 2 usage; 3 `status` of a stopped broker.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
POM="$SCRIPT_DIR/pom.xml"
LOG4J_CONF="$SCRIPT_DIR/log4j2.properties"
LIB_DIR="${STREAMER_KAFKA_LIB:-$SCRIPT_DIR/lib}"
RUN_DIR="${STREAMER_KAFKA_RUN_DIR:-$SCRIPT_DIR/run}"
START_TIMEOUT="${STREAMER_KAFKA_START_TIMEOUT:-90}"
PARTITIONS="${STREAMER_KAFKA_PARTITIONS:-3}"
HEAP_OPTS="${STREAMER_KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
# Short-lived tool JVMs (format, probe): C1 only and a tiny heap start faster.
TOOL_OPTS=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
           "-Dlog4j2.configurationFile=$LOG4J_CONF" -Dstreamer.kafka.log.level=WARN)

die() { echo "broker.sh: error: $*" >&2; exit 1; }
usage() { echo "usage: broker.sh start|stop|status|fetch [--port N]" >&2; exit 2; }

# ---------------------------------------------------------------- arguments
[[ $# -ge 1 ]] || usage
CMD="$1"; shift
PORT="${STREAMER_KAFKA_PORT:-9092}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) [[ $# -ge 2 ]] || usage; PORT="$2"; shift 2 ;;
    --port=*) PORT="${1#--port=}"; shift ;;
    -h|--help) usage ;;
    *) echo "broker.sh: unknown argument: $1" >&2; usage ;;
  esac
done
valid_port() { [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= 65535 )); }
valid_port "$PORT" || die "invalid port '$PORT'"
CPORT="${STREAMER_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
valid_port "$CPORT" || die "invalid controller port '$CPORT'"
[[ "$CPORT" != "$PORT" ]] || die "controller port must differ from port $PORT"
[[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || die "invalid STREAMER_KAFKA_PARTITIONS '$PARTITIONS'"
[[ "$START_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "invalid STREAMER_KAFKA_START_TIMEOUT '$START_TIMEOUT'"

# Per-port bookkeeping, so brokers on different ports coexist:
#   broker-<port>.pid      pid of the java process
#   broker-<port>.datadir  its data dir (server.properties, broker.log, logs)
#   broker-<port>.owned    present when we made the data dir and may delete it
PID_FILE="$RUN_DIR/broker-$PORT.pid"
DATADIR_FILE="$RUN_DIR/broker-$PORT.datadir"
OWNED_FILE="$RUN_DIR/broker-$PORT.owned"
LOCK_FILE="$RUN_DIR/broker-$PORT.lock"

# ---------------------------------------------------------------- helpers
find_java() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    JAVA="$(command -v java)"
  else
    die "java not found (Kafka 4.x needs Java 17+; install it or set JAVA_HOME)"
  fi
  # `java -version` prints e.g. 'openjdk version "17.0.15"' (or "1.8.0_x").
  local v
  v="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\).*/\1/p' | head -n1)"
  [[ -n "$v" && "$v" != 1 && "$v" -ge 17 ]] ||
    die "$JAVA is Java ${v:-unknown}; Kafka 4.x needs Java 17+ (set JAVA_HOME)"
}

# A stamp records which pom.xml populated the lib dir, so an edited pom (e.g.
# a new Kafka version) triggers a fresh fetch instead of mixing jar versions.
pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }
lib_ready() { [[ -f "$LIB_DIR/.fetched" && "$(cat "$LIB_DIR/.fetched")" == "$(pom_hash)" ]]; }

fetch() {
  lib_ready && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found: needed once to download the Kafka jars into $LIB_DIR"
  # Serialise concurrent fetches (two `start`s on different ports at once).
  mkdir -p "$(dirname -- "$LIB_DIR")"
  exec 8>"$LIB_DIR.lock"
  flock 8
  if ! lib_ready; then
    echo "broker.sh: fetching Kafka jars into $LIB_DIR (one-time) ..." >&2
    # Download into a scratch dir and swap it in whole, so an interrupted or
    # failed fetch never leaves a half-filled lib dir that looks usable.
    local tmp="$LIB_DIR.tmp.$$" out
    rm -rf -- "$tmp"
    out="$(mktemp)"
    if ! mvn -B -q -f "$POM" package "-Dkafka.lib.dir=$tmp" >"$out" 2>&1; then
      tail -n 30 "$out" >&2; rm -f -- "$out"; rm -rf -- "$tmp"
      die "mvn could not download the Kafka jars (see above)"
    fi
    rm -f -- "$out"
    pom_hash >"$tmp/.fetched"
    rm -rf -- "$LIB_DIR"
    mv -- "$tmp" "$LIB_DIR"
  fi
  flock -u 8
  exec 8>&-
}

# Is the pid a java process running kafka.Kafka on *our* server.properties?
# Guards against acting on a recycled pid after a reboot or a crash.
pid_is_ours() {
  local pid="$1" datadir="$2" cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *kafka.Kafka*"$datadir/server.properties"* ]]
}

# Sets PID and DATA_DIR from the bookkeeping files; returns 0 if that broker
# is alive.
read_state() {
  PID="$(cat "$PID_FILE" 2>/dev/null || true)"
  DATA_DIR="$(cat "$DATADIR_FILE" 2>/dev/null || true)"
  [[ -n "$PID" && -n "$DATA_DIR" ]] && pid_is_ours "$PID" "$DATA_DIR"
}

# Forget a broker: bookkeeping files, and the data dir if we created it.
cleanup_state() {
  local datadir
  datadir="$(cat "$DATADIR_FILE" 2>/dev/null || true)"
  if [[ -f "$OWNED_FILE" && -n "$datadir" && -d "$datadir" ]]; then
    rm -rf -- "$datadir"
  fi
  rm -f -- "$PID_FILE" "$DATADIR_FILE" "$OWNED_FILE"
}

port_in_use() {
  # A successful TCP connect means something is listening there already.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

with_lock() {
  # One start/stop per port at a time (e.g. parallel test sessions).
  mkdir -p "$RUN_DIR"
  exec 9>"$LOCK_FILE"
  flock 9
}

# Kill a pid: TERM first (Kafka does a clean controlled shutdown), then KILL
# after 30 s.
kill_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "broker.sh: pid $pid ignored SIGTERM for 30 s; sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

write_properties() {
  # Settings for a throw-away single-node test cluster: every replication
  # factor / min ISR is 1 (there is one node), topics appear on first use,
  # and consumer groups start without the default 3 s rebalance delay.
  cat >"$DATA_DIR/server.properties" <<EOF
# Generated by deploy/kafka/broker.sh for port $PORT; do not edit.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA_DIR/kraft-logs

auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=$PARTITIONS
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# 50 by default: creating them delays the first consumer group for nothing.
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

# Ready = a real client gets an answer from the broker.  Polling the port
# with bash first is nearly free, and only then is a (1-2 s) JVM started.
# BrokerApiVersionsCommand bootstraps through a Metadata request, so success
# means the broker has joined its quorum and is serving clients.
probe() {
  port_in_use "$PORT" || return 1
  timeout 30 "$JAVA" "${TOOL_OPTS[@]}" -cp "$LIB_DIR/*" \
    org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "127.0.0.1:$PORT" >/dev/null 2>&1
}

# ---------------------------------------------------------------- commands
cmd_fetch() {
  if lib_ready; then echo "Kafka jars already in $LIB_DIR"; return 0; fi
  fetch
  echo "Kafka jars ready in $LIB_DIR"
}

cmd_status() {
  if read_state; then
    # The controller port actually in use, not what this call's env implies.
    local cport
    cport="$(sed -n 's/^controller\.quorum\.bootstrap\.servers=.*://p' "$DATA_DIR/server.properties" 2>/dev/null || true)"
    echo "running (pid $PID, port $PORT, controller port ${cport:-?}, data $DATA_DIR)"
    return 0
  fi
  echo "stopped"
  return 3
}

cmd_stop() {
  with_lock
  if read_state; then
    kill_pid "$PID"
    cleanup_state
    echo "stopped broker on port $PORT (pid $PID)"
  else
    # A stale pid file (crash, reboot) still owns a temp dir worth removing.
    cleanup_state
    echo "not running (port $PORT)"
  fi
}

cmd_start() {
  with_lock
  if read_state; then
    echo "already running (pid $PID, port $PORT, data $DATA_DIR)"
    return 0
  fi
  cleanup_state  # leftovers of a broker that died on its own

  find_java
  port_in_use "$PORT" && die "port $PORT is already in use by another process"
  port_in_use "$CPORT" && die "controller port $CPORT is already in use by another process"
  [[ -f "$LOG4J_CONF" ]] || die "missing $LOG4J_CONF"
  fetch

  local t0=$SECONDS
  if [[ -n "${STREAMER_KAFKA_DATA_DIR:-}" ]]; then
    DATA_DIR="$STREAMER_KAFKA_DATA_DIR"
    mkdir -p "$DATA_DIR"
    DATA_DIR="$(cd -- "$DATA_DIR" && pwd -P)"
  else
    DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/streamer-kafka-$PORT.XXXXXX")"
    : >"$OWNED_FILE"
  fi
  echo "$DATA_DIR" >"$DATADIR_FILE"
  local log="$DATA_DIR/broker.log"
  write_properties

  # `kafka-storage.sh format --standalone`: this node alone is the KRaft
  # quorum.  A Kafka cluster id is 16 random bytes in URL-safe base64 without
  # padding; making it here saves a JVM start.  A STREAMER_KAFKA_DATA_DIR that
  # was formatted before is reused as is (formatting it again with a new
  # cluster id would fail, even with --ignore-formatted).  An id that starts
  # with "-" would be read as an option by the tool (1 start in 32 failed):
  # draw again, as Kafka's own generator does.
  if [[ ! -f "$DATA_DIR/kraft-logs/meta.properties" ]]; then
    local cluster_id="-"
    while [[ "$cluster_id" == -* ]]; do
      cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    if ! "$JAVA" "${TOOL_OPTS[@]}" -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
        --standalone -t "$cluster_id" -c "$DATA_DIR/server.properties" >>"$log" 2>&1; then
      echo "---- last lines of $log ----" >&2; tail -n 30 "$log" >&2
      cleanup_state
      die "formatting the KRaft storage in $DATA_DIR failed (see above)"
    fi
  fi

  # stdin/stdout/stderr all detached from the caller, so a caller that
  # captures our output (subprocess.run, $(...)) does not wait for the broker;
  # fd 9 (the per-port flock) is closed so the broker does not hold the lock
  # for its whole life and block a later `stop`.
  # shellcheck disable=SC2086  # HEAP_OPTS is a list of flags on purpose
  nohup "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$LOG4J_CONF" "-Dkafka.logs.dir=$DATA_DIR" \
    -cp "$LIB_DIR/*" kafka.Kafka "$DATA_DIR/server.properties" \
    </dev/null >>"$log" 2>&1 9>&- &
  PID=$!
  echo "$PID" >"$PID_FILE"

  local deadline=$((SECONDS + START_TIMEOUT))
  until probe; do
    if ! kill -0 "$PID" 2>/dev/null; then
      echo "---- last lines of $log ----" >&2; tail -n 40 "$log" >&2
      cleanup_state
      die "broker on port $PORT exited during start-up (see log above)"
    fi
    if ((SECONDS >= deadline)); then
      echo "---- last lines of $log ----" >&2; tail -n 40 "$log" >&2
      kill_pid "$PID"
      cleanup_state
      die "broker on port $PORT not ready after ${START_TIMEOUT}s; stopped it"
    fi
    sleep 0.5
  done
  echo "started Kafka broker on 127.0.0.1:$PORT (pid $PID, controller port $CPORT, ready in $((SECONDS - t0))s, log $log)"
}

case "$CMD" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  fetch) cmd_fetch ;;
  *) usage ;;
esac
