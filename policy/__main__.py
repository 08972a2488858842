"""Entry point the Pulumi CLI runs (`python -m pulumi.policy <engine> policy`): only builds the pack."""
from pulumi_policy import EnforcementLevel, PolicyPack

from backup_mx_rules import PACK_NAME, POLICIES

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
