#!/usr/bin/env bash
# Entry point of the local Kafka image: writes server.properties the way apache/kafka does, from
# KAFKA_* variables (KAFKA_ADVERTISED_LISTENERS -> advertised.listeners; `__` stands for `_` and
# `___` for `-`), formats the log directory once, then becomes the broker. Without any KAFKA_*
# setting it is apache/kafka's default single node on localhost:9092 (controller on 9093).
#   run.sh          start the broker
#   run.sh probe    health check: ApiVersions on the first non-controller listener
set -euo pipefail

home=/opt/kafka
props="$home/config/server.properties"
# Not configuration but the JVM's, as in Kafka's own scripts.
not_settings=" KAFKA_HEAP_OPTS KAFKA_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_LOG4J_OPTS KAFKA_GC_LOG_OPTS KAFKA_JMX_OPTS KAFKA_DEBUG "

write_properties() {
  local var name settings=()
  for var in $(compgen -e); do
    [[ "$var" == KAFKA_* && "$not_settings" != *" $var "* ]] || continue
    name="${var#KAFKA_}"
    name="${name,,}"
    name="${name//___/-}"
    name="${name//__/@}"
    name="${name//_/.}"
    settings+=("${name//@/_}=${!var}")
  done
  if ((${#settings[@]} == 0)); then
    # shellcheck disable=SC2054 # the commas are inside the values
    settings=(
      process.roles=broker,controller
      node.id=1
      controller.quorum.voters=1@localhost:9093
      listeners=PLAINTEXT://:9092,CONTROLLER://:9093
      advertised.listeners=PLAINTEXT://localhost:9092
      controller.listener.names=CONTROLLER
      listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
      offsets.topic.replication.factor=1
      transaction.state.log.replication.factor=1
      transaction.state.log.min.isr=1
    )
  fi
  printf '%s\n' "${settings[@]}" | grep -q '^log\.dirs=' || settings+=(log.dirs=/var/lib/kafka/data)
  # The single node holds every replica of the internal topics Kafka 4 adds.
  printf '%s\n' "${settings[@]}" | grep -q '^share\.coordinator\.state\.topic\.replication\.factor=' \
    || settings+=(share.coordinator.state.topic.replication.factor=1 share.coordinator.state.topic.min.isr=1)
  printf '%s\n' "${settings[@]}" >"$props"
}

setting() { sed -n "s/^$1=//p" "$props" | tail -1; }

probe() {
  local listener name address host controllers
  controllers=",$(setting 'controller\.listener\.names'),"
  for listener in $(setting listeners | tr ',' ' '); do
    name="${listener%%://*}"
    [[ "$controllers" == *",$name,"* ]] && continue
    address="${listener#*://}"
    host="${address%:*}"
    [[ -z "$host" || "$host" == 0.0.0.0 ]] && host=127.0.0.1
    exec python3 /usr/local/bin/qbo-probe kafka "$host:${address##*:}"
  done
  exit 1
}

java_opts=(-Djava.awt.headless=true "-Dlog4j2.configurationFile=$home/config/log4j2.properties"
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20)

case "${1:-start}" in
  probe)
    probe
    ;;
  start)
    write_properties
    data="$(setting 'log\.dirs' | cut -d, -f1)"
    mkdir -p "$data"
    if [[ ! -f "$data/meta.properties" ]]; then
      cluster_id="${CLUSTER_ID:-$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')}"
      java "${java_opts[@]}" -cp "$home/libs/*" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$props" >/dev/null
    fi
    # shellcheck disable=SC2086 # the heap options are several words
    exec java ${KAFKA_HEAP_OPTS:-} "${java_opts[@]}" -cp "$home/libs/*" kafka.Kafka "$props"
    ;;
  *)
    exec "$@"
    ;;
esac
