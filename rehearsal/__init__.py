"""First-boot rehearsal: the rendered user-data booted by real cloud-init (make rehearse)."""
from __future__ import annotations

import base64
import contextlib
import tempfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from . import image, stubs
from .guest import GUEST, HOST, Faults, Rehearsal

ROOT = Path(__file__).resolve().parent.parent
PREAUTH_KEY = "hskey-auth-rehearsal-0123456789abcdef"

__all__ = ["Faults", "Rehearsal", "GUEST", "HOST", "PREAUTH_KEY", "rendered_user_data", "rehearsal"]


def rendered_user_data(stack_file: Path = ROOT / "examples" / "Pulumi.seed.yaml") -> tuple[str, dict[str, str]]:
    """The user-data exactly as the program renders it (with a test preauth key), and the
    stack's raw config."""
    from offline import program
    _, secret, _ = program.read_stack_file(stack_file, "backup-mx")
    if "headscalePreauthKey" in secret:  # the shape has a tailnet
        secret["headscalePreauthKey"] = PREAUTH_KEY
    run = program.run(stack_file, secret_overrides=secret)
    if run.error:
        raise RuntimeError(run.error)
    inst = next(r for r in run.resources if r.type.endswith("instance:Instance"))
    return base64.b64decode(inst.props["metadata"]["user_data"]["value"]).decode(), run.config


@contextlib.contextmanager
def rehearsal(user_data: str, config: dict[str, str], faults: Faults | None = None,
              work: Path | None = None) -> Iterator[Rehearsal]:
    """Build (or reuse) the image, stand up the stub network, boot the guest; tear it all
    down afterwards whatever happened."""
    stubs.require_tools()
    tarball = image.base_image()
    tmp = Path(tempfile.mkdtemp(prefix="backup-mx-rehearsal-", dir=work or "/var/tmp"))
    relay = config["backup-mx:relayHostname"]
    login_host = {"headscale": urlsplit(config["backup-mx:headscaleLoginServer"]).hostname or "",
                  "tailscale": "controlplane.tailscale.com"}.get(config["backup-mx:tailnet"], "")
    r = Rehearsal(tmp, user_data, relay, login_host, faults or Faults())
    try:
        r.network()
        r.services()
        r.prepare_root(tarball, {"instance-id": "iid-rehearsal-1", "local-hostname": relay.split(".")[0]})
        r.boot()
        yield r
    finally:
        r.teardown()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
