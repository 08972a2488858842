#!/bin/bash
# Drain watcher (backup-mx-drain.service): while mail for the protected domains is deferred,
# probe the primary's drain port every few seconds, and the moment it answers SMTP schedule
# every such message at once instead of waiting for Postfix's backoff. An empty queue costs a
# directory glob per probe and nothing else. `--once` makes a single pass (tests, runbook).
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
CONF=${POSTFIX_CONFIG_DIR:-/etc/postfix}
PATH=/usr/sbin:/usr/bin:/sbin:/bin
PROBE_EVERY=${DRAIN_PROBE_SECONDS:-3}
REFLUSH=${DRAIN_REFLUSH_SECONDS:-30}  # while the primary stays up, flush again at most this often
SPOOL=$(postconf -c "$CONF" -h queue_directory)
shopt -s nullglob

# Queue ids of deferred messages with a recipient in a protected domain.
protected_deferred() {
  postqueue -c "$CONF" -j 2>/dev/null | DOMAINS="$DOMAINS" python3 -c '
import json, os, sys
domains = {d.lower() for d in os.environ["DOMAINS"].split()}
for line in sys.stdin:
    m = json.loads(line)
    if m["queue_name"] == "deferred" and any(
            r["address"].rpartition("@")[2].lower().rstrip(".") in domains for r in m["recipients"]):
        print(m["queue_id"])
'
}

banner() {
  timeout 10 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3' "$DRAIN_HOST" "$DRAIN_PORT" 2>/dev/null || true
}

tunnel() {  # drainTransport wireguard: what the relay can see of the tunnel, for the log line
  [ "${DRAIN_TRANSPORT:-nat}" = wireguard ] || return 0
  local flags latest now
  if ! flags=$(ip -o link show dev "$WG_INTERFACE" 2>/dev/null); then
    echo "; tunnel $WG_INTERFACE does not exist (wg-quick@$WG_INTERFACE down?)"; return 0
  fi
  case "$flags" in *"<"*UP*">"*) ;; *) echo "; tunnel $WG_INTERFACE is down"; return 0 ;; esac
  latest=$(wg show "$WG_INTERFACE" latest-handshakes 2>/dev/null | awk -v k="$WG_PEER_PUBLIC_KEY" '$1 == k {print $2}')
  printf -v now '%(%s)T' -1
  if [ -z "$latest" ]; then
    echo "; tunnel $WG_INTERFACE has no peer $WG_PEER_PUBLIC_KEY"
  elif [ "$latest" -eq 0 ]; then
    echo "; no WireGuard handshake with the firewall yet (is this relay still a peer there? endpoint $WG_ENDPOINT)"
  else
    echo "; last WireGuard handshake $((now - latest)) s ago"
  fi
}

last_listing="" ids="" quiet=0 last_flush=0
declare -A flushed=()  # ids flushed since the primary was last seen down
pass() {
  local deferred=("$SPOOL"/deferred/*/*) listing
  [ ${#deferred[@]} -eq 0 ] && { last_listing=""; return 0; }
  listing="${deferred[*]}"
  if [ "$listing" != "$last_listing" ]; then  # the deferred set changed: which are ours?
    ids=$(protected_deferred)
    last_listing=$listing
  fi
  [ -z "$ids" ] && return 0
  local count reply now id fresh=0
  count=$(printf '%s\n' "$ids" | grep -c .)
  reply=$(banner)
  case "$reply" in
    220*) ;;
    *) # one line when the primary goes away, then one every ~10 minutes, not one per probe
       if [ "$quiet" -eq 0 ]; then
         echo "backup-mx-drain: $count deferred; drain $DRAIN_HOST:$DRAIN_PORT not ready (${reply:-no answer})$(tunnel)"
       fi
       quiet=$(( (quiet + 1) % (600 / PROBE_EVERY + 1) ))
       flushed=()
       return 0 ;;
  esac
  quiet=0
  # Flush at once any message not flushed since the primary was last seen down; the same
  # messages again (the primary answers but defers them) at most every REFLUSH seconds.
  for id in $ids; do [ -n "${flushed[$id]:-}" ] || fresh=1; done
  printf -v now '%(%s)T' -1
  if [ "$fresh" -eq 0 ] && [ $((now - last_flush)) -lt "$REFLUSH" ]; then
    return 0
  fi
  last_flush=$now
  flushed=()
  for id in $ids; do flushed[$id]=1; done
  echo "backup-mx-drain: $count deferred; drain $DRAIN_HOST:$DRAIN_PORT answers, flushing: $DOMAINS"
  # One request, whatever the queue size: -f makes qmgr forget dead destinations and retry
  # every deferred message now. (A loop of `postqueue -i` per id blinded the watcher for
  # tens of seconds with 2,000 messages; `-s` misses soft-bounced 5xx mail, which the
  # fast-flush log does not record.) The only other deferred mail here is the relay's own
  # notices and returns, for which an early retry costs nothing.
  postqueue -c "$CONF" -f || echo "backup-mx-drain: postqueue -f failed"
  last_listing=""
}

if [ "${1:-}" = "--once" ]; then
  pass
  exit 0
fi
trap 'exit 0' TERM INT
while :; do
  pass
  sleep "$PROBE_EVERY"
done
