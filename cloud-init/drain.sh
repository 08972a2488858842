#!/bin/bash
# Drain watcher (backup-mx-drain.service). Mail for the protected domains that the primary never
# answered (it was down) waits for the primary's drain port to answer SMTP, then is scheduled at
# once instead of waiting for Postfix's backoff. The rules:
# - only mail whose last attempt got no answer, or a 4xx, from the primary is the watcher's:
#   mail the primary refused with 5xx (kept by soft_bounce: a dictionary attack's junk, or a
#   refusal until the primary's exemption is pasted) is left to Postfix's own backoff
#   (maximal_backoff_time), so junk costs one attempt per backoff and never a storm;
# - the watcher probes the drain port only while it holds such mail, every DRAIN_PROBE_SECONDS;
# - it schedules that mail when the primary starts answering, then again while the primary
#   keeps deferring it, at intervals doubling from DRAIN_RETRY_MIN_SECONDS to
#   DRAIN_RETRY_MAX_SECONDS (reset whenever the primary is seen down or the mail is gone).
# An empty queue costs a directory glob per probe and nothing else. `--once` makes a single
# pass (tests, runbook), which schedules the watcher's mail if the primary answers.
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
CONF=${POSTFIX_CONFIG_DIR:-/etc/postfix}
PATH=/usr/sbin:/usr/bin:/sbin:/bin
PROBE_EVERY=${DRAIN_PROBE_SECONDS:-3}
RETRY_MIN=${DRAIN_RETRY_MIN_SECONDS:-60}
RETRY_MAX=${DRAIN_RETRY_MAX_SECONDS:-3600}
RESCAN=${DRAIN_RESCAN_SECONDS:-30}  # read the queue at most this often while it keeps changing
SPOOL=$(postconf -c "$CONF" -h queue_directory)
shopt -s nullglob

# Deferred messages with a recipient in a protected domain, one line each: "<queue id> retry"
# when a protected recipient's last attempt got no answer or a 4xx from the primary, else
# "<queue id> refused" (the primary said 5xx to each of them).
protected_deferred() {
  postqueue -c "$CONF" -j 2>/dev/null | DOMAINS="$DOMAINS" python3 -c '
import json, os, re, sys
domains = {d.lower() for d in os.environ["DOMAINS"].split()}
refused = re.compile(r"\bsaid: 5\d\d\b")
for line in sys.stdin:
    m = json.loads(line)
    ours = [r for r in m["recipients"] if r["address"].rpartition("@")[2].lower().rstrip(".") in domains]
    if m["queue_name"] == "deferred" and ours:
        kept = all(refused.search(r.get("delay_reason", "")) for r in ours)
        print(m["queue_id"], "refused" if kept else "retry")
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

# A message the primary once refused stays refused while it is queued, even when a later
# attempt met an outage: else junk retried during an outage would join the recovery's drain.
declare -A was_refused=()
scan() {
  local classes id class
  local -A still=()
  classes=$(protected_deferred)
  retry="" count=0 refused=0
  while read -r id class; do
    [ -n "$id" ] || continue
    if [ "$class" = refused ] || [ -n "${was_refused[$id]:-}" ]; then
      still[$id]=1 refused=$((refused + 1))
    else
      retry+="$id"$'\n' count=$((count + 1))
    fi
  done <<<"$classes"
  was_refused=()
  for id in "${!still[@]}"; do was_refused[$id]=1; done
  last_listing=$listing scanned=$now
}

last_listing="" retry="" count=0 refused=0 quiet=0 was_down=1 interval=0 due=0 scanned=0
pass() {
  local deferred=("$SPOOL"/deferred/*/*) listing now
  [ ${#deferred[@]} -eq 0 ] && { last_listing=""; retry=""; interval=0; return 0; }
  listing="${deferred[*]}"
  printf -v now '%(%s)T' -1
  # The deferred set changed: which are ours? (At once after a flush or an empty queue; while
  # refused mail comes and goes on its own backoff, at most every RESCAN seconds.)
  if [ "$listing" != "$last_listing" ] && { [ -z "$last_listing" ] || [ $((now - scanned)) -ge "$RESCAN" ]; }; then
    scan
  fi
  [ -z "$retry" ] && { interval=0; return 0; }  # nothing of ours: no probe at all
  local reply id
  reply=$(banner)
  case "$reply" in
    220*) ;;
    *) # one line when the primary goes away, then one every ~10 minutes, not one per probe
       if [ "$quiet" -eq 0 ]; then
         echo "backup-mx-drain: $count deferred; drain $DRAIN_HOST:$DRAIN_PORT not ready (${reply:-no answer})$(tunnel)"
       fi
       quiet=$(( (quiet + 1) % (600 / PROBE_EVERY + 1) ))
       was_down=1 interval=0
       return 0 ;;
  esac
  quiet=0
  if [ "$was_down" -eq 0 ] && [ "$now" -lt "$due" ]; then
    return 0
  fi
  # First sight of the primary answering (read the queue afresh: all that waited for it), or
  # the next step of the doubling schedule.
  if [ "$was_down" -eq 1 ] && [ "$scanned" -ne "$now" ]; then
    scan
    [ -z "$retry" ] && return 0
  fi
  if [ "$interval" -eq 0 ]; then interval=$RETRY_MIN; else interval=$(( interval * 2 )); fi
  [ "$interval" -gt "$RETRY_MAX" ] && interval=$RETRY_MAX
  due=$(( now + interval )) was_down=0
  echo "backup-mx-drain: $count deferred; drain $DRAIN_HOST:$DRAIN_PORT answers, flushing: $DOMAINS" \
       "($refused refused by the primary, left to Postfix's backoff; next retry in ${interval}s if deferred again)"
  if [ "$refused" -eq 0 ] && [ "$count" -eq "${#deferred[@]}" ]; then
    # Everything deferred is ours: one request, whatever the queue size (-f also makes qmgr
    # forget dead destinations).
    postqueue -c "$CONF" -f || echo "backup-mx-drain: postqueue -f failed"
  else
    # Only ours, one request each (postqueue takes one -i; the flush daemon it asks also makes
    # qmgr retry a destination it had marked dead): the refused mail keeps its own backoff.
    for id in $retry; do
      postqueue -c "$CONF" -i "$id" 2>/dev/null || true
    done
  fi
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
