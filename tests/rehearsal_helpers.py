"""Shared by the rehearsal test modules: wait for convergence, run in the guest, record timings."""
import json
import time

from tests.helpers import ROOT

TIMINGS = ROOT / "build" / "rehearsal.json"
BOOT_DEADLINE = 600  # s: a boot that has not converged by then is a failure, not a wait


def record(name, **figures):
    TIMINGS.parent.mkdir(exist_ok=True)
    data = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    data[name] = {**data.get(name, {}), **figures}
    TIMINGS.write_text(json.dumps(data, indent=2) + "\n")


def converge(r, name):
    """Port 25 answering and cloud-init finished; the figures are recorded."""
    port25 = r.wait("port 25 answering", lambda: r.smtp_banner().startswith("220"), BOOT_DEADLINE, step=1)
    done = r.wait("cloud-init done", r.boot_finished, BOOT_DEADLINE, step=1)
    record(name, port25_s=round(port25, 1), cloud_init_done_s=round(done, 1),
           wall_to_done_s=round(time.monotonic() - r.created, 1))
    return port25, done


def guest(r, command, timeout=120):
    out = r.sh(command, timeout=timeout)
    return out.stdout


def rendered_postconf(r):
    """postconf -n of the staged (rendered) main.cf; -c adds its config_directory line."""
    return "".join(ln for ln in guest(r, "postconf -n -c /etc/backup-mx/postfix").splitlines(keepends=True)
                   if not ln.startswith("config_directory ="))
