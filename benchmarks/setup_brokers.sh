#!/usr/bin/env bash
# Installs and configures the two incumbent STOMP brokers used by benchmarks/stomp_brokers.py:
#   - RabbitMQ (Debian rabbitmq-server) with the rabbitmq_stomp plugin, every listener on loopback;
#   - ActiveMQ (Debian activemq), instance "main", with a STOMP connector on 127.0.0.1:61613.
# The configuration is the one in shared/reference/baselines.md, section 1. Run as root on Debian 12.
# Safe to run again: apt only installs what is missing and every edit checks first whether it is done.
# Neither broker is left running: package installation is kept from starting services
# (policy-rc.d), and anything already running is stopped at the end. benchmarks/brokers.py starts
# and stops them on demand.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup_brokers.sh: must run as root (apt-get, /etc)" >&2
  exit 1
fi

log() { printf '== %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
# 1. Packages. Keep maintainer scripts from starting the services while installing.
# ---------------------------------------------------------------------------------------------
POLICY=/usr/sbin/policy-rc.d
made_policy=0
cleanup() {
  if [ "$made_policy" -eq 1 ]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT

need=()
for pkg in rabbitmq-server activemq; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    need+=("$pkg")
  fi
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from queueit benchmarks/setup_brokers.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    made_policy=1
  fi
  log "apt-get update"
  apt-get update
  log "apt-get install -y ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
else
  log "rabbitmq-server and activemq already installed"
fi
dpkg-query -W -f='   ${Package} ${Version}\n' rabbitmq-server activemq

# ---------------------------------------------------------------------------------------------
# 2. RabbitMQ: STOMP plugin, loopback-only listeners (AMQP, STOMP, management, epmd, distribution).
# ---------------------------------------------------------------------------------------------
# Stop a running node first so the edits below take effect the next time it starts.
if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then
  log "stopping running RabbitMQ"
  /etc/init.d/rabbitmq-server stop >/dev/null || true
fi

log "enabling rabbitmq_stomp (offline)"
rabbitmq-plugins enable --offline rabbitmq_stomp >/dev/null

# set_kv FILE KEY VALUE SEP: make sure FILE has exactly one active line "KEY<SEP>VALUE".
set_kv() {
  local file=$1 key=$2 value=$3 sep=$4 line
  line="${key}${sep}${value}"
  touch "$file"
  if grep -qxF "$line" "$file"; then
    return 0
  fi
  # comment out any other active setting of the same key, then append ours
  local tmp
  tmp=$(mktemp)
  awk -v k="$key" -v s="$sep" '
    { t = $0; sub(/^[ \t]+/, "", t) }
    index(t, k s) == 1 || index(t, k " " s) == 1 { print "# (queueit setup_brokers.sh) " $0; next }
    { print }' "$file" >"$tmp"
  printf '%s\n' "$line" >>"$tmp"
  cat "$tmp" >"$file"
  rm -f "$tmp"
}

RMQ_CONF=/etc/rabbitmq/rabbitmq.conf
RMQ_ENV=/etc/rabbitmq/rabbitmq-env.conf
log "writing $RMQ_CONF and $RMQ_ENV"
set_kv "$RMQ_CONF" listeners.tcp.1 127.0.0.1:5672 " = "
set_kv "$RMQ_CONF" stomp.listeners.tcp.1 127.0.0.1:61613 " = "
set_kv "$RMQ_CONF" management.tcp.ip 127.0.0.1 " = "
set_kv "$RMQ_ENV" NODE_IP_ADDRESS 127.0.0.1 "="
set_kv "$RMQ_ENV" "export ERL_EPMD_ADDRESS" 127.0.0.1 "="
# Not in baselines.md: without this the Erlang distribution port (25672) listens on 0.0.0.0.
# It carries no benchmark traffic; it only keeps every RabbitMQ listener on loopback.
set_kv "$RMQ_ENV" SERVER_ADDITIONAL_ERL_ARGS '"-kernel inet_dist_use_interface {127,0,0,1}"' "="
chown root:rabbitmq "$RMQ_CONF" "$RMQ_ENV" 2>/dev/null || true
chmod 644 "$RMQ_CONF" "$RMQ_ENV"

# ---------------------------------------------------------------------------------------------
# 3. ActiveMQ: instance "main", STOMP connector on loopback, 1 GiB heap, enabled.
# ---------------------------------------------------------------------------------------------
if [ -f /var/run/activemq/main.pid ] && kill -0 "$(cat /var/run/activemq/main.pid)" 2>/dev/null; then
  log "stopping running ActiveMQ"
  /etc/init.d/activemq stop >/dev/null || true
fi

AMQ_DIR=/etc/activemq/instances-available/main
AMQ_XML=$AMQ_DIR/activemq.xml
STOMP_LINE='<transportConnector name="stomp" uri="stomp://127.0.0.1:61613?maximumConnections=1000&amp;wireFormat.maxFrameSize=104857600"/>'
if [ ! -f "$AMQ_XML" ]; then
  echo "setup_brokers.sh: $AMQ_XML not found (activemq package layout changed?)" >&2
  exit 1
fi
[ -f "$AMQ_XML.dist" ] || cp -p "$AMQ_XML" "$AMQ_XML.dist"
if grep -q 'name="stomp"' "$AMQ_XML"; then
  log "ActiveMQ STOMP connector already present"
  grep -qF "$STOMP_LINE" "$AMQ_XML" \
    || echo "   warning: a different stomp connector is configured in $AMQ_XML; left as is" >&2
else
  log "adding the STOMP connector to $AMQ_XML"
  tmp=$(mktemp)
  # after the first <transportConnectors>; if there is none, add the element before </broker>
  awk -v line="$STOMP_LINE" '
    !done && /<transportConnectors>/ { print; print "            " line; done = 1; next }
    !done && /<\/broker>/ {
      print "        <transportConnectors>"; print "            " line; print "        </transportConnectors>"
      done = 1
    }
    { print }
    END { if (!done) exit 3 }' "$AMQ_XML" >"$tmp" \
    || { rm -f "$tmp"; echo "setup_brokers.sh: no place for the connector in $AMQ_XML" >&2; exit 1; }
  cat "$tmp" >"$AMQ_XML"
  rm -f "$tmp"
fi
grep -qF "$STOMP_LINE" "$AMQ_XML" || { echo "setup_brokers.sh: connector edit failed" >&2; exit 1; }

# Per-instance options: Debian's README.Debian says to start from a copy of
# /usr/share/activemq/activemq-options. That copy matters beyond the heap: /usr/bin/activemq reads only
# the instance file when it exists, and the template's ACTIVEMQ_BASE=/var/lib/activemq/$INSTANCE is what
# puts KahaDB in a directory the activemq user can write (without it the broker waits forever on
# the KahaDB lock in root-owned /var/lib/activemq/data and never opens its connectors).
AMQ_OPTS=$AMQ_DIR/options
AMQ_TEMPLATE=/usr/share/activemq/activemq-options
AMQ_OPTS_LINE='ACTIVEMQ_OPTS="-Xms1G -Xmx1G -Dorg.apache.activemq.UseDedicatedTaskRunner=true"'
grep -q '^ACTIVEMQ_OPTS=' "$AMQ_TEMPLATE" \
  || { echo "setup_brokers.sh: no ACTIVEMQ_OPTS line in $AMQ_TEMPLATE" >&2; exit 1; }
want=$(awk -v line="$AMQ_OPTS_LINE" '/^ACTIVEMQ_OPTS=/ { print line; next } { print }' "$AMQ_TEMPLATE")
if [ -f "$AMQ_OPTS" ] && [ "$(cat "$AMQ_OPTS")" = "$want" ]; then
  log "ActiveMQ options already set"
else
  if [ -f "$AMQ_OPTS" ] && [ ! -f "$AMQ_OPTS.dist" ] && ! grep -qxF "$AMQ_OPTS_LINE" "$AMQ_OPTS"; then
    cp -p "$AMQ_OPTS" "$AMQ_OPTS.dist"
  fi
  log "writing $AMQ_OPTS (from $AMQ_TEMPLATE, 1 GiB heap)"
  printf '%s\n' "$want" >"$AMQ_OPTS"
fi
ln -sfn ../instances-available/main /etc/activemq/instances-enabled/main

# ---------------------------------------------------------------------------------------------
# 4. Leave nothing running.
# ---------------------------------------------------------------------------------------------
if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then /etc/init.d/rabbitmq-server stop >/dev/null || true; fi
if [ -f /var/run/activemq/main.pid ] && kill -0 "$(cat /var/run/activemq/main.pid)" 2>/dev/null; then
  /etc/init.d/activemq stop >/dev/null || true
fi
log "done; start/stop the brokers with: python3 benchmarks/brokers.py start|stop|pid rabbitmq|activemq"
