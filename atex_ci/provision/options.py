"""The reservation options: what ``reserve`` and ``run`` take to say which machines
to reserve, gathered from the provisioners that declare them, and what they ask for.

Each provisioner class declares its own options (``Provisioner.options()``);
``reservation_options(spec)`` lists them all in the order ``--help`` shows
them: the existing hosts' (static.py), the shared ones (``--platform``,
``--provisioner``, ``-o``, ``--count``), every built-in ``--provisioner``
kind's, and those of the ``module:Class`` that ``spec`` names, if any.
``Reservation`` checks their values (before any run directory is made) and
turns them into provisioners; the ``--provisioner`` one's recipe goes to
run.json (``Reservation.record``), never a secret.

The command line gives a class of your own with ``--provisioner module:Class``,
and its options are only known once that class is loaded: ``provisioner_spec``
finds the spec among the arguments before they are parsed (atex_ci/cli.py).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import environ_secrets
from ..errors import ConfigError
from ..recorder import Recorder

if TYPE_CHECKING:
    import click

    from ..rundir import RunDir
    from .base import Provisioner, Recipe

#: The option that names the provisioner, as ``provisioner_spec`` finds it.
PROVISIONER_OPTION = "--provisioner"


def key_values(option: str, items: tuple[str, ...], *, from_env: bool = False) -> dict[str, str]:
    """KEY=VALUE options as a dict; with ``from_env`` a bare KEY takes $KEY's value."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep and from_env and key:
            environ_secrets.take([key])  # a secret: out of the environment, like the token
            found = environ_secrets.get(key)
            if found is None:
                raise ConfigError(f"{option} {key}: the environment variable {key} is not set")
            value = found
        elif not sep or not key:
            raise ConfigError(f"invalid {option} {item!r}: expected KEY=VALUE")
        values[key] = value
    return values


def provisioner_spec(args: list[str]) -> str | None:
    """The last ``--provisioner`` value among command-line ``args`` (as click
    takes the last), found before parsing so that a class's own options can
    be added to the command (and its ``--help``)."""
    spec = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == PROVISIONER_OPTION and i + 1 < len(args):
            spec = args[i + 1]
        elif arg.startswith(PROVISIONER_OPTION + "="):
            spec = arg.partition("=")[2]
    return spec


def _shared_options() -> list[click.Option]:
    import click

    return [
        click.Option(
            ["--platform"],
            default=None,
            help="Platform the machines provide (default: 'default'). Every test runs once per "
            "platform; machines of one platform share its tests.",
        ),
        click.Option(
            [PROVISIONER_OPTION, "provisioner_name"],
            metavar="testing-farm|MODULE:CLASS",
            help="Reserve through a provisioner: 'testing-farm', or your own Provisioner "
            "subclass (whose own options are then taken too).",
        ),
        click.Option(
            ["-o", "--option", "provisioner_options"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Keyword argument for your own provisioner class (repeatable; recorded in "
            "run.json, so never a secret).",
        ),
        click.Option(
            ["--count"],
            type=click.IntRange(min=1),
            help="Machines to reserve with --provisioner, in parallel (default: 1).",
        ),
    ]


def _builtin_kinds() -> dict[str, type[Provisioner]]:
    """The built-in ``--provisioner`` kinds and their classes: not local slots
    (each command has its own ``--local``) nor existing hosts (``--host`` and
    ``--hosts`` choose them, and their options are always there)."""
    from . import BUILTIN, provisioner_class

    return {kind: provisioner_class(kind) for kind in BUILTIN if kind not in ("local", "static")}


def reservation_options(spec: str | None = None) -> list[click.Option]:
    """Every reservation option, with those of the class ``spec`` names when it
    is a ``module:Class`` (ConfigError if it cannot be loaded, or declares an
    option that is already taken)."""
    from .static import StaticProvisioner

    options = StaticProvisioner.options() + _shared_options()
    for cls in _builtin_kinds().values():
        options += cls.options()
    if spec is not None and ":" in spec:
        from . import provisioner_class

        taken = {name for o in options for name in [o.name, *o.opts, *o.secondary_opts]}
        for option in provisioner_class(spec).options():
            clash = {option.name, *option.opts, *option.secondary_opts} & taken
            if clash:
                raise ConfigError(
                    f"provisioner {spec} declares option {sorted(clash, key=str)[0]}, "
                    "which atex-ci already has; give it another name"
                )
            options.append(option)
    return options


def _declared_names(cls: type[Provisioner]) -> list[str]:
    return [str(option.name) for option in cls.options()]


def _given(option: click.Option, value: Any) -> bool:
    """Whether an option was given. One with a default of its own (--arch) is
    not: its value is always there."""
    has_default = isinstance(option.default, (str, int, float)) and option.default is not False
    return not has_default and value not in (None, (), False)


class Reservation:
    """What the reservation options ask for; every value is checked when it is
    made, before any run directory is created."""

    def __init__(self, local: int | None, options: dict[str, Any]) -> None:
        """``options``: the values of ``reservation_options`` as click passes them."""
        from .static import HostSpec

        values = dict(options)
        hosts: tuple[str, ...] = values.pop("hosts")
        inventory: Path | None = values.pop("inventory")
        skip_unreachable: bool = values.pop("skip_unreachable")
        key: Path | None = values.pop("key")
        platform: str | None = values.pop("platform")
        name: str | None = values.pop("provisioner_name")
        pairs: tuple[str, ...] = values.pop("provisioner_options")
        count: int | None = values.pop("count")

        builtin = _builtin_kinds()
        if name is not None and (hosts or inventory or local):
            raise ConfigError("--provisioner cannot be combined with --host, --hosts or --local")
        for kind, cls in builtin.items():
            for option in cls.options():
                if kind != name and _given(option, values.get(str(option.name))):
                    raise ConfigError(f"{option.opts[0]} needs --provisioner {kind}")
        if pairs and (name is None or name in builtin):
            raise ConfigError(
                "-o/--option is for your own provisioner (--provisioner module:Class)"
            )
        if count is not None and name is None:
            raise ConfigError("--count is for --provisioner; use --local N for local slots")
        if skip_unreachable and not (hosts or inventory):
            raise ConfigError("--skip-unreachable needs --host or --hosts")
        self.local = local
        self.platform = platform or "default"
        self.provisioner_name = name
        self.count = count
        self.key = key
        self.skip_unreachable = skip_unreachable
        self.specs = [HostSpec.parse(h) for h in hosts]
        if inventory is not None:
            from .inventory import load_inventory

            self.specs += load_inventory(inventory)
        self.recipe: Recipe | None = None
        if name is not None:
            self._make_recipe(name, pairs, values)

    def _make_recipe(self, name: str, pairs: tuple[str, ...], values: dict[str, Any]) -> None:
        from . import provisioner_class

        self.cls = provisioner_class(name)
        own = {n: values.get(n) for n in _declared_names(self.cls)}
        self.recipe = self.cls.recipe_from_options(
            name, self.platform, own, key_values("-o/--option", pairs)
        )
        try:
            inspect.signature(self.cls).bind(None, self.platform, **self.recipe.kwargs())
        except TypeError as exc:  # a class of your own that does not take these options
            raise ConfigError(f"cannot create provisioner {name}: {exc}") from None

    @classmethod
    def for_run(cls, local: int | None, options: dict[str, Any]) -> Reservation:
        """``run``'s: ``--local`` alone is the slots to use when nothing is
        reserved (no reservation); beside other machines, more of them."""
        others = options["hosts"] or options["inventory"] or options["provisioner_name"]
        return cls(local if others else None, options)

    @property
    def given(self) -> bool:
        """Whether any machine was asked for (local slots included)."""
        return bool(self.provisioner_name or self.specs or self.local)

    def sources(self, rundir: RunDir, default_local: bool) -> list[tuple[Provisioner, int]]:
        """The provisioners to reserve from, with how many machines each; local
        slots (one per CPU) when nothing else was asked for and ``default_local``."""
        from .local import LocalProvisioner, default_slots
        from .static import StaticProvisioner

        jobs: list[tuple[Provisioner, int]] = []
        if self.recipe is not None:
            try:
                provisioner = self.cls(rundir, self.platform, **self.recipe.kwargs())
            except TypeError as exc:  # a class of your own that does not take these options
                raise ConfigError(
                    f"cannot create provisioner {self.provisioner_name}: {exc}"
                ) from None
            jobs.append((provisioner, self.count or 1))
        if self.specs:
            key = str(self.key) if self.key else None
            static = StaticProvisioner(
                rundir, self.platform, self.specs, key, skip_unreachable=self.skip_unreachable
            )
            jobs.append((static, len(self.specs)))
        if self.local or (default_local and not jobs):
            jobs.append((LocalProvisioner(rundir, self.platform), self.local or default_slots()))
        return jobs

    def record(self, rundir: RunDir) -> None:
        """Put --provisioner's recipe in run.json (hold the lock), where a later
        command finds it again; one class of your own per run directory."""
        if self.recipe is None:
            return
        recorded = self.cls.write_recipe(self.recipe)
        current = rundir.read_run().get("provisioner")
        kind = str(current.get("kind")) if isinstance(current, dict) else ""
        if ":" in kind and kind != recorded["kind"]:
            if ":" in recorded["kind"]:
                raise ConfigError(
                    f"{rundir.path} already has machines of {kind}; "
                    "use another run directory for another provisioner class"
                )
            return  # keep the options the other class needs to release its machines
        Recorder(rundir).run_info(provisioner=recorded)


__all__ = ["Reservation", "key_values", "provisioner_spec", "reservation_options"]
