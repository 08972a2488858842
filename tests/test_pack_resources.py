"""The pack's resource model area (policy/backup_mx_rules/resources.py): modeled-resources and
relay-instance-inputs. Each mutation of the example plan, through the real analyzer, is reported
by its policy and by no other. The area's mutations on other shapes sit with those shapes'
proofs (tests/test_two_relays.py, and the WireGuard and MTA-STS modules)."""
import pytest

from tests.helpers import (
    add_resource,
    set_prop,
)
from tests.pack_mutations import (
    assert_reported_only,
)

MUTATIONS = {
    # modeled-resources: types outside the model fail closed
    "an InstancePool (billed, not counted as an instance)": (
        lambda p: add_resource(p, "oci:Core/instancePool:InstancePool", "pool", {"size": 1}), "modeled-resources"),
    "a boot-volume backup policy": (lambda p: add_resource(
        p, "oci:Core/volumeBackupPolicy:VolumeBackupPolicy", "backups", {"schedules": []}), "modeled-resources"),
    "pulumi-cloudflare's older Record type": (lambda p: add_resource(p, "cloudflare:index/record:Record", "mx9", {
        "type": "MX", "name": "viktorbarzin.me", "content": "mx.attacker.example", "priority": 5}),
        "modeled-resources"),
    "a Workers route on mta-sts": (lambda p: add_resource(p, "cloudflare:index/workersRoute:WorkersRoute", "route", {
        "pattern": "mta-sts.viktorbarzin.me/*", "script": "other"}), "modeled-resources"),
    # relay-instance-inputs
    "instance state STOPPED": (lambda p: set_prop(p, "instance:Instance", ["state"], "STOPPED"),
                               "relay-instance-inputs"),
    "recovery action STOP_INSTANCE": (lambda p: set_prop(p, "instance:Instance", ["availabilityConfig"], {
        "recoveryAction": "STOP_INSTANCE"}), "relay-instance-inputs"),
    "a preemptible instance": (lambda p: set_prop(p, "instance:Instance", ["preemptibleInstanceConfig"], {
        "preemptionAction": {"type": "TERMINATE", "preserveBootVolume": False}}), "relay-instance-inputs"),
    "boot volume not preserved": (lambda p: set_prop(p, "instance:Instance", ["preserveBootVolume"], False),
                                  "relay-instance-inputs"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutation_is_reported_by_its_policy_only(policies, example_plan, case):
    assert_reported_only(policies, example_plan, *MUTATIONS[case])
