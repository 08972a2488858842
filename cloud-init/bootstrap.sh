#!/bin/bash
# First boot of the backup MX, run once by cloud-init (runcmd). Mail first: Postfix comes from
# the Ubuntu archive alone and answers on port 25 before anything that needs a third-party
# repository, Let's Encrypt or the tailnet. All of that is backup-mx-extras, which runs at the
# end and then from its timer until it has succeeded, and can never take the MX down with it.
# Every step is idempotent so a re-run (cloud-init clean) converges.
# Output: /var/log/backup-mx-bootstrap.log
set -euo pipefail
exec > >(tee -a /var/log/backup-mx-bootstrap.log) 2>&1
. /etc/backup-mx/backup-mx.env
. /usr/local/lib/backup-mx/common.sh

step "firewall: $SMTP_PORT/$HTTP_PORT open, exporters from $HOMELAB_CIDR only"
/usr/local/sbin/backup-mx-firewall

step "waiting for egress (the internet gateway route appears 30-90 s after boot; DNS answers before it)"
for i in $(seq 1 60); do
  egress && break
  echo "no TCP egress to $APT_MIRROR_HOST yet ($i/60)"; sleep 5
done

step "mail first: postfix from the Ubuntu archive"
debconf-set-selections "$DEBCONF_FILE"
retry 20 apt_install postfix

step "postfix: install the rendered configuration (never patched in place)"
install -d -m 0755 "$TLS_DIR"
if [ ! -s "$TLS_DIR/fullchain.pem" ]; then
  # Until certbot succeeds, STARTTLS uses a self-signed pair: opportunistic TLS still works.
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$RELAY_HOSTNAME" \
    -keyout "$TLS_DIR/privkey.pem" -out "$TLS_DIR/fullchain.pem"
  chmod 0600 "$TLS_DIR/privkey.pem"
fi
# The staging path stays literal here: it is the one copy the policy pack sanctions
# (policy/backup_mx_rules/cloudinit.py); a variable would make the pack fail closed.
for f in main.cf master.cf relay_recipients transport; do
  install -m 0644 "/etc/backup-mx/postfix/$f" "/etc/postfix/$f"
done
postfix check
systemctl enable postfix
systemctl restart postfix

step "drain watcher"
systemctl daemon-reload
systemctl enable --now backup-mx-drain.service
if [ "$RECIPIENTS" = list ]; then
  step "valid-recipient list: the catch-all is in force until the first sync"
  systemctl enable --now backup-mx-recipients.timer
fi

step "the MX is up; the rest (certificate, exporters, upgrades, tailnet) is retried until done"
systemctl enable --now backup-mx-extras.timer
/usr/local/sbin/backup-mx-extras || echo "backup-mx-extras incomplete; backup-mx-extras.timer retries it"

dpkg-query -W -f='${Package} ${Version}\n' > /var/log/backup-mx-packages.txt  # what is installed, listed
step "done"
