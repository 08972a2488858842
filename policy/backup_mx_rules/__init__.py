"""The backup-MX policy pack's policies, importable without starting the analyzer."""
from .dns import (
    dns_records,
    mx_preference,
    relay_a_record,
    relay_a_unproxied,
    zone_record_budget,
    zone_record_headroom,
)
from .mail import (
    bounce_lifetime,
    drain_port,
    never_5xx,
    queue_lifetime,
    relay_domains,
    relay_mynetworks,
    smtp_smuggling,
)
from .mtasts import mta_sts, mta_sts_live_record
from .network import (
    always_free,
    no_silent_replace,
    relay_fault_domains,
    reserved_public_ip,
    security_list,
    vm_not_in_mynetworks,
)
from .parameters import postfix_parameters
from .reachability import reachability
from .resources import modeled_resources, relay_instance_inputs
from .tunnel import wireguard_tunnel
from .userdata import free_tier_keepalive, relay_user_data

PACK_NAME = "backup-mx-invariants"
POLICIES = [
    # The five invariants the owner named.
    never_5xx, bounce_lifetime, queue_lifetime, vm_not_in_mynetworks, zone_record_budget,
    # Guards a real deployment also needs.
    relay_mynetworks, zone_record_headroom, mx_preference, relay_a_record, relay_a_unproxied, reserved_public_ip,
    always_free, security_list, drain_port, relay_domains, no_silent_replace, wireguard_tunnel,
    relay_fault_domains, mta_sts, mta_sts_live_record, smtp_smuggling, relay_user_data, free_tier_keepalive,
    postfix_parameters, modeled_resources, relay_instance_inputs, dns_records, reachability,
]
