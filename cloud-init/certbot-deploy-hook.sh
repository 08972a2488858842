#!/bin/bash
# certbot deploy hook: install the renewed certificate where Postfix reads it, then reload.
set -euo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
live=/etc/letsencrypt/live/$RELAY_HOSTNAME
install -m 0644 "$live/fullchain.pem" "$TLS_DIR/fullchain.pem"
install -m 0600 "$live/privkey.pem" "$TLS_DIR/privkey.pem"
postfix reload
