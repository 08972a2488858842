#!/usr/bin/python3
"""Queue age for node_exporter's textfile collector (backup-mx-queue-age.timer, every 5
minutes): the age of the oldest message waiting in the queue, so an alert
(BackupMxMailNearExpiry) fires before maximal_queue_lifetime returns it to its sender.
postfix_exporter's age histogram is too coarse for that (its buckets jump by tenfold)."""
import json
import os
import shlex
import subprocess
import time

WAITING = ("deferred", "active", "hold")


def env(path: str) -> dict:
    values = {}
    with open(path) as f:
        for line in f:
            name, sep, value = line.rstrip("\n").partition("=")
            if sep:
                values[name] = shlex.split(value)[0] if value else ""
    return values


def main() -> None:
    e = env(os.environ.get("BACKUP_MX_ENV", "/etc/backup-mx/backup-mx.env"))
    command = ["postqueue", "-j"]
    if os.environ.get("POSTFIX_CONFIG_DIR"):  # the lab's listed path override
        command[1:1] = ["-c", os.environ["POSTFIX_CONFIG_DIR"]]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).stdout
    arrivals = [m["arrival_time"] for m in map(json.loads, filter(None, out.splitlines()))
                if m.get("queue_name") in WAITING]
    now = time.time()
    oldest = max((now - a for a in arrivals), default=0)
    directory = e.get("TEXTFILE_DIR", "")
    if not os.path.isdir(directory):
        return
    path = os.path.join(directory, "backup_mx_queue.prom")
    with open(f"{path}.{os.getpid()}", "w") as f:
        f.write("# HELP backup_mx_queue_oldest_message_age_seconds Age of the oldest queued message (0: none).\n"
                "# TYPE backup_mx_queue_oldest_message_age_seconds gauge\n"
                f"backup_mx_queue_oldest_message_age_seconds {int(oldest)}\n"
                "# HELP backup_mx_queue_lifetime_seconds maximal_queue_lifetime: mail older than this is returned.\n"
                "# TYPE backup_mx_queue_lifetime_seconds gauge\n"
                f"backup_mx_queue_lifetime_seconds {e['QUEUE_LIFETIME_S']}\n"
                "# HELP backup_mx_queue_messages Messages waiting (deferred, active, hold).\n"
                "# TYPE backup_mx_queue_messages gauge\n"
                f"backup_mx_queue_messages {len(arrivals)}\n")
    os.replace(f"{path}.{os.getpid()}", path)


if __name__ == "__main__":
    main()
