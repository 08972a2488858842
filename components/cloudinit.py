"""Settings in, the relay's cloud-init user-data out.

The scripts and units are static assets in cloud-init/; the only rendered parts are the
Postfix files, the environment file the scripts source, and the secret preauth key.
"""
from __future__ import annotations

import base64
import hashlib
import shlex
from pathlib import Path

import yaml

from . import facts, postfix
from .facts import DEBCONF_FILE, ENV_FILE, PREAUTH_KEY_FILE, STAGING_DIR
from .postfix_grammar import postfix_seconds
from .settings import RelaySpec, Settings

ASSETS = Path(__file__).resolve().parent.parent / "cloud-init"
PACKAGE_DEBCONF = [
    "postfix postfix/main_mailer_type select No configuration",
    "postfix postfix/mailname string {relay}",
]

# (asset, path on the VM, permissions)
_ASSET_FILES = [
    ("common.sh", "/usr/local/lib/backup-mx/common.sh", "0644"),
    ("bootstrap.sh", "/usr/local/sbin/backup-mx-bootstrap", "0755"),
    ("extras.sh", "/usr/local/sbin/backup-mx-extras", "0755"),
    ("firewall.sh", "/usr/local/sbin/backup-mx-firewall", "0755"),
    ("drain.sh", "/usr/local/sbin/backup-mx-drain", "0755"),
    ("certificate.sh", "/usr/local/sbin/backup-mx-certificate", "0755"),
    ("certbot-deploy-hook.sh", "/etc/letsencrypt/renewal-hooks/deploy/backup-mx-postfix", "0755"),
    ("backup-mx-drain.service", "/etc/systemd/system/backup-mx-drain.service", "0644"),
    ("backup-mx-extras.service", "/etc/systemd/system/backup-mx-extras.service", "0644"),
    ("backup-mx-extras.timer", "/etc/systemd/system/backup-mx-extras.timer", "0644"),
    ("backup-mx-certificate.service", "/etc/systemd/system/backup-mx-certificate.service", "0644"),
    ("backup-mx-certificate.timer", "/etc/systemd/system/backup-mx-certificate.timer", "0644"),
    ("postfix-exporter-restart.conf",
     "/etc/systemd/system/prometheus-postfix-exporter.service.d/backup-mx-restart.conf", "0644"),
    ("drain-canary.py", "/usr/local/sbin/backup-mx-drain-canary", "0755"),
    ("backup-mx-drain-canary.service", "/etc/systemd/system/backup-mx-drain-canary.service", "0644"),
    ("backup-mx-drain-canary.timer", "/etc/systemd/system/backup-mx-drain-canary.timer", "0644"),
    ("queue-age.py", "/usr/local/sbin/backup-mx-queue-age", "0755"),
    ("backup-mx-queue-age.service", "/etc/systemd/system/backup-mx-queue-age.service", "0644"),
    ("backup-mx-queue-age.timer", "/etc/systemd/system/backup-mx-queue-age.timer", "0644"),
    ("20auto-upgrades", "/etc/apt/apt.conf.d/20auto-upgrades", "0644"),
    ("52backup-mx-unattended-upgrades", "/etc/apt/apt.conf.d/52backup-mx-unattended-upgrades", "0644"),
]


_KEEPALIVE_ASSETS = [
    ("keepalive.sh", "/usr/local/sbin/backup-mx-keepalive", "0755"),
    ("backup-mx-keepalive.service", "/etc/systemd/system/backup-mx-keepalive.service", "0644"),
]
_LIST_ASSETS = [
    ("recipients.sh", "/usr/local/sbin/backup-mx-recipients", "0755"),
    ("backup-mx-recipients.service", "/etc/systemd/system/backup-mx-recipients.service", "0644"),
    ("backup-mx-recipients.timer", "/etc/systemd/system/backup-mx-recipients.timer", "0644"),
]
_WIREGUARD_ASSETS = [
    ("wg-watch.sh", "/usr/local/sbin/backup-mx-wg-watch", "0755"),
    ("backup-mx-wg-watch.service", "/etc/systemd/system/backup-mx-wg-watch.service", "0644"),
    ("backup-mx-wg-watch.timer", "/etc/systemd/system/backup-mx-wg-watch.timer", "0644"),
]


def env_file(s: Settings, relay: RelaySpec) -> str:
    """The one file of values the static scripts source."""
    values = {
        "RELAY_HOSTNAME": relay.hostname,
        "DOMAINS": " ".join(s.domains),
        "DRAIN_HOST": s.drain_host,
        "DRAIN_PORT": str(s.drain_port),
        "HOMELAB_CIDR": s.homelab_cidr,
        "BREAK_GLASS_SSH": "true" if s.break_glass_ssh else "false",
        "CERTBOT_EMAIL": s.certbot_email,
        "TAILNET": s.tailnet,
        "HEADSCALE_LOGIN_SERVER": s.headscale_login_server,
        "TAILNET_TAG": s.tailnet_tag,
        "APT_MIRROR_HOST": facts.APT_MIRROR_HOST,
        "SMTP_PORT": str(facts.SMTP_PORT),
        "HTTP_PORT": str(facts.HTTP_PORT),
        "SSH_PORT": str(facts.SSH_PORT),
        "NODE_EXPORTER_PORT": str(facts.NODE_EXPORTER_PORT),
        "POSTFIX_EXPORTER_PORT": str(facts.POSTFIX_EXPORTER_PORT),
        "STAGING_DIR": STAGING_DIR,
        "DEBCONF_FILE": DEBCONF_FILE,
        "PREAUTH_KEY_FILE": PREAUTH_KEY_FILE,
        "STATE_DIR": facts.STATE_DIR,
        "TLS_DIR": facts.TLS_DIR,
        "DRAIN_TRANSPORT": s.drain_transport,
        "ACCOUNT_MODE": s.account_mode,
        "TEXTFILE_DIR": facts.TEXTFILE_DIR,
        "DRAIN_CANARY_SENDER": facts.DRAIN_CANARY_SENDER,
        # The primary's declared limit: if it takes this, it takes the largest drained message
        # (the relay's limit plus what both add, SIZE_HEADROOM).
        "DRAIN_CANARY_SIZE": str(s.message_size_limit),
        "QUEUE_LIFETIME_S": str(postfix_seconds(s.queue_lifetime)),
        "RECIPIENTS": s.recipients,
    }
    if s.recipients == "list":
        values.update({"RECIPIENT_LIST_URL": s.recipient_list_url,
                       "RECIPIENT_LIST_STALE_S": str(facts.RECIPIENT_LIST_STALE_S)})
    if s.account_mode == "free":
        values.update({"KEEPALIVE_BUSY_S": str(facts.KEEPALIVE_BUSY_S),
                       "KEEPALIVE_PERIOD_S": str(facts.KEEPALIVE_PERIOD_S)})
    if s.wireguard:
        values.update({"WG_INTERFACE": s.wireguard.interface, "WG_PEER_PUBLIC_KEY": s.wireguard.peer_public_key,
                       "WG_ENDPOINT": s.wireguard.endpoint})
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def staged_postfix_files(s: Settings, relay: RelaySpec) -> dict[str, str]:
    """Postfix files as cloud-init writes them: staged, then installed after the package,
    so neither the package's postinst nor a conffile prompt can clobber them."""
    return {f"{STAGING_DIR}/{Path(p).name}": text for p, text in postfix.files(s, relay).items()}


def wireguard_conf(s: Settings, private_key: str) -> str:
    """wg-quick's config: the relay as a road-warrior peer of the homelab firewall. The only
    route into the tunnel is the primary's /32, never a default route."""
    assert s.wireguard is not None
    wg = s.wireguard
    return ("# backup-mx: drain tunnel to the homelab firewall (wg-quick@wg0)\n"
            "[Interface]\n"
            f"PrivateKey = {private_key}\n"
            f"Address = {wg.relay_address}/32\n"
            "\n"
            "[Peer]\n"
            "# the homelab firewall; it must keep this relay as a persistent (package) peer\n"
            f"PublicKey = {wg.peer_public_key}\n"
            f"Endpoint = {wg.endpoint}\n"
            f"AllowedIPs = {wg.allowed_ips}\n"
            f"PersistentKeepalive = {facts.WIREGUARD_KEEPALIVE_S}\n")


def _assets(assets: list[tuple[str, str, str]]) -> list[dict]:
    return [{"path": path, "permissions": mode, "content": (ASSETS / asset).read_text()} for asset, path, mode in assets]


def cloud_config(s: Settings, relay: RelaySpec, preauth_key: str, wireguard_key: str = "") -> dict:
    files = [{"path": ENV_FILE, "permissions": "0644", "content": env_file(s, relay)},
             {"path": DEBCONF_FILE, "permissions": "0644",
              "content": "".join(line.format(relay=relay.hostname) + "\n" for line in PACKAGE_DEBCONF)}]
    if s.tailnet != "none":
        files.append({"path": PREAUTH_KEY_FILE, "permissions": "0600", "content": preauth_key})
    files += [{"path": path, "permissions": "0644", "content": text}
              for path, text in staged_postfix_files(s, relay).items()]
    files += _assets(_ASSET_FILES)
    if s.account_mode == "free":
        files += _assets(_KEEPALIVE_ASSETS)
    if s.recipients == "list":
        files += _assets(_LIST_ASSETS)
    if s.wireguard:
        files.append({"path": facts.WIREGUARD_CONF.format(interface=s.wireguard.interface), "permissions": "0600",
                      "content": wireguard_conf(s, wireguard_key)})
        files += _assets(_WIREGUARD_ASSETS)
    doc = {
        "hostname": relay.hostname.split(".")[0],
        "fqdn": relay.hostname,
        "prefer_fqdn_over_hostname": True,
        "ssh_pwauth": False,
        "disable_root": True,
        "write_files": files,
        "runcmd": [["/usr/local/sbin/backup-mx-bootstrap"]],
    }
    if s.ssh_authorized_keys:
        doc["ssh_authorized_keys"] = list(s.ssh_authorized_keys)
    return doc


class _Literal(str):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|"))


def user_data(s: Settings, relay: RelaySpec, preauth_key: str, wireguard_key: str = "") -> str:
    """The #cloud-config document; multi-line files as YAML literal blocks for readability."""
    doc = cloud_config(s, relay, preauth_key, wireguard_key)
    for f in doc["write_files"]:
        f["content"] = _Literal(f["content"]) if "\n" in f["content"] else f["content"]
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


def user_data_b64(s: Settings, relay: RelaySpec, preauth_key: str, wireguard_key: str = "") -> str:
    """OCI's metadata.user_data wants base64."""
    return base64.b64encode(user_data(s, relay, preauth_key, wireguard_key).encode()).decode()


def sha256(s: Settings, relay: RelaySpec, preauth_key: str, wireguard_key: str = "") -> str:
    """Digest of the user-data: shows drift between the stack and the running VM, which
    ignores user_data changes until an explicit rebuild."""
    return hashlib.sha256(user_data(s, relay, preauth_key, wireguard_key).encode()).hexdigest()
