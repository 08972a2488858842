#!/usr/bin/python3
"""Drain readiness canary (backup-mx-drain-canary.timer, daily; on demand:
`systemctl start backup-mx-drain-canary`, or `backup-mx-drain-canary --check`).

Talks to the drain target the way a real drain does and stops before DATA: EHLO as the
relay, MAIL FROM an external sender whose domain publishes `-all` SPF with a SIZE over
10 MB (the stack's message size limit), RCPT TO postmaster of the first protected domain,
then RSET. Each reply is recorded for node_exporter's textfile collector (alert
BackupMxDrainNotReady). Exit status 0, unless --check: then 0 only when the drain is ready.
"""
import os
import shlex
import smtplib
import socket
import sys
import time

STAGES = ("banner", "ehlo", "mail", "rcpt", "rset")


def env(path: str) -> dict:
    values = {}
    with open(path) as f:
        for line in f:
            name, sep, value = line.rstrip("\n").partition("=")
            if sep:
                values[name] = shlex.split(value)[0] if value else ""
    return values


def talk(e: dict) -> dict:
    """stage -> (code, text); a stage never reached is absent, a failed connection is code 0."""
    replies = {}
    source = e.get("CANARY_SOURCE_ADDRESS")  # unset on the VM; the lab's listed address override
    try:
        smtp = smtplib.SMTP(timeout=60, local_hostname=e["RELAY_HOSTNAME"],
                            source_address=(source, 0) if source else None)
        replies["banner"] = smtp.connect(e["DRAIN_HOST"], int(e["DRAIN_PORT"]))
        if replies["banner"][0] != 220:
            return replies
        replies["ehlo"] = smtp.ehlo()
        domain = e["DOMAINS"].split()[0]
        replies["mail"] = smtp.docmd("MAIL", f"FROM:<{e['DRAIN_CANARY_SENDER']}> SIZE={e['DRAIN_CANARY_SIZE']}")
        replies["rcpt"] = smtp.docmd("RCPT", f"TO:<postmaster@{domain}>")
        replies["rset"] = smtp.docmd("RSET")
        smtp.quit()
    except (OSError, smtplib.SMTPException) as exc:
        stage = next((s for s in STAGES if s not in replies), "rset")
        replies[stage] = (0, f"{type(exc).__name__}: {exc}".encode())
    return replies


def ready(replies: dict) -> bool:
    return all(replies.get(stage, (0,))[0] in ok for stage, ok in (
        ("banner", (220,)), ("ehlo", (250,)), ("mail", (250,)), ("rcpt", (250, 251))))


def write_metrics(directory: str, replies: dict, is_ready: bool) -> None:
    if not os.path.isdir(directory):
        return
    lines = ["# HELP backup_mx_drain_canary_ready 1 when the drain target would take the drain stream.",
             "# TYPE backup_mx_drain_canary_ready gauge", f"backup_mx_drain_canary_ready {int(is_ready)}",
             "# HELP backup_mx_drain_canary_reply_code The drain target's reply code per stage (0: no reply).",
             "# TYPE backup_mx_drain_canary_reply_code gauge"]
    lines += [f'backup_mx_drain_canary_reply_code{{stage="{stage}"}} {replies.get(stage, (0,))[0]}'
              for stage in STAGES]
    lines += ["# HELP backup_mx_drain_canary_last_run_timestamp_seconds When the canary last ran.",
              "# TYPE backup_mx_drain_canary_last_run_timestamp_seconds gauge",
              f"backup_mx_drain_canary_last_run_timestamp_seconds {int(time.time())}"]
    path = os.path.join(directory, "backup_mx_drain_canary.prom")
    with open(f"{path}.{os.getpid()}", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(f"{path}.{os.getpid()}", path)


def main() -> int:
    e = env(os.environ.get("BACKUP_MX_ENV", "/etc/backup-mx/backup-mx.env"))
    replies = talk(e)
    is_ready = ready(replies)
    for stage in STAGES:
        if stage in replies:
            code, text = replies[stage]
            print(f"{stage} {code} {text.decode(errors='replace').splitlines()[-1] if text else ''}")
    target = f"{e['DRAIN_HOST']}:{e['DRAIN_PORT']}"
    print(f"drain {target} {'ready' if is_ready else 'NOT ready'}")
    write_metrics(e.get("TEXTFILE_DIR", ""), replies, is_ready)
    return 0 if is_ready or "--check" not in sys.argv[1:] else 1


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    sys.exit(main())
