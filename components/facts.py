"""Facts about the relay that are not stack config, one home each.

The program reads them from here; the scripts on the VM receive them through the rendered
environment file (cloudinit.env_file), never as their own literals. The policy pack keeps
its own copies on purpose (policy/backup_mx_rules/environment.py, network.py, and the env
contract in relay_files.json): it judges the artifacts independently of this program.
"""
SMTP_PORT = 25  # inbound mail; also the port Oracle blocks for egress
HTTP_PORT = 80  # HTTP-01 for certbot (Let's Encrypt validates from many places)
SSH_PORT = 22  # tailnet only, once tailscale0 exists
NODE_EXPORTER_PORT = 9100  # prometheus-node-exporter's packaged default
POSTFIX_EXPORTER_PORT = 9154  # prometheus-postfix-exporter's packaged default
PUBLIC_TCP_PORTS = (SMTP_PORT, HTTP_PORT)  # open to the world
EXPORTER_PORTS = (NODE_EXPORTER_PORT, POSTFIX_EXPORTER_PORT)  # the homelab only

CONFIG_DIR = "/etc/backup-mx"
ENV_FILE = f"{CONFIG_DIR}/backup-mx.env"  # the scripts' one source; its path is their only literal
STAGING_DIR = f"{CONFIG_DIR}/postfix"  # rendered Postfix files, installed after the package
DEBCONF_FILE = f"{CONFIG_DIR}/debconf.txt"
TLS_DIR = "/etc/postfix/tls"  # Postfix's certificate pair: the bootstrap's self-signed one, then certbot's
PREAUTH_KEY_FILE = f"{CONFIG_DIR}/headscale-preauth-key"  # shredded once used
STATE_DIR = "/var/lib/backup-mx"  # one <part>.done per finished extra
APT_MIRROR_HOST = "archive.ubuntu.com"  # the egress wait's TCP target
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # node_exporter's textfile collector (Debian/Ubuntu)
# accountMode free: Oracle reclaims an Always-Free instance whose CPU p95 over 7 days (its
# 1-minute CpuUtilization) stays under 20 %. The keep-alive keeps one vCPU busy, at idle
# scheduling priority, for 3 minutes in every 15: a fifth of all minutes read about 50 %
# (one of the E2.1.Micro's two vCPUs), so the p95 sits near 50 % with margin for minutes
# the relay itself needs the CPU. Its mean, one vCPU a fifth of the time (0.2 vCPU), stays
# under the shape's 1/8-OCPU baseline (0.25 vCPU), so it spends no burst credit.
KEEPALIVE_BUSY_S, KEEPALIVE_PERIOD_S = 180, 900
# recipients list: a list last synced longer ago than this is stale (logged, and alert
# BackupMxRecipientListStale); the last good copy stays in force all the same.
RECIPIENT_LIST_STALE_S = 86400
RECLAMATION_P95 = 0.20  # Oracle's idle threshold
RECLAMATION_ALERT_P95 = 0.25  # alert with margin above it
WIREGUARD_CONF = "/etc/wireguard/{interface}.conf"  # wg-quick@<interface> reads it
WIREGUARD_KEEPALIVE_S = 25  # keeps the firewall's state for a peer behind Oracle's NAT
WIREGUARD_STALE_S = 135  # no handshake for this long: the peer is unreachable (WireGuard rekeys every 120 s)
# The drain canary's MAIL FROM: an external sender whose domain publishes "v=spf1 -all"
# (example.com, reserved by RFC 2606, does), so an SPF check on the primary fails for the
# relay's address exactly as it does for real drained mail.
DRAIN_CANARY_SENDER = "drain-canary@example.com"
# What the relay keeps below the primary's message_size_limit (messageSizeLimit): the relay's
# own Received header, the one the primary prepends, headers its milters add and envelope
# records, all counted by the primary's cleanup. Whatever the relay accepts then fits the
# primary; without it a message just under the limit is taken here and refused there forever.
SIZE_HEADROOM = 1024 * 1024
