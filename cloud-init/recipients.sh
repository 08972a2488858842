#!/bin/bash
# Valid-recipient list sync (recipients list; backup-mx-recipients.timer, every 10 minutes).
# Fetches RECIPIENT_LIST_URL: one address per line (user@domain, or @domain for a domain whose
# every address is valid), blank lines and # comments ignored. The list replaces
# relay_recipient_maps only when every line is an address in a protected domain and there is
# at least one; otherwise the last good copy stays in place and the failure is logged. The
# first boot's copy is the catch-all (@domain OK), so the relay takes every address until the
# first sync. postmaster@ each protected domain is always valid (RFC 5321 4.5.1).
# The replacement is atomic (a rename in /etc/postfix), then Postfix reloads so every smtpd
# reads it. The last successful sync time goes to node_exporter's textfile collector (alert
# BackupMxRecipientListStale) and a sync older than RECIPIENT_LIST_STALE_S is logged as stale.
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
CONF=${POSTFIX_CONFIG_DIR:-/etc/postfix}
PATH=/usr/sbin:/usr/bin:/sbin:/bin
MAP="$CONF/relay_recipients"
STAMP="$STATE_DIR/recipients.synced"
MAX_BYTES=10485760

install -d -m 0755 "$STATE_DIR"
fetched=$(mktemp "$CONF/.recipients.fetch.XXXXXX") || exit 1
built=$(mktemp "$CONF/.recipients.new.XXXXXX") || { rm -f "$fetched"; exit 1; }
trap 'rm -f "$fetched" "$built"' EXIT

metrics() {  # last successful sync (0: never) and the size of the map in force
  [ -d "$TEXTFILE_DIR" ] || return 0
  local out="$TEXTFILE_DIR/backup_mx_recipients.prom" last=0
  [ -e "$STAMP" ] && last=$(stat -c %Y "$STAMP")
  {
    echo "# HELP backup_mx_recipients_last_sync_timestamp_seconds Last successful recipient list sync (0: never)."
    echo "# TYPE backup_mx_recipients_last_sync_timestamp_seconds gauge"
    echo "backup_mx_recipients_last_sync_timestamp_seconds $last"
    echo "# HELP backup_mx_recipients_entries Entries in the recipient map in force."
    echo "# TYPE backup_mx_recipients_entries gauge"
    echo "backup_mx_recipients_entries $(grep -c . "$MAP" 2>/dev/null || echo 0)"
  } > "$out.$$" && mv "$out.$$" "$out"
}

keep() {  # the sync failed: the last good copy stays
  echo "backup-mx-recipients: $1; keeping the last good list ($(grep -c . "$MAP" 2>/dev/null || echo 0) entries)"
  if [ -e "$STAMP" ]; then
    printf -v now '%(%s)T' -1
    age=$((now - $(stat -c %Y "$STAMP")))
    [ "$age" -gt "$RECIPIENT_LIST_STALE_S" ] && echo "backup-mx-recipients: STALE: last good sync ${age}s ago"
  fi
  metrics
  exit 1
}

curl -fsS --max-time 60 --max-filesize "$MAX_BYTES" -o "$fetched" "$RECIPIENT_LIST_URL" 2>&1 \
  || keep "cannot fetch $RECIPIENT_LIST_URL"
# Every line must be an address in a protected domain; any other line refuses the whole list.
DOMAINS="$DOMAINS" python3 - "$fetched" "$built" <<'PY' || keep "the list at $RECIPIENT_LIST_URL is refused"
import os, re, sys
domains = {d.lower() for d in os.environ["DOMAINS"].split()}
keys = {f"postmaster@{d}" for d in domains}
count = 0
with open(sys.argv[1], encoding="utf-8", errors="strict") as f:
    for n, line in enumerate(f, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        local, at, domain = text.lower().rpartition("@")
        if not at or domain not in domains or not re.fullmatch(r"[^\s@\"\\,;:<>()\[\]]*", local):
            sys.exit(f"line {n}: {text[:80]!r} is not an address in {' '.join(sorted(domains))}")
        keys.add(text.lower())
        count += 1
if not count:
    sys.exit("no address in the list")
with open(sys.argv[2], "w") as out:
    out.writelines(f"{k} OK\n" for k in sorted(keys))
PY
chmod 0644 "$built"
if cmp -s "$built" "$MAP"; then
  touch "$STAMP"
  metrics
  exit 0
fi
mv -f "$built" "$MAP" || keep "cannot replace $MAP"
postfix -c "$CONF" reload >/dev/null 2>&1 || echo "backup-mx-recipients: postfix reload failed"
touch "$STAMP"
echo "backup-mx-recipients: $(grep -c . "$MAP") entries in force"
metrics
