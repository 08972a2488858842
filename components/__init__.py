"""The backup-MX program's building blocks: settings, pure renderers, resource components."""
