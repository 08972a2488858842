import base64
import copy
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
EXAMPLE = ROOT / "Pulumi.example.yaml"
TWO_DOMAINS = DATA / "Pulumi.twodomain.yaml"
sys.path.insert(0, str(ROOT))

from offline import analyzer, program  # noqa: E402

SECRET = "hskey-5d41402abc4b2a76b9719d911017c592"  # a recognisable preauth key for leak checks


def run_stack(stack_file=EXAMPLE, **kw):
    kw.setdefault("secret_overrides", {"headscalePreauthKey": SECRET})
    result = program.run(stack_file, stack=stack_file.stem.split(".")[-1], **kw)
    assert not result.error, result.error
    return result


@pytest.fixture(scope="session")
def example_run():
    return run_stack()


@pytest.fixture(scope="session")
def example_plan(example_run):
    """What the engine feeds the pack: secrets in their envelope, in clear inside it."""
    return program.plan(example_run, redacted=False)


@pytest.fixture(scope="session")
def two_domain_plan():
    return program.plan(run_stack(TWO_DOMAINS), redacted=False)


@pytest.fixture(scope="session")
def first_preview_plan():
    return program.plan(run_stack(first_preview=True), redacted=False)


class PolicyBridge:
    """Real analyzer servers, one per (stack config, preview or up), reconfigured per check.
    The stack config reaches the pack as PULUMI_CONFIG, as the CLI passes it."""

    def __init__(self):
        self.analyzers: dict[tuple[str, bool], analyzer.Analyzer] = {}
        self.preview = self.analyzer({}, True)
        self.info = self.preview.info()

    def analyzer(self, config: dict, dry_run: bool) -> "analyzer.Analyzer":
        import json
        key = (json.dumps(config, sort_keys=True), dry_run)
        if key not in self.analyzers:
            self.analyzers[key] = analyzer.Analyzer("backup-mx", "example", dry_run=dry_run, config=config)
        return self.analyzers[key]

    def check(self, plan, config=None, dry_run=True):
        a = self.analyzer(plan.get("config") or {}, dry_run)
        a.configure(self.info, config or {})
        return a.analyze(plan)

    def close(self):
        for a in self.analyzers.values():
            a.close()


@pytest.fixture(scope="session")
def policies():
    bridge = PolicyBridge()
    yield bridge
    bridge.close()


# --- plan editing helpers (tests edit the artifacts, not the renderers) ----------------

def resource(plan, type_suffix, name_part=""):
    found = [r for r in plan["resources"] if r["type"].endswith(type_suffix) and name_part in r["name"]]
    assert found, f"no {type_suffix} {name_part}"
    return found[0]


def unwrap(value):
    if isinstance(value, dict) and value.get(program.SECRET_SIG) == program.SECRET_MARK:
        return value["value"]
    return value


def metadata(r, where):
    """The metadata map; in state the engine keeps it wholly secret (additionalSecretOutputs)."""
    return unwrap(r[where]["metadata"])


def user_data_doc(r, where="props"):
    return yaml.safe_load(base64.b64decode(unwrap(metadata(r, where)["user_data"])).decode())


def set_user_data_doc(r, doc, where=("props", "outputs")):
    text = "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)
    encoded = base64.b64encode(text.encode()).decode()
    for w in where:
        metadata(r, w)["user_data"] = {program.SECRET_SIG: program.SECRET_MARK, "value": encoded}


def edit_file(plan, path_suffix, edit):
    """Apply edit(text) -> text to a write_files entry of the instance's user_data."""
    plan = copy.deepcopy(plan)
    inst = resource(plan, "instance:Instance")
    doc = user_data_doc(inst)
    entry = next(f for f in doc["write_files"] if f["path"].endswith(path_suffix))
    entry["content"] = edit(entry["content"])
    set_user_data_doc(inst, doc)
    return plan


def set_main_cf(plan, name, value):
    def edit(text):
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{name} ") and not ln.startswith(f"{name}=")]
        if value is not None:
            lines.append(f"{name} = {value}")
        return "\n".join(lines) + "\n"
    return edit_file(plan, "/main.cf", edit)


# --- real Postfix lab ------------------------------------------------------------------

@pytest.fixture(scope="session")
def vm_files(example_run):
    """The Postfix files exactly as the VM receives them (decoded from the real user_data)."""
    from lab import files_from_user_data
    inst = next(r for r in example_run.resources if r.type.endswith("Instance"))
    return files_from_user_data(inst.props["metadata"]["user_data"]["value"])


@pytest.fixture(scope="session")
def tls_dir():
    from lab import make_tls
    return make_tls(lab_dir("tls"), "mx2.viktorbarzin.me")


LAB_DIRS: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def remove_lab_dirs():
    """Every lab directory a test made goes at the end of the session, whatever failed."""
    yield
    import shutil
    for path in LAB_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def lab_dir(name):
    import tempfile
    path = Path(tempfile.mkdtemp(prefix=f"backup-mx-{name}-", dir="/tmp"))
    path.chmod(0o755)  # Postfix's unprivileged processes traverse it
    LAB_DIRS.append(path)
    return path


@pytest.fixture
def lab(vm_files, tls_dir):
    from lab import Lab
    bench = Lab(lab_dir("lab"), vm_files, tls_dir)
    yield bench
    bench.down()


@pytest.fixture(scope="session")
def rendered():
    """The user-data as the program renders it for the example stack (test preauth key), and
    the stack config: what the first-boot rehearsal boots."""
    from rehearsal import rendered_user_data
    return rendered_user_data()
