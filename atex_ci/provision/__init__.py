"""Provisioners: local slots, static SSH hosts (and, later, Testing Farm)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Provisioner


def get_provisioner(kind: str) -> Provisioner:
    """The provisioner that manages machines recorded with ``provisioner: kind``."""
    if kind == "local":
        from .local import LocalProvisioner

        return LocalProvisioner()
    if kind == "static":
        from .static import StaticProvisioner

        return StaticProvisioner()
    raise ConfigError(f"unknown provisioner {kind!r} in machines.json")
