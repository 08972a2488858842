#!/bin/bash
# Obtain the Let's Encrypt certificate once DNS points here (HTTP-01, standalone on :80).
# backup-mx-certificate.timer retries until it succeeds; certbot.timer renews afterwards.
set -euo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
if [ -e "/etc/letsencrypt/live/$RELAY_HOSTNAME/fullchain.pem" ]; then
  systemctl disable --now backup-mx-certificate.timer || true
  exit 0
fi
certbot certonly --standalone --non-interactive --agree-tos -m "$CERTBOT_EMAIL" \
  -d "$RELAY_HOSTNAME" --deploy-hook /etc/letsencrypt/renewal-hooks/deploy/backup-mx-postfix
systemctl disable --now backup-mx-certificate.timer || true
