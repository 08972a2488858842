"""Backup MX: read the stack config once, build the component, export what the runbook uses."""
import pulumi
from pulumi.runtime import config as runtime_config

from components import settings
from components.backup_mx import BackupMx

config = pulumi.Config()
PREAUTH = f"{pulumi.get_project()}:headscalePreauthKey"
preauth = settings.PreauthKey(
    text=runtime_config.get_config(PREAUTH),
    secret=runtime_config.is_config_secret(PREAUTH) or PREAUTH in runtime_config.get_config_secret_keys_env())
try:
    stack_settings = settings.load(pulumi.get_project(), config.get, preauth=preauth,
                                   preauth_key=config.get_secret("headscalePreauthKey"))
except settings.ConfigError as err:
    raise pulumi.RunError(str(err)) from None
backup_mx = BackupMx("backup-mx", stack_settings)
for name, value in backup_mx.outputs.items():
    pulumi.export(name, value)
