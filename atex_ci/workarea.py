"""Where a run's work directories are, and the one check of every id and work
directory read from a run directory before atex-ci uses it.

On a machine reached over SSH a run works in ``<root>/<run id>/<machine id>``;
``<root>`` is ``/var/tmp/atex-ci`` for root and ``/var/tmp/atex-ci-<user>``
for any other user, so a user never needs to write into a directory another
user (root, a run before) made. Local slots work in ``RUN/work/<machine id>``.

A run directory is data from outside (downloaded artifacts, a merged shard,
a hand edit): a run id of ``../escape`` or a machine whose recorded work
directory is ``/var/tmp/victim`` must never make atex-ci write to or delete
anything outside its work area. Every id is therefore a plain path component
(``check_id``), and a recorded work directory must be exactly where atex-ci
would have put it (``check_machine``); both raise a one-line ConfigError.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError
from .model import Machine
from .pathnames import COMPONENT_MAX_BYTES, component

#: The work area of root on a machine; other users get ``WORK_ROOT-<user>``.
WORK_ROOT = "/var/tmp/atex-ci"
#: The user whose work area is WORK_ROOT itself.
ROOT_USER = "root"

#: A run id, a machine id or a user name: one path component that can never
#: be ``.``/``..``, hold a ``/`` or start with ``-`` or ``.``. ``:`` is kept for
#: IPv6 hosts in machine ids (machines are Linux); ``~`` for hashed names.
_ID = re.compile(r"[A-Za-z0-9_+@=~][A-Za-z0-9._+@=~:-]*")


def is_valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value.encode("utf-8", "surrogatepass")) <= COMPONENT_MAX_BYTES
        and _ID.fullmatch(value) is not None
    )


def check_id(what: str, value: object) -> str:
    """``value`` if it is a valid id; a one-line ConfigError naming ``what`` if not."""
    if not is_valid_id(value):
        raise ConfigError(
            f"{what} {value!r} is not a valid id (letters, digits and ._+@=~:- only, "
            f"at most {COMPONENT_MAX_BYTES} bytes, not starting with . or -); "
            "refusing to use it in a path"
        )
    assert isinstance(value, str)
    return value


def safe_id(text: str) -> str:
    """``text`` as a valid id: itself if it is one, else its ``pathnames``
    component (a leading ``-``, ``.`` is replaced). Callers that need ids
    to be unique make them so (``Provisioner._unique_id``)."""
    if is_valid_id(text):
        return text
    mapped = component(text)
    return mapped if is_valid_id(mapped) else f"_{mapped[1:]}"


def remote_root(user: str) -> str:
    """The work area of ``user`` on a machine (all of that user's runs)."""
    if user == ROOT_USER:
        return WORK_ROOT
    return f"{WORK_ROOT}-{check_id('user', user)}"


def remote_work_dir(user: str, run_id: str, machine_id: str) -> str:
    """The work directory of one run on one machine reached as ``user``."""
    run = check_id("run id", run_id)
    return f"{remote_root(user)}/{run}/{check_id('machine id', machine_id)}"


def local_work_dir(run_path: Path, machine_id: str) -> Path:
    """A local slot's work directory, inside the run directory."""
    return run_path / "work" / check_id("machine id", machine_id)


def area_root(work_dir: str) -> str | None:
    """The work area a remote work directory is in (to check its owner before
    use), or None when it is not in one (a provisioner's own layout)."""
    parts = work_dir.rstrip("/").split("/")
    if len(parts) < 3:
        return None
    root = "/".join(parts[:-2])
    if root == WORK_ROOT or root.startswith(f"{WORK_ROOT}-"):
        return root
    return None


def check_machine(machine: Machine, where: str) -> None:
    """Refuse a machine record (from ``where``, machines.json) whose id, user or
    recorded work directory atex-ci would not have written: one line naming
    the machine and what is wrong."""
    check_id(f"{where}: machine id", machine.id)
    if machine.is_local or machine.workdir is None:
        # Local slots: the work directory is always RUN/work/<id>, never the
        # recorded one (which is kept only for people to read).
        return
    try:
        root = remote_root(machine.user)
    except ConfigError as exc:
        raise ConfigError(f"{where}: machine {machine.id}: {exc}") from None
    # WORK_ROOT itself for any user: what versions before per-user areas recorded.
    if not any(_is_work_dir(machine.workdir, r, machine.id) for r in {root, WORK_ROOT}):
        raise ConfigError(
            f"{where}: machine {machine.id}: work directory {machine.workdir!r} is not "
            f"{root}/<run id>/{machine.id}; refusing to touch it"
        )


def _is_work_dir(path: str, root: str, machine_id: str) -> bool:
    """Whether ``path`` is ``root/<valid run id>/<machine_id>`` exactly."""
    parts = path.split("/")
    return (
        path.startswith(f"{root}/")
        and len(parts) == root.count("/") + 3
        and is_valid_id(parts[-2])
        and parts[-1] == machine_id
    )


__all__ = [
    "WORK_ROOT",
    "area_root",
    "check_id",
    "check_machine",
    "is_valid_id",
    "local_work_dir",
    "remote_root",
    "remote_work_dir",
    "safe_id",
]
