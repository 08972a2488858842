#!/bin/bash
# Punch the relay's ports through the OCI Ubuntu image's OS firewall, which ends INPUT
# with a REJECT regardless of the VCN security list. Idempotent; rules go before the REJECT.
set -euo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
RULES_V4=${RULES_V4:-/etc/iptables/rules.v4}

rules=(
  "-p tcp -m tcp --dport $SMTP_PORT -j ACCEPT"
  "-p tcp -m tcp --dport $HTTP_PORT -j ACCEPT"
  "-s $HOMELAB_CIDR -p tcp -m tcp --dport $NODE_EXPORTER_PORT -j ACCEPT"
  "-s $HOMELAB_CIDR -p tcp -m tcp --dport $POSTFIX_EXPORTER_PORT -j ACCEPT"
)
if [ "${BREAK_GLASS_SSH:-false}" = true ]; then
  # Break-glass SSH from the homelab only; it outlives the move of SSH to the tailnet.
  rules+=("-s $HOMELAB_CIDR -p tcp -m tcp --dport $SSH_PORT -j ACCEPT")
fi
if [ "${1:-}" = "--tailnet-ssh" ]; then
  # Only once tailscale0 exists: SSH moves from the public interface to the tailnet.
  rules=("-i tailscale0 -p tcp -m tcp --dport $SSH_PORT -j ACCEPT")
fi

for rule in "${rules[@]}"; do
  # shellcheck disable=SC2086
  if iptables -C INPUT $rule 2>/dev/null; then continue; fi
  reject=$(iptables -S INPUT | grep -v '^-P' | grep -n -- '-j REJECT' | head -n1 | cut -d: -f1 || true)
  if [ -n "$reject" ]; then
    # shellcheck disable=SC2086
    iptables -I INPUT "$reject" $rule
  else
    # shellcheck disable=SC2086
    iptables -A INPUT $rule
  fi
done

if [ "${1:-}" = "--tailnet-ssh" ] || [ "$TAILNET" = none ]; then
  # The security list already blocks public SSH; drop the image's ACCEPT too: once the
  # tailnet carries SSH, or at once with tailnet none (break-glass or the OCI console only).
  while iptables -C INPUT -p tcp -m state --state NEW -m tcp --dport "$SSH_PORT" -j ACCEPT 2>/dev/null; do
    iptables -D INPUT -p tcp -m state --state NEW -m tcp --dport "$SSH_PORT" -j ACCEPT
  done
fi

mkdir -p "$(dirname "$RULES_V4")"
iptables-save > "$RULES_V4.tmp" && mv "$RULES_V4.tmp" "$RULES_V4"
echo "backup-mx-firewall: INPUT now:"; iptables -S INPUT
