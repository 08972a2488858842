"""Backup MX: read the stack config once, build the component, export what the runbook uses."""
import pulumi
from pulumi.runtime import config as runtime_config

from components import settings
from components.backup_mx import BackupMx

config = pulumi.Config()


def secret_config(key: str) -> settings.SecretConfig:
    """A secret key's text and whether the stack stores it encrypted (checked, never echoed),
    and the secret Output the renderers get."""
    full = f"{pulumi.get_project()}:{key}"
    return settings.SecretConfig(
        text=runtime_config.get_config(full),
        secret=runtime_config.is_config_secret(full) or full in runtime_config.get_config_secret_keys_env(),
        value=config.get_secret(key))


def stack_keys() -> list[str]:
    """The names the stack sets in this project's namespace (defaults merged by the CLI)."""
    prefix = f"{pulumi.get_project()}:"
    return [k[len(prefix):] for k in {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
            if k.startswith(prefix)]


try:
    stack_settings = settings.load(pulumi.get_project(), config.get, keys=stack_keys(),
                                   tailnet_key=secret_config("headscalePreauthKey"),
                                   tailnet_key_alias=secret_config("tailnetAuthKey"),
                                   wireguard_key=secret_config("wireguardPrivateKey"))
except settings.ConfigError as err:
    raise pulumi.RunError(str(err)) from None
backup_mx = BackupMx("backup-mx", stack_settings)
for name, value in backup_mx.outputs.items():
    pulumi.export(name, value)
