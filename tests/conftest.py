"""Fixtures. Plain helpers live in tests/helpers.py, imported like any module."""
import pytest

from offline import analyzer, program
from tests.helpers import BREAK_GLASS, LAB_DIRS, TWO_DOMAINS, lab_dir, run_stack


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
def break_glass_plan():
    return program.plan(run_stack(BREAK_GLASS), redacted=False)


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


@pytest.fixture(scope="session")
def vm_files(example_run):
    """The Postfix files exactly as the VM receives them (decoded from the real user_data)."""
    from lab import files_from_run
    return files_from_run(example_run)


@pytest.fixture(scope="session")
def tls_dir():
    from lab import make_tls
    return make_tls(lab_dir("tls"), "mx2.viktorbarzin.me")


@pytest.fixture(scope="session", autouse=True)
def remove_lab_dirs():
    """Every lab directory a test made goes at the end of the session, whatever failed."""
    yield
    import shutil
    for path in LAB_DIRS:
        shutil.rmtree(path, ignore_errors=True)


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
