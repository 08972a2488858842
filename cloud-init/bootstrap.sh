#!/bin/bash
# First-boot provisioning of the backup MX, run once by cloud-init (runcmd). Every step is
# idempotent so a re-run (cloud-init clean) converges. Output: /var/log/backup-mx-bootstrap.log
set -euo pipefail
exec > >(tee -a /var/log/backup-mx-bootstrap.log) 2>&1
. /etc/backup-mx/backup-mx.env
export DEBIAN_FRONTEND=noninteractive

step() { echo "== backup-mx: $* ($(date -Is))"; }
retry() {  # retry N CMD...: the OCI route and the mirrors can lag first boot
  local n=$1 i; shift
  for i in $(seq 1 "$n"); do "$@" && return 0; echo "attempt $i/$n failed: $*"; sleep $((i * 10)); done
  return 1
}

step "firewall: 25/80 open, exporters from $HOMELAB_CIDR only"
/usr/local/sbin/backup-mx-firewall

step "waiting for egress (the internet gateway route appears 30-90 s after boot)"
for i in $(seq 1 60); do
  getent hosts "$APT_MIRROR_HOST" >/dev/null && break
  echo "no DNS/egress yet ($i/60)"; sleep 5
done

step "packages"
debconf-set-selections /etc/backup-mx/debconf.txt
curl -fsSL --retry 10 https://pkgs.tailscale.com/stable/ubuntu/noble.noarmor.gpg \
  -o /usr/share/keyrings/tailscale-archive-keyring.gpg
echo "deb [signed-by=/usr/share/keyrings/tailscale-archive-keyring.gpg] https://pkgs.tailscale.com/stable/ubuntu noble main" \
  > /etc/apt/sources.list.d/tailscale.list
retry 10 apt-get update -q
retry 10 apt-get install -y -q -o Dpkg::Options::=--force-confold \
  postfix certbot prometheus-node-exporter prometheus-postfix-exporter unattended-upgrades tailscale

step "postfix: install the rendered configuration (never patched in place)"
install -d -m 0755 /etc/postfix/tls
if [ ! -s /etc/postfix/tls/fullchain.pem ]; then
  # Until certbot succeeds, STARTTLS uses a self-signed pair: opportunistic TLS still works.
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$RELAY_HOSTNAME" \
    -keyout /etc/postfix/tls/privkey.pem -out /etc/postfix/tls/fullchain.pem
  chmod 0600 /etc/postfix/tls/privkey.pem
fi
for f in main.cf master.cf relay_recipients transport; do
  install -m 0644 "/etc/backup-mx/postfix/$f" "/etc/postfix/$f"
done
postfix check
systemctl enable postfix
systemctl restart postfix

step "exporters"
systemctl enable --now prometheus-node-exporter prometheus-postfix-exporter

step "unattended-upgrades"
systemctl enable --now unattended-upgrades

step "drain watcher and certificate timers"
systemctl daemon-reload
systemctl enable --now backup-mx-drain.timer backup-mx-certificate.timer

step "tailnet: enroll with headscale as $TAILNET_TAG"
systemctl enable --now tailscaled
if ! tailscale status >/dev/null 2>&1; then
  retry 10 tailscale up --login-server "$HEADSCALE_LOGIN_SERVER" \
    --authkey "file:/etc/backup-mx/headscale-preauth-key" \
    --advertise-tags "$TAILNET_TAG" --hostname "${RELAY_HOSTNAME%%.*}"
fi
shred -u /etc/backup-mx/headscale-preauth-key || rm -f /etc/backup-mx/headscale-preauth-key
/usr/local/sbin/backup-mx-firewall --tailnet-ssh

step "done"
