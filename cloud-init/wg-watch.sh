#!/bin/bash
# WireGuard drain tunnel watch (backup-mx-wg-watch.timer, every minute): when the firewall
# peer has not completed a handshake for WG_STALE seconds, re-resolve its endpoint (a
# dynamic homelab WAN IP changes under a name), and publish the last handshake time for
# node_exporter's textfile collector (alert BackupMxDrainPeerUnreachable).
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
PATH=/usr/sbin:/usr/bin:/sbin:/bin
STALE=${WG_STALE_SECONDS:-135}

latest=$(wg show "$WG_INTERFACE" latest-handshakes 2>/dev/null | awk -v k="$WG_PEER_PUBLIC_KEY" '$1 == k {print $2}')
latest=${latest:-0}
printf -v now '%(%s)T' -1
if [ $((now - latest)) -gt "$STALE" ]; then
  # wg resolves the name now; wg-quick resolved it once, at boot.
  wg set "$WG_INTERFACE" peer "$WG_PEER_PUBLIC_KEY" endpoint "$WG_ENDPOINT" 2>&1 \
    || echo "backup-mx-wg-watch: cannot set endpoint $WG_ENDPOINT on $WG_INTERFACE"
fi
if [ -d "$TEXTFILE_DIR" ]; then
  out="$TEXTFILE_DIR/backup_mx_wireguard.prom"
  {
    echo "# HELP backup_mx_wireguard_latest_handshake_timestamp_seconds Last handshake with the drain peer (0: never)."
    echo "# TYPE backup_mx_wireguard_latest_handshake_timestamp_seconds gauge"
    echo "backup_mx_wireguard_latest_handshake_timestamp_seconds $latest"
  } > "$out.$$" && mv "$out.$$" "$out"
fi
