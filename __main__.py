"""Backup MX: read the stack config once, build the component, export what the runbook uses."""
import pulumi

from components import settings
from components.backup_mx import BackupMx

config = pulumi.Config()
try:
    stack_settings = settings.load(pulumi.get_project(), config.get,
                                   preauth_key=config.require_secret("headscalePreauthKey"))
except settings.ConfigError as err:
    raise pulumi.RunError(str(err)) from None
backup_mx = BackupMx("backup-mx", stack_settings)
for name, value in backup_mx.outputs.items():
    pulumi.export(name, value)
