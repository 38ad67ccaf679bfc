"""Host inventory files (``reserve --hosts FILE``): a fleet of existing machines.

The file is YAML or JSON (JSON is YAML too), loaded with the limits of
``untrusted_yaml``: a list of hosts, each a mapping with ``host`` (required)
and optional ``port`` (22), ``user`` (root), ``key`` (path of a private key;
relative paths are relative to the file's directory) and ``platform``. A
bare string ``[user@]host[:port]`` is accepted as a host too::

    - host: test1.example.com
      platform: c9s
    - host: 192.0.2.7
      port: 2222
      user: ci
      key: keys/fleet
    - root@test3.example.com
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import untrusted_yaml
from ..errors import ConfigError
from .static import HostSpec

#: An inventory is a list of hosts a person maintains; a megabyte is far more
#: than any fleet and keeps a wrong file (a log, a binary) from costing much.
MAX_INVENTORY_BYTES = 1024 * 1024

_KEYS = {"host", "port", "user", "key", "platform"}


def load_inventory(path: Path) -> list[HostSpec]:
    """Read an inventory file; ConfigError naming the file and the bad entry."""
    try:
        data = untrusted_yaml.read_file(path, max_bytes=MAX_INVENTORY_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read the inventory {path}: {exc.strerror}") from None
    except untrusted_yaml.UntrustedYAMLError as exc:
        raise ConfigError(f"inventory {path} is not valid YAML or JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("hosts"), list):
        data = data["hosts"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"inventory {path} must be a non-empty list of hosts")
    return [_entry(path, i, item) for i, item in enumerate(data, 1)]


def _entry(path: Path, number: int, item: Any) -> HostSpec:
    where = f"inventory {path}, host #{number}"
    if isinstance(item, str):
        try:
            return HostSpec.parse(item)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with 'host' or a [user@]host[:port] string")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}"
        )
    host = item.get("host")
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
        raise ConfigError(f"{where}: 'host' must be a host name or address")
    port = item.get("port", 22)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: 'port' must be a number from 1 to 65535")
    strings = {}
    for name in ("user", "key", "platform"):
        value = item.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where}: {name!r} must be a non-empty string")
        strings[name] = value.strip() if isinstance(value, str) else None
    key = strings["key"]
    if key is not None:
        key = str((path.parent / Path(key).expanduser()).resolve())
    return HostSpec(
        host=host.strip().strip("[]"),
        port=port,
        user=strings["user"] or "root",
        key=key,
        platform=strings["platform"],
    )
