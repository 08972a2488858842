"""Plan edits the pack's mutation tests share, and the one verdict they all assert: a mutation
is reported by the policies meant for it and by no other (pulumi-policy-aws style)."""
import copy

from offline import program
from tests.helpers import DEFERRED, reported, resource, with_live_count


def add_relay_copy(plan, suffix, **props):
    """A second relay instance with its own protected reserved IP (Always-Free totals)."""
    plan = copy.deepcopy(plan)
    inst, ip = resource(plan, "instance:Instance"), resource(plan, "publicIp:PublicIp")
    for original in (inst, ip):
        extra = copy.deepcopy(original)
        extra["name"] += suffix
        extra["urn"] += suffix
        if original is inst:
            for w in ("props", "outputs"):
                extra[w].update(copy.deepcopy(props))
        else:  # the copy's address derives from the copied instance, as the program's does
            extra["dependencies"] = [inst["urn"] + suffix if d == inst["urn"] else d for d in extra["dependencies"]]
        plan["resources"].append(extra)
    return plan


def set_dependencies(plan, type_suffix, urns):
    plan = copy.deepcopy(plan)
    resource(plan, type_suffix)["dependencies"] = list(urns)
    return plan


def set_option(plan, type_suffix, option, value):
    plan = copy.deepcopy(plan)
    resource(plan, type_suffix)["options"][option] = value
    return plan


def add_ingress(plan, rule):
    plan = copy.deepcopy(plan)
    r = resource(plan, "SecurityList")
    for w in ("props", "outputs"):
        r[w]["ingressSecurityRules"].append(rule)
    return plan


def edit_ingress(plan, port, **changes):
    plan = copy.deepcopy(plan)
    r = resource(plan, "SecurityList")
    for w in ("props", "outputs"):
        for rule in r[w]["ingressSecurityRules"]:
            if rule.get("tcpOptions", {}).get("min") == port:
                rule.update(changes)
    return plan


def set_zone(plan, field, value):
    """The first zone's field set, the live count and keys kept as one lookup gives them (the
    count is the number of keys); `disagree` breaks that on purpose."""
    if field == "liveRecordCount":
        return with_live_count(plan, value)
    plan = copy.deepcopy(plan)
    r = resource(plan, "index:Dns")
    for w in ("props", "outputs"):
        zone = r[w]["zones"][0]
        zone[field] = value(zone[field]) if callable(value) else value
        if field == "liveRecordKeys" and isinstance(zone[field], list):
            zone["liveRecordCount"] = len(zone[field])
    return plan


def disagree(plan, count):
    """The live count alone changed: the Dns component says `count`, its keys say otherwise."""
    plan = copy.deepcopy(plan)
    for w in ("props", "outputs"):
        resource(plan, "index:Dns")[w]["zones"][0]["liveRecordCount"] = count
    return plan


def mx_record(plan):
    return next(r for r in plan["resources"] if r["type"].endswith("DnsRecord") and r["props"]["type"] == "MX")


def set_mx(plan, field, value):
    plan = copy.deepcopy(plan)
    for w in ("props", "outputs"):
        mx_record(plan)[w][field] = value
    return plan


def add_primary_mx(plan):
    plan = copy.deepcopy(plan)
    extra = copy.deepcopy(mx_record(plan))
    extra["name"], extra["urn"] = "primary-mx", extra["urn"] + "-primary"
    for w in ("props", "outputs"):
        extra[w]["content"] = "mail.viktorbarzin.me"
        extra[w]["priority"] = 1
    plan["resources"].append(extra)
    return plan


def master_option(service, option):
    def edit(text):
        return "\n".join(ln + f"\n  -o {option}" if ln.startswith(f"{service} ") else ln
                         for ln in text.splitlines()) + "\n"
    return edit


TRANSPORT = "/transport"
# Every policy that judges the relay's Postfix config: all fail closed on a config they cannot determine.
MAIL_POLICIES = {"never-5xx", "queue-lifetime", "bounce-lifetime", "drain-port", "relay-domains",
                 "relay-mynetworks", "smtp-smuggling", "postfix-parameters"}
UNKNOWN = program.UNKNOWN  # the engine's unknown-string sentinel, as a preview sends it


def assert_reported_only(policies, plan, mutate, policy):
    """`mutate(plan)` is reported by `policy` (a name or a set of names), mandatory, and by no other."""
    expected = policy if isinstance(policy, set) else {policy}
    violations = policies.check(mutate(plan))
    assert reported(violations) == expected, [v.message for v in violations]
    assert all(v.level == "mandatory" for v in violations if v.policy in expected
               and not v.message.startswith(DEFERRED))
    assert all(v.message for v in violations)


class FakeResourceArgs:
    """Enough of pulumi-policy's ResourceValidationArgs to call a resource policy's validate
    directly: its type, name and inputs, and no policy config."""

    def __init__(self, resource_type: str, props: dict, name: str = "resource"):
        self.resource_type, self.props, self.name = resource_type, props, name
        self.urn = f"urn:pulumi:test::backup-mx::{resource_type}::{name}"

    def get_config(self) -> dict:
        return {}


def judge_directly(policy, args) -> list[str]:
    """The messages a policy's validate reports for `args`, called as the analyzer calls it."""
    messages: list[str] = []
    policy.validate(args, lambda message, urn=None: messages.append(message))
    return messages
