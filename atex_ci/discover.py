"""Test discovery: an fmf tree and a context in, the plans and their tests out.

This module owns the rules that turn fmf nodes into ``Plan``/``Test``/``Phase``
objects exactly as ``tmt run discover`` selects them: which nodes are plans and
tests, plan selection by name, per-phase test selection (``test`` names,
``filter``, ``include``, ``exclude``, ``enabled``, ``manual``), tmt's defaults,
test order, multi-phase name prefixes and serial numbers.

The ``fmf`` library does everything fmf: reading files, inheritance and
``adjust``. The tree is read from disk once per call; each distinct context (the
caller's, or one merged with a plan's own ``context`` key) adjusts a copy of it.

Deliberately unsupported (each raises ``ConfigError`` rather than silently
selecting different tests than tmt would): discover methods other than ``fmf``,
remote repositories (``url``/``ref``), ``link``, ``modified-only``,
``adjust-tests``, per-name adjust rules in ``test``, imported plans,
``environment-file``, beakerlib-library and file requirements, and prepare or
finish methods other than ``install``/``shell``. See docs/discovery.md.

Run ``python -m atex_ci.discover ROOT [-c KEY=VALUE ...] [-p PLAN_REGEX ...]``
to print the selected test names, one per line, plan after plan.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atex_ci.duration import DEFAULT_DURATION, parse_duration
from atex_ci.errors import ConfigError
from atex_ci.model import Phase, Plan, Test

if TYPE_CHECKING:  # fmf is imported lazily: importing this module stays cheap
    import fmf

# tmt's defaults (tmt's "L1" and "L2" metadata specification).
DEFAULT_ORDER = 50
DEFAULT_FRAMEWORK = "shell"
#: tmt's test frameworks (tmt 1.78: shell and beakerlib).
FRAMEWORK_VALUES = ("shell", "beakerlib")
DEFAULT_RESULT = "respect"
# What tmt calls a plan when a tree has none at all: one fmf discover phase.
DEFAULT_PLAN_NAME = "/default/plan"
# tmt names phases without a ``name`` key "default-0", "default-1", ...
DEFAULT_PHASE_PREFIX = "default"

RESULT_VALUES = ("respect", "xfail", "pass", "info", "warn", "error", "fail", "custom", "restraint")
INSTALL_MISSING_VALUES = ("fail", "skip")

# Discover keys that change which tests tmt selects and that we do not
# implement: silently ignoring them would run other tests than tmt does.
UNSUPPORTED_DISCOVER_KEYS = {
    "url": "remote repositories are not supported yet; check the tests out next to the plan",
    "ref": "remote repositories and git refs are not supported yet",
    "link": "selecting tests by link is not supported",
    "modified-only": "selecting modified tests is not supported",
    "adjust-tests": "'adjust-tests' is not supported",
    "dist-git-source": "dist-git sources are not supported",
}
UNSUPPORTED_INSTALL_KEYS = ("copr", "directory", "exclude")


# --------------------------------------------------------------------------- context


def parse_context(context: Mapping[str, str | Sequence[str]] | None) -> dict[str, list[str]]:
    """Normalise a context to fmf's form: dimension -> list of values.

    A string value may be a comma-separated list, as tmt's ``-c arch=x86_64,ppc64``.
    """
    result: dict[str, list[str]] = {}
    for key, value in (context or {}).items():
        values = value.split(",") if isinstance(value, str) else [str(v) for v in value]
        if not str(key).strip() or not all(v.strip() for v in values):
            raise ConfigError(f"context dimension {key!r} has an empty value; use KEY=VALUE")
        result[str(key)] = values
    return result


def parse_context_options(options: Sequence[str]) -> dict[str, list[str]]:
    """Parse ``KEY=VALUE`` strings (the ``-c`` option of tmt and atex-ci)."""
    context: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise ConfigError(f"context {option!r} is not KEY=VALUE (e.g. distro=fedora-41)")
        context[key.strip()] = value
    return parse_context(context)


# --------------------------------------------------------------------------- the tree


class _Trees:
    """The fmf tree, read once, and one adjusted tree per context.

    ``adjust`` changes a tree in place, so a second context needs a pristine
    copy. Copying 500 nodes costs about as much as the rest of our work, so the
    copy is made only when the tree says a second context may be needed: some
    plan has its own ``context`` key. (Should an ``adjust`` rule add one, the tree
    is read again rather than giving wrong answers.)
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pristine: fmf.Tree | None = _load_tree(root)
        self._keep_pristine = any("context" in node.data for node in self._plan_nodes())
        self._adjusted: dict[tuple[tuple[str, tuple[str, ...]], ...], fmf.Tree] = {}

    def _plan_nodes(self) -> Iterator[fmf.Tree]:
        assert self._pristine is not None
        return (node for node in self._pristine.prune() if "execute" in node.data)

    def adjusted(self, context: Mapping[str, list[str]]) -> fmf.Tree:
        from fmf.context import Context

        key = tuple(sorted((k, tuple(v)) for k, v in context.items()))
        if key in self._adjusted:
            return self._adjusted[key]
        if self._pristine is None:
            tree = _load_tree(self.root)
        elif self._keep_pristine:
            tree = self._pristine.copy()
        else:
            tree, self._pristine = self._pristine, None
        try:
            # tmt compares context values case-insensitively
            tree.adjust(Context(**context), case_sensitive=False)
        except Exception as error:  # fmf raises several unrelated types here
            raise ConfigError(f"cannot apply 'adjust' rules in {self.root}: {error}") from None
        self._adjusted[key] = tree
        return tree


def _load_tree(root: Path) -> fmf.Tree:
    import fmf
    import fmf.utils

    if not root.is_dir():
        raise ConfigError(f"fmf root {root} does not exist or is not a directory")
    if not (root / ".fmf" / "version").is_file():
        raise ConfigError(
            f"{root} is not an fmf tree root (no .fmf/version file); create one with 'fmf init'"
        )
    try:
        return fmf.Tree(str(root))
    except fmf.utils.FileError as error:
        raise ConfigError(_one_line_fmf_error(error, root)) from None
    except fmf.utils.GeneralError as error:
        raise ConfigError(f"invalid fmf tree {root}: {_squash(str(error))}") from None


def _one_line_fmf_error(error: Exception, root: Path) -> str:
    """fmf's multi-line YAML error as one line naming the file and the position."""
    match = re.match(r"Failed to parse '(?P<file>[^']+)'", str(error))
    if not match:
        return f"invalid fmf tree {root}: {_squash(str(error))}"
    where = _relative(match["file"], root)
    cause = error.__context__  # the YAML parser's error, which fmf re-raises
    problem = getattr(cause, "problem", None)
    mark = getattr(cause, "problem_mark", None)
    if problem and mark is not None:
        where += f" line {mark.line + 1}, column {mark.column + 1}"
        return f"cannot parse {where}: {problem}"
    return f"cannot parse {where}: {_squash(str(cause or error))}"


def _squash(text: str) -> str:
    return " ".join(text.split())


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root.resolve()))
    except ValueError:
        return path


# --------------------------------------------------------------------------- plans


def discover(
    fmf_root: str | Path,
    plan_filters: Sequence[str] = (),
    context: Mapping[str, str] | None = None,
) -> list[Plan]:
    """The plans under ``fmf_root`` with the tests tmt would discover for them.

    ``plan_filters`` are regular expressions searched in plan names (tmt's
    ``plan --name``); every one must match some plan. ``context`` maps fmf
    context dimensions to values; a value may list several, comma-separated.
    Plans come in tmt's order (``order`` key, then name); tests in each plan in
    the order tmt would run them.

    Raises ConfigError for anything wrong in the tree or the arguments.
    """
    root = Path(fmf_root).absolute()
    cli_context = parse_context(context)
    patterns = _compile_all(plan_filters, "plan name")
    trees = _Trees(root)
    plan_nodes = _select_plans(trees.adjusted(cli_context), patterns, plan_filters, root)
    if plan_nodes is None:  # no plan in the whole tree: tmt's default plan
        phase = {"how": "fmf", "name": f"{DEFAULT_PHASE_PREFIX}-0"}
        return [_plan_tests(Plan(name=DEFAULT_PLAN_NAME), [phase], trees, cli_context)]
    return [_build_plan(node, trees, cli_context) for node in plan_nodes]


def _compile_all(patterns: Sequence[str], what: str, where: str = "") -> list[re.Pattern[str]]:
    prefix = f"{where}: " if where else ""
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f"{prefix}{what} pattern {pattern!r} must be a string")
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ConfigError(
                f"{prefix}invalid {what} regular expression {pattern!r}: {error}"
            ) from None
    return compiled


def _select_plans(
    tree: fmf.Tree,
    patterns: list[re.Pattern[str]],
    filters: Sequence[str],
    root: Path,
) -> list[fmf.Tree] | None:
    """Enabled plan nodes matching any pattern, in tmt's order; None if the tree has none."""
    # tmt: a plan is a leaf with an 'execute' key (or a 'plan' key: an imported plan).
    nodes = [node for node in tree.prune() if "execute" in node.data or "plan" in node.data]
    if not nodes:
        return None
    enabled = [node for node in nodes if node.data.get("enabled", True) is True]
    for pattern, text in zip(patterns, filters, strict=True):
        if not any(pattern.search(node.name) for node in enabled):
            names = ", ".join(node.name for node in enabled) or "none enabled"
            raise ConfigError(f"no plan matches {text!r}; plans in {root}: {names}")
    selected = [
        node for node in enabled if not patterns or any(p.search(node.name) for p in patterns)
    ]
    for node in selected:
        if "plan" in node.data:
            raise ConfigError(f"plan {node.name} imports a remote plan; that is not supported yet")
    return sorted(selected, key=lambda node: _order(node.data, f"plan {node.name}"))


def _build_plan(node: fmf.Tree, trees: _Trees, cli_context: dict[str, list[str]]) -> Plan:
    name: str = node.name
    data: dict[str, Any] = node.data
    if "environment-file" in data:
        raise ConfigError(
            f"plan {name}: 'environment-file' is not supported yet; use 'environment'"
        )
    _check_execute(name, data.get("execute"))
    # tmt: the plan's own context, overridden by the caller's.
    context = {**_plan_context(name, data.get("context")), **cli_context}
    plan = Plan(
        name=name,
        environment=_environment(data.get("environment"), f"plan {name}"),
        prepare=_phases(name, "prepare", data.get("prepare"), context),
        finish=_phases(name, "finish", data.get("finish"), context),
    )
    discover_phases = _raw_phases(name, "discover", data.get("discover"))
    if not discover_phases:
        raise ConfigError(
            f"plan {name} has no 'discover' step; add 'discover: {{how: fmf}}' to select its tests"
        )
    return _plan_tests(plan, discover_phases, trees, context)


#: The execute methods atex-ci runs tests as (tmt's default; tmt calls it the
#: internal executor).
EXECUTE_METHODS = ("tmt",)


def _check_execute(plan: str, raw: object) -> None:
    """Refuse an execute method atex-ci does not implement, instead of running
    the tests some other way than the plan asks."""
    for phase in raw if isinstance(raw, list) else [raw]:
        if phase is None:
            continue
        if not isinstance(phase, dict):
            raise ConfigError(f"plan {plan}: each 'execute' phase must be a mapping")
        how = phase.get("how", "tmt")
        if how not in EXECUTE_METHODS:
            raise ConfigError(
                f"plan {plan}: execute 'how: {how}' is not supported; atex-ci runs tests "
                f"as 'how: tmt' does"
            )


def _plan_context(plan: str, raw: object) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"plan {plan}: 'context' must be a mapping of dimension: value(s)")
    return {
        str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in raw.items()
    }


def _raw_phases(plan: str, step: str, raw: object) -> list[dict[str, Any]]:
    """A step's phases as dicts with ``name`` set (tmt's default-N), in tmt's order."""
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    phases: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ConfigError(f"plan {plan}: each '{step}' phase must be a mapping, got {item!r}")
        phases.append(dict(item))
    known = [str(p["name"]) for p in phases if p.get("name")]
    counter = 0
    for phase in phases:
        if phase.get("name") is None:
            while f"{DEFAULT_PHASE_PREFIX}-{counter}" in known:
                counter += 1
            phase["name"] = f"{DEFAULT_PHASE_PREFIX}-{counter}"
            known.append(phase["name"])
        phase["name"] = str(phase["name"])
        phase.setdefault("how", "shell")  # tmt's default method for every step we read
        _order(phase, f"plan {plan}: {step} phase {phase['name']!r}")
    return sorted(phases, key=lambda p: _order(p, ""))


def _enabled_by_when(phase: Mapping[str, Any], context: Mapping[str, list[str]]) -> bool:
    """tmt: a phase with ``when`` rules runs if any rule matches; undecidable rules do not."""
    from fmf.context import CannotDecide, Context

    rules = phase.get("when")
    if not rules:
        return True
    fmf_context = Context(**context)
    for rule in rules if isinstance(rules, list) else [rules]:
        try:
            if fmf_context.matches(rule):
                return True
        except CannotDecide:
            continue
        except Exception as error:
            raise ConfigError(f"invalid 'when' rule {rule!r}: {error}") from None
    return False


def _phases(plan: str, step: str, raw: object, context: Mapping[str, list[str]]) -> list[Phase]:
    result = []
    for phase in _raw_phases(plan, step, raw):
        where = f"plan {plan}: {step} phase {phase['name']!r}"
        if not _enabled_by_when(phase, context):
            continue
        how = phase["how"]
        if how == "shell":
            script = _string_list(phase.get("script"), f"{where}: 'script'")
            if not script:
                raise ConfigError(f"{where}: 'how: shell' needs a 'script'")
            result.append(
                Phase(how="shell", name=phase["name"], script=script, order=_order(phase, where))
            )
        elif how == "install" and step == "prepare":
            for key in UNSUPPORTED_INSTALL_KEYS:
                if key in phase:
                    raise ConfigError(f"{where}: install '{key}' is not supported yet")
            missing = phase.get("missing", "fail")
            if missing not in INSTALL_MISSING_VALUES:
                raise ConfigError(f"{where}: 'missing' must be 'fail' or 'skip', not {missing!r}")
            result.append(
                Phase(
                    how="install",
                    name=phase["name"],
                    package=_string_list(phase.get("package"), f"{where}: 'package'"),
                    missing=missing,
                    order=_order(phase, where),
                )
            )
        else:
            supported = "install or shell" if step == "prepare" else "shell"
            raise ConfigError(
                f"{where}: 'how: {how}' is not supported; atex-ci runs {step} phases with "
                f"how: {supported}"
            )
    return result


# --------------------------------------------------------------------------- tests


@dataclass
class _Phase:
    """One ``discover: how: fmf`` phase, validated."""

    name: str
    tree_path: str  # "" for the plan's own fmf root, else a directory relative to it
    names: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    includes: list[re.Pattern[str]] = field(default_factory=list)
    excludes: list[re.Pattern[str]] = field(default_factory=list)


def _plan_tests(
    plan: Plan,
    raw_phases: list[dict[str, Any]],
    trees: _Trees,
    context: dict[str, list[str]],
) -> Plan:
    phases = [_discover_phase(plan.name, raw, trees.root) for raw in raw_phases]
    # tmt prefixes test names with '/<phase name>' when the step has several phases
    # (counting phases disabled by 'when' too).
    several = len(phases) > 1
    serial = 0
    subtrees: dict[str, _Trees] = {}
    for phase, raw in zip(phases, raw_phases, strict=True):
        if not _enabled_by_when(raw, context):
            continue
        if phase.tree_path:
            if phase.tree_path not in subtrees:
                subtrees[phase.tree_path] = _Trees(trees.root / phase.tree_path)
            tree = subtrees[phase.tree_path].adjusted(context)
        else:
            tree = trees.adjusted(context)
        for node, metadata in _select_tests(tree, phase):
            serial += 1
            name = f"/{phase.name}{node.name}" if several else node.name
            plan.tests.append(_make_test(node, metadata, name, plan.name, serial, phase.tree_path))
    return plan


def _discover_phase(plan: str, raw: dict[str, Any], root: Path) -> _Phase:
    where = f"plan {plan}: discover phase {raw['name']!r}"
    if raw["how"] != "fmf":
        raise ConfigError(
            f"{where}: 'how: {raw['how']}' is not supported; atex-ci only discovers tests "
            "with 'how: fmf' (select other plans with a plan filter)"
        )
    for key, why in UNSUPPORTED_DISCOVER_KEYS.items():
        if raw.get(key):
            raise ConfigError(f"{where}: {why}")
    names = []
    for item in _as_list(raw.get("test")):
        if isinstance(item, dict):
            if set(item) - {"name"}:
                raise ConfigError(f"{where}: adjust rules in 'test' are not supported")
            item = item.get("name")
        if not isinstance(item, str):
            raise ConfigError(f"{where}: 'test' entries must be strings, got {item!r}")
        names.append(item)
    _compile_all(names, "test name", where)
    filters = _string_list(raw.get("filter"), f"{where}: 'filter'")
    includes = _string_list(raw.get("include"), f"{where}: 'include'")
    excludes = _string_list(raw.get("exclude"), f"{where}: 'exclude'")
    return _Phase(
        name=raw["name"],
        tree_path=_discover_path(raw.get("path"), root, where),
        names=names,
        filters=filters,
        includes=_compile_all(includes, "include", where),
        excludes=_compile_all(excludes, "exclude", where),
    )


def _discover_path(raw: object, root: Path, where: str) -> str:
    """The phase's ``path`` (another fmf tree root) relative to the plan's root."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: 'path' must be a string")
    relative = Path(raw.strip("/")) if raw.strip("/") else Path()
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ConfigError(f"{where}: 'path' {raw!r} is outside the fmf root {root}")
    if not (target / ".fmf").is_dir():
        raise ConfigError(f"{where}: 'path' {raw!r} is not an fmf tree root (no .fmf in it)")
    return "" if relative == Path() else relative.as_posix()


def _select_tests(tree: fmf.Tree, phase: _Phase) -> Iterator[tuple[fmf.Tree, dict[str, Any]]]:
    """tmt's selection for one phase: names, then filters, manual, include/exclude, enabled."""
    import fmf.utils

    # Each name regex selects its tests in tmt's order; the lists are concatenated,
    # so a test matched by two names runs twice (tmt's documented behaviour).
    groups = [[n] for n in phase.names] if phase.names else [[]]
    candidates: list[tuple[fmf.Tree, dict[str, Any]]] = []
    for names in groups:
        nodes = [(node, _metadata(node)) for node in tree.prune(keys=["test"], names=names)]
        candidates.extend(sorted(nodes, key=lambda pair: pair[1]["order"]))
    for node, metadata in candidates:
        filter_vars = dict(metadata)
        for key, value in metadata.items():
            if isinstance(value, bool):  # tmt lets 'enabled: true' match a boolean
                filter_vars[key] = [value, str(value).lower()]
        try:
            if not all(fmf.utils.filter(f, filter_vars, regexp=True) for f in phase.filters):
                continue
        except fmf.utils.FilterError:
            continue  # tmt: a filter on a key the test lacks does not match
        except Exception as error:
            raise ConfigError(f"invalid discover filter {phase.filters!r}: {error}") from None
        if metadata["manual"] is not False or metadata["enabled"] is not True:
            continue
        if any(p.search(node.name) for p in phase.excludes):
            continue
        if phase.includes and not any(p.search(node.name) for p in phase.includes):
            continue
        yield node, metadata


def _metadata(node: fmf.Tree) -> dict[str, Any]:
    """The node's data with tmt's defaults and normalisation, checked (tmt's filter input)."""
    name: str = node.name
    data: dict[str, Any] = dict(node.data)
    where = f"test {name} ({_source(node)})"
    test = data.get("test")
    if test is None:
        raise ConfigError(f"{where}: the 'test' key is empty; set the command to run")
    if not isinstance(test, str):
        hint = ""
        if isinstance(test, bool):
            hint = f" (an unquoted {str(test).lower()} is a YAML boolean: quote the command)"
        raise ConfigError(f"{where}: 'test' must be a string, '{type(test).__name__}' found{hint}")
    if not test.strip():
        raise ConfigError(f"{where}: the 'test' key is empty; set the command to run")
    metadata = {
        **data,
        "name": name,
        "summary": data.get("summary"),
        "description": data.get("description"),
        "id": data.get("id"),
        "author": _string_list(data.get("author"), f"{where}: 'author'"),
        "contact": _string_list(data.get("contact"), f"{where}: 'contact'"),
        "component": _string_list(data.get("component"), f"{where}: 'component'"),
        "tag": _string_list(data.get("tag"), f"{where}: 'tag'"),
        "tier": None if data.get("tier") is None else str(data["tier"]),
        "link": data.get("link") or [],
        "order": _order(data, where),
        "enabled": data.get("enabled", True),
        "test": test,
        "path": _test_path(node, data.get("path"), where),
        "framework": data.get("framework", DEFAULT_FRAMEWORK),
        "manual": data.get("manual", False),
        "tty": data.get("tty", False),
        "require": _requirements(data.get("require"), f"{where}: 'require'"),
        "recommend": _requirements(data.get("recommend"), f"{where}: 'recommend'"),
        "environment": _environment(data.get("environment"), where),
        "duration": data.get("duration", DEFAULT_DURATION),
        "result": data.get("result", DEFAULT_RESULT),
        "where": data.get("where") or [],
        "check": data.get("check") or [],
    }
    if not isinstance(metadata["framework"], str):
        raise ConfigError(f"{where}: 'framework' must be a string")
    if metadata["framework"] not in FRAMEWORK_VALUES:
        # Run some other way than asked, the test's verdict would mean nothing.
        raise ConfigError(
            f"{where}: 'framework' must be one of {', '.join(FRAMEWORK_VALUES)}, "
            f"not {metadata['framework']!r}"
        )
    if metadata["result"] not in RESULT_VALUES:
        raise ConfigError(
            f"{where}: 'result' must be one of {', '.join(RESULT_VALUES)}, "
            f"not {metadata['result']!r}"
        )
    if not isinstance(metadata["tty"], bool):
        raise ConfigError(f"{where}: 'tty' must be true or false")
    return metadata


def _make_test(
    node: fmf.Tree,
    metadata: dict[str, Any],
    name: str,
    plan: str,
    serial: int,
    tree_path: str,
) -> Test:
    try:
        duration = parse_duration(metadata["duration"])
    except ValueError as error:
        raise ConfigError(f"test {node.name} ({_source(node)}): {error}") from None
    path = metadata["path"].strip("/")
    if tree_path:
        path = f"{tree_path}/{path}" if path else tree_path
    return Test(
        name=name,
        plan=plan,
        test=metadata["test"],
        path=path or ".",
        duration=duration,
        environment=metadata["environment"],
        framework=metadata["framework"],
        require=metadata["require"],
        recommend=metadata["recommend"],
        result=metadata["result"],
        tty=metadata["tty"],
        serial_number=serial,
        data=_json_safe(node.data),
    )


def _test_path(node: fmf.Tree, raw: object, where: str) -> str:
    """tmt: the ``path`` key, else the directory of the file defining the node.

    Either way it is relative to the fmf root, with or without a leading slash.
    """
    if raw is not None:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: 'path' must be a string")
        return "/" + raw.strip("/")
    return "/" + os.path.dirname(_source(node))


def _source(node: fmf.Tree) -> str:
    """The file defining the node, relative to the fmf root (cheap: called per test)."""
    sources: list[str] = node.sources
    if not sources:
        return node.name
    root: str = node.root.rstrip("/") + "/"
    return sources[-1][len(root) :] if sources[-1].startswith(root) else sources[-1]


# --------------------------------------------------------------------------- values


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _string_list(value: object, where: str) -> list[str]:
    items = _as_list(value)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where} must be a string or a list of strings, got {value!r}")
    return items


def _requirements(value: object, where: str) -> list[str]:
    """Package names, de-duplicated in their listed order."""
    packages: list[str] = []
    for item in _as_list(value):
        if isinstance(item, dict):
            raise ConfigError(
                f"{where}: beakerlib libraries and file requirements ({item!r}) are not "
                "supported yet; list package names only"
            )
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{where} must be package names, got {item!r}")
        if item not in packages:
            packages.append(item)
    return packages


def _environment(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'environment' must be a mapping of NAME: value")
    environment = {}
    for key, item in value.items():
        if isinstance(item, dict | list):
            raise ConfigError(f"{where}: environment variable {key} must be a plain value")
        environment[str(key)] = "" if item is None else str(item)
    return environment


def _order(data: Mapping[str, Any], where: str) -> int:
    value = data.get("order", DEFAULT_ORDER)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: 'order' must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{where}: 'order' must be an integer, got {value!r}") from None


def _json_safe(value: object) -> Any:
    """fmf data as JSON-serialisable values: anything else becomes its str()."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Print the selected test names, one per line (used by benchmarks/discovery.py)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m atex_ci.discover", description="List the tests tmt would discover."
    )
    parser.add_argument("root", help="fmf tree root")
    parser.add_argument("-p", "--plan", action="append", default=[], help="plan name regex")
    parser.add_argument("-c", "--context", action="append", default=[], help="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        context = {k: ",".join(v) for k, v in parse_context_options(args.context).items()}
        plans = discover(args.root, args.plan, context)
    except ConfigError as error:
        print(f"atex-ci: {error}", file=sys.stderr)
        return error.exit_code
    for plan in plans:
        for test in plan.tests:
            print(test.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
