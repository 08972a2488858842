#!/bin/bash
# Everything the relay wants besides mail, each part done once and recorded: exporters and
# unattended-upgrades, the tailscale repository and package and tailnet enrolment (unless
# tailnet none), the certificate timer and the outage-readiness timers. Run at the end of the
# first boot and by backup-mx-extras.timer until every part has succeeded; a failure here
# never touches Postfix.
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
. "${BACKUP_MX_LIB:-/usr/local/lib/backup-mx}/common.sh"
STATE=${BACKUP_MX_STATE_DIR:-$STATE_DIR}
KEY_SOURCE=${BACKUP_MX_PREAUTH_KEY:-$PREAUTH_KEY_FILE}
RUN_DIR=${BACKUP_MX_RUN_DIR:-/run/backup-mx}
UP_TIMEOUT=${TAILSCALE_UP_TIMEOUT:-90}
mkdir -p "$STATE"

part() {  # part NAME CMD...: run once; success is recorded in $STATE/NAME.done
  local name=$1; shift
  [ -e "$STATE/$name.done" ] && return 0
  step "$name"
  if "$@"; then touch "$STATE/$name.done"; return 0; fi
  echo "backup-mx-extras: $name failed; the timer retries it"
  return 1
}

exporters_and_upgrades() {
  # The postfix exporter exits at its package start if the mail log is not there yet; the
  # unit drop-in written by cloud-init restarts it (Restart=on-failure).
  apt_install certbot prometheus-node-exporter prometheus-postfix-exporter unattended-upgrades && \
  systemctl enable --now prometheus-node-exporter prometheus-postfix-exporter unattended-upgrades
}

tailscale_package() {
  curl -fsSL --retry 5 --max-time 60 https://pkgs.tailscale.com/stable/ubuntu/noble.noarmor.gpg \
    -o /usr/share/keyrings/tailscale-archive-keyring.gpg && \
  echo "deb [signed-by=/usr/share/keyrings/tailscale-archive-keyring.gpg] https://pkgs.tailscale.com/stable/ubuntu noble main" \
    > /etc/apt/sources.list.d/tailscale.list && \
  apt_install tailscale && systemctl enable --now tailscaled
}

enrol() (
  # A subshell, so its EXIT trap covers every way out. The key is consumed from its file on
  # the first attempt and removed whether tailscale up succeeds, fails, hangs or is stopped.
  # A later retry needs a new key (docs/deploy.md, First boot).
  if tailscale status >/dev/null 2>&1; then exit 0; fi
  mkdir -p -m 0700 "$RUN_DIR"
  key=$(mktemp "$RUN_DIR/preauth.XXXXXX")
  trap 'shred -u "$key" 2>/dev/null || rm -f "$key"' EXIT
  trap 'exit 143' TERM INT HUP
  if [ ! -s "$KEY_SOURCE" ]; then
    echo "backup-mx-extras: no preauth key at $KEY_SOURCE (used or never written); enrol by hand: docs/deploy.md, First boot"
    exit 1
  fi
  cat "$KEY_SOURCE" > "$key"
  shred -u "$KEY_SOURCE" 2>/dev/null || rm -f "$KEY_SOURCE"
  # headscale: its own login server; tailscale: the client's default, Tailscale's control server.
  server=()
  if [ "$TAILNET" = headscale ]; then server=(--login-server "$HEADSCALE_LOGIN_SERVER"); fi
  timeout --kill-after=5 "$((UP_TIMEOUT + 10))" tailscale up --timeout "${UP_TIMEOUT}s" \
    "${server[@]}" --authkey "file:$key" \
    --advertise-tags "$TAILNET_TAG" --hostname "${RELAY_HOSTNAME%%.*}" && \
  "${BACKUP_MX_SBIN:-/usr/local/sbin}/backup-mx-firewall" --tailnet-ssh
)

certificate_timer() {
  systemctl enable --now backup-mx-certificate.timer
}

wireguard() {
  # drainTransport wireguard: the drain rides the tunnel; until it is up, mail waits in the queue.
  apt_install wireguard-tools && \
  systemctl enable --now "wg-quick@$WG_INTERFACE" backup-mx-wg-watch.timer
}

failed=0
part exporters-and-upgrades exporters_and_upgrades || failed=1
part certificate-timer certificate_timer || failed=1
# Outage readiness: the drain canary (daily) and the queue age (every 5 minutes) for node_exporter.
part readiness-timers systemctl enable --now backup-mx-drain-canary.timer backup-mx-queue-age.timer || failed=1
if [ "${ACCOUNT_MODE:-payg}" = free ]; then
  part keepalive systemctl enable --now backup-mx-keepalive.service || failed=1
fi
if [ "${DRAIN_TRANSPORT:-nat}" = wireguard ]; then
  part wireguard wireguard || failed=1
fi
# tailnet none: nothing to join; SSH is break-glass from homelabCidr or the OCI console.
if [ "$TAILNET" != none ]; then
  if part tailscale-package tailscale_package; then
    part tailnet enrol || failed=1
  else
    failed=1
  fi
fi
if [ "$failed" -eq 0 ]; then
  systemctl disable backup-mx-extras.timer 2>/dev/null || true
  dpkg-query -W -f='${Package} ${Version}\n' > /var/log/backup-mx-packages.txt
  echo "backup-mx-extras: all done"
fi
exit "$failed"
