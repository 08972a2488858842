"""Pulumi's policy metadata for every policy of the pack: severity, tags, remediation steps,
the policy's anchor in docs/policies.md, and the one compliance framework, the backup-MX
invariants. view.stack_policy and view.resource_policy attach it by the policy's name, so a
policy without an entry here cannot be declared."""
from __future__ import annotations

from pulumi_policy import PolicyComplianceFramework, Severity

FRAMEWORK = PolicyComplianceFramework(
    name="backup-mx-invariants", version="3",
    reference="ADR-0019: a store-and-forward backup MX that never loses inbound mail",
    specification="never 5xx; bounce lifetime 1d; queue lifetime 30d; the relay never in the primary's "
                  "mynetworks; the zone under its record budget; $0 (Oracle Always-Free)")
DOCS = "docs/policies.md"

# name: (severity, tags, remediation steps: the fix the policy's messages state)
POLICIES: dict[str, tuple[Severity, list[str], str]] = {
    "never-5xx": (Severity.CRITICAL, ["invariant", "mail"],
                  "Set soft_bounce = yes in main.cf with no -o soft_bounce=no in master.cf, valid postscreen actions, "
                  "DNSBL sites with reply filters, message_size_limit = messageSizeLimit less 1 MiB, and an "
                  "'@<domain> OK' row per protected domain in relay_recipients."),
    "bounce-lifetime": (Severity.HIGH, ["invariant", "mail"], "Set bounce_queue_lifetime = 1d (stack config "
                        "bounceLifetime: 1d)."),
    "queue-lifetime": (Severity.CRITICAL, ["invariant", "mail"], "Set maximal_queue_lifetime to at least 30d "
                       "(stack config queueLifetime: 30d..100d)."),
    "vm-not-in-mynetworks": (Severity.CRITICAL, ["invariant", "network"],
                             "Keep every relay address (reserved IP, private IP, drain source) out of "
                             "primaryMynetworks; exempt the relay per stage with the primaryEnablement output."),
    "zone-record-budget": (Severity.HIGH, ["invariant", "dns"], "Delete unused records in the zone until live "
                           "records plus this stack's stay under the budget (200 on Cloudflare Free)."),
    "relay-mynetworks": (Severity.CRITICAL, ["mail", "open-relay"], "Set mynetworks = 127.0.0.1/32 in main.cf and "
                         "in every -o of master.cf."),
    "zone-record-headroom": (Severity.LOW, ["dns"], "Purge unused records before the next change needs the slots."),
    "mx-preference": (Severity.CRITICAL, ["dns"], "Publish each relay's MX after the live primary MX (mxPreference, "
                      "secondMxPreference above it), set primaryMxPreference to the live value, and delete MX "
                      "records this stack does not manage."),
    "relay-a-record": (Severity.HIGH, ["dns"], "Point each relay host's A record at its own reserved IP and delete "
                       "any AAAA record for it."),
    "relay-a-unproxied": (Severity.HIGH, ["dns"], "Set proxied = false on the relay's address records."),
    "dns-records": (Severity.HIGH, ["dns", "allow-list"], "Create only the records the program renders: an MX per "
                    "protected domain, each relay's A record, and with mtaSts its two TXT records."),
    "reserved-public-ip": (Severity.HIGH, ["network"], "Attach a RESERVED, protected public IP to each relay's "
                           "primary private IP."),
    "always-free": (Severity.HIGH, ["cost"], "Keep to the Always-Free allowance: VM.Standard.E2.1.Micro, at most "
                    "two instances and 200 GB of block volume, no paid resource types."),
    "reachability": (Severity.CRITICAL, ["network"], "Put each relay's VNIC in this stack's subnet, route "
                     "0.0.0.0/0 to this stack's enabled internet gateway, attach only this stack's security lists "
                     "and NSGs with 25 and 80 open to the world and egress to the drain and DNS, and keep every "
                     "OCI resource on the stack's provider in ociRegion."),
    "security-list": (Severity.HIGH, ["network"], "Open only TCP 25 and 80 to the world, 9100/9154 (and 22 with "
                      "breakGlassSsh) to homelabCidr only."),
    "drain-port": (Severity.CRITICAL, ["mail"], "Route every protected domain with '<domain> smtp:[drainHost]:"
                   "drainPort' in the transport map (with WireGuard: [wireguardPrimaryAddress]:25), no content "
                   "filter, milter or rewrite."),
    "relay-domains": (Severity.CRITICAL, ["mail", "open-relay"], "Set relay_domains to the protected domains, "
                      "smtpd_relay_restrictions = reject_unauth_destination and the rendered recipient whitelist."),
    "no-silent-replace": (Severity.HIGH, ["lifecycle"], "Protect the instance and its reserved IP, and never ignore "
                          "changes to inputs that replace the VM (metadata, image, placement)."),
    "wireguard-tunnel": (Severity.HIGH, ["tunnel"], "Render wg0.conf as the program does: AllowedIPs the primary's "
                         "tunnel address /32, the stack's endpoint and keys, mode 0600, and metadata in "
                         "additionalSecretOutputs."),
    "relay-fault-domains": (Severity.MEDIUM, ["network"], "With two relays, give each instance its own explicit "
                            "fault domain."),
    "mta-sts": (Severity.HIGH, ["dns", "mta-sts"], "Serve a policy that lists the primary and every relay in the "
                "stack's mode, derive the _mta-sts id from its text, and publish the TLS-RPT record."),
    "mta-sts-live-record": (Severity.MEDIUM, ["dns", "mta-sts"], "Delete _mta-sts TXT records this stack does not "
                            "manage."),
    "smtp-smuggling": (Severity.CRITICAL, ["mail", "security"], "Set smtpd_forbid_bare_newline = normalize, "
                       "smtpd_forbid_bare_newline_exclusions = 127.0.0.1/32 and smtpd_forbid_unauth_pipelining = no."),
    "relay-user-data": (Severity.HIGH, ["cloud-init", "allow-list"], "Render user_data with the program, unedited: "
                        "only the files in relay_files.json for the shape, the reviewed asset digests, the env file "
                        "from the stack config, and runcmd the bootstrap alone."),
    "free-tier-keepalive": (Severity.CRITICAL, ["cost", "cloud-init"], "With accountMode free, ship the keep-alive "
                            "script and unit as rendered, with ACCOUNT_MODE=free and the contract's KEEPALIVE_* values, "
                            "and nothing that masks, overrides or stops it."),
    "postfix-parameters": (Severity.HIGH, ["mail", "allow-list"], "Set only the parameters the program renders, "
                           "with values the pack's rules allow (policy/backup_mx_rules/parameters.py); keep one SMTP "
                           "listener on every address."),
    "modeled-resources": (Severity.HIGH, ["cost", "allow-list"], "Remove resources of types the pack does not model, "
                          "or model the type in the pack first."),
    "relay-instance-inputs": (Severity.CRITICAL, ["lifecycle", "allow-list"], "Leave state unset, keep "
                              "availabilityConfig.recoveryAction RESTORE_INSTANCE and preserveBootVolume true, and set "
                              "no instance input the pack does not model."),
}


def metadata(name: str) -> dict:
    """Keyword arguments for the policy's constructor."""
    severity, tags, remediation = POLICIES[name]
    return {"severity": severity, "tags": tags, "remediation_steps": remediation, "framework": FRAMEWORK,
            "url": f"{DOCS}#{name}"}
