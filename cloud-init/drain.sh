#!/bin/bash
# Drain watcher: when the primary's drain port answers SMTP, schedule every deferred message
# for the protected domains at once instead of waiting for Postfix's backoff.
# Run by backup-mx-drain.timer (every 30 s).
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
CONF=${POSTFIX_CONFIG_DIR:-/etc/postfix}
PATH=/usr/sbin:/usr/bin:/sbin:/bin

# Queue ids of deferred messages with a recipient in a protected domain.
ids=$(postqueue -c "$CONF" -j 2>/dev/null | DOMAINS="$DOMAINS" python3 -c '
import json, os, sys
domains = {d.lower() for d in os.environ["DOMAINS"].split()}
for line in sys.stdin:
    m = json.loads(line)
    if m["queue_name"] == "deferred" and any(
            r["address"].rpartition("@")[2].lower() in domains for r in m["recipients"]):
        print(m["queue_id"])
')
count=$(printf '%s' "$ids" | grep -c . || true)
if [ "$count" -eq 0 ]; then
  exit 0
fi

banner=$(timeout 10 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3' "$DRAIN_HOST" "$DRAIN_PORT" 2>/dev/null || true)
case "$banner" in
  220*) ;;
  *) echo "backup-mx-drain: $count deferred; drain $DRAIN_HOST:$DRAIN_PORT not ready (${banner:-no answer})"; exit 0 ;;
esac

echo "backup-mx-drain: $count deferred; drain $DRAIN_HOST:$DRAIN_PORT answers, flushing: $DOMAINS"
# -s also clears qmgr's dead-destination memory; -i catches mail the fast-flush log does not
# list (a soft-bounced 5xx from the primary is not recorded there).
for domain in $DOMAINS; do
  postqueue -c "$CONF" -s "$domain" || echo "backup-mx-drain: postqueue -s $domain failed"
done
for id in $ids; do
  postqueue -c "$CONF" -i "$id" 2>/dev/null || true
done
