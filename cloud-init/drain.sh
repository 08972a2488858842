#!/bin/bash
# Drain watcher: when the primary's drain port answers SMTP, flush the protected domains
# at once instead of waiting for Postfix's backoff. Run by backup-mx-drain.timer.
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
CONF=${POSTFIX_CONFIG_DIR:-/etc/postfix}
PATH=/usr/sbin:/usr/bin:/sbin:/bin

queued=$(postqueue -c "$CONF" -j 2>/dev/null | grep -c '"queue_name": *"deferred"' || true)
if [ "${queued:-0}" -eq 0 ]; then
  exit 0
fi

banner=$(timeout 10 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3' "$DRAIN_HOST" "$DRAIN_PORT" 2>/dev/null || true)
case "$banner" in
  220*) ;;
  *) echo "backup-mx-drain: $queued deferred; drain $DRAIN_HOST:$DRAIN_PORT not ready (${banner:-no answer})"; exit 0 ;;
esac

echo "backup-mx-drain: $queued deferred; drain $DRAIN_HOST:$DRAIN_PORT answers, flushing: $DOMAINS"
for domain in $DOMAINS; do
  postqueue -c "$CONF" -s "$domain" || echo "backup-mx-drain: postqueue -s $domain failed"
done
