"""Test discovery: an fmf tree and a context in, the plans and their tests out.

This module owns the rules that turn fmf nodes into ``Plan``/``Test``/``Phase``
objects exactly as ``tmt run discover`` selects them: which nodes are plans and
tests, plan selection by name, per-phase test selection (``test`` names,
``filter``, ``include``, ``exclude``, ``enabled``, ``manual``), tmt's defaults,
test order, multi-phase name prefixes and serial numbers.

The ``fmf`` library does everything fmf: reading files, inheritance and
``adjust``. The tree is read from disk once per call; each distinct context (the
caller's, or one merged with a plan's own ``context`` key) adjusts a copy of it.

Remote trees (a discover phase's ``url``/``ref``/``path``, ``plan: import``)
are fetched through ``remote_tree.GitCache`` once per run; their files are
uploaded with the tree under ``.atex-ci/trees/<commit>``. beakerlib libraries
are only parsed here (``libraries.parse_requirements``) and fetched later, by
``libraries.LibraryResolver``, so listing tests never clones a library.

Deliberately unsupported (each raises ``ConfigError`` naming the plan, the
phase or test and the key, rather than silently selecting different tests than
tmt would): ``link``, ``modified-only``, ``adjust-tests``, ``dist-git-source``,
per-name adjust rules in ``test``, and prepare or finish methods other than
``install``/``shell``/``ansible``. Only what a selected plan or test uses is
checked. See docs/discovery.md.

Run ``python -m atex_ci.discover ROOT [-c KEY=VALUE ...] [-p PLAN_REGEX ...] [--fetch]``
to print the selected test names, one per line, plan after plan.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atex_ci.duration import DEFAULT_DURATION, parse_duration
from atex_ci.errors import ConfigError
from atex_ci.libraries import STAGING_DIR, Library, parse_requirements
from atex_ci.metadata_keys import key_warnings
from atex_ci.model import Phase, Plan, Test

if TYPE_CHECKING:  # fmf is imported lazily: importing this module stays cheap
    import fmf

    from atex_ci.remote_tree import GitCache

log = logging.getLogger("atex_ci")

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
    "link": "selecting tests by 'link' is not supported; select them by name or filter",
    "modified-only": "'modified-only' is not supported; select the tests by name",
    "adjust-tests": "'adjust-tests' is not supported; put the change in the tests' own adjust",
    "dist-git-source": "'dist-git-source' is not supported; unpack the sources in a prepare step",
}
UNSUPPORTED_INSTALL_KEYS = ("directory", "exclude")
# tmt's defaults for tests defined in a plan (shell discovery, execute script).
SHELL_TEST_DURATION = "1h"
# Where tests from other repositories go in the uploaded tree.
REMOTE_TREES_DIR = f"{STAGING_DIR}/trees"


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


def split_platform_contexts(
    items: Sequence[str],
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``run -c``: ``KEY=VALUE`` (every platform) and ``PLATFORM:KEY=VALUE``
    (one platform's), apart; ConfigError if an item is neither."""
    context: dict[str, str] = {}
    per_platform: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        platform, colon, key = key.rpartition(":") if ":" in key else ("", "", key)
        if not sep or not key.strip() or (colon and not platform.strip()):
            raise ConfigError(
                f"invalid context {item!r}: expected KEY=VALUE or PLATFORM:KEY=VALUE,"
                " e.g. distro=fedora-41 or c9s:distro=centos-stream-9"
            )
        target = per_platform.setdefault(platform.strip(), {}) if colon else context
        target[key.strip()] = value.strip()
    return context, per_platform


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


class _Source:
    """An fmf tree tests come from: its directory on the controller and where
    its files are in the uploaded tree ("" for the main fmf root)."""

    def __init__(self, trees: _Trees, upload: str) -> None:
        self.trees = trees
        self.upload = upload

    @property
    def root(self) -> Path:
        return self.trees.root


class _Discovery:
    """The state of one ``discover`` call: the main tree and the other trees
    (sub-trees, remote repositories) read so far, each once."""

    def __init__(
        self,
        root: Path,
        cli_context: dict[str, list[str]],
        git: GitCache | None,
        warned: set[str] | None,
    ) -> None:
        self.cli_context = cli_context
        self.main = _Source(_Trees(root), "")
        self._sources: dict[Path, _Source] = {root: self.main}
        self._git = git
        self._warned = warned if warned is not None else set()

    def warn_keys(self, kind: str, node: fmf.Tree) -> None:
        """Warn once about each unknown key (a typo, say) of a test or plan node."""
        for line in key_warnings(kind, node.name, _source(node), node.data):
            if line not in self._warned:
                self._warned.add(line)
                log.warning("%s", line)

    def source(self, root: Path, upload: str) -> _Source:
        if root not in self._sources:
            self._sources[root] = _Source(_Trees(root), upload)
        return self._sources[root]

    def remote(
        self, url: object, ref: object, context: Mapping[str, list[str]], where: str
    ) -> tuple[Path, str]:
        """Fetch ``url`` at ``ref``: (its files on the controller, its upload path)."""
        from atex_ci.remote_tree import GitCache, resolve_dynamic_ref

        if not isinstance(url, str) or not url:
            raise ConfigError(f"{where}: 'url' must be a git repository URL")
        if ref is not None and not isinstance(ref, str):
            raise ConfigError(f"{where}: 'ref' must be a string (quote a numeric tag)")
        if self._git is None:
            self._git = GitCache()
        try:
            if ref and ref.startswith("@"):
                default = self._git.checkout(url, None)
                ref = resolve_dynamic_ref(default.path, ref, context, where)
            checkout = self._git.checkout(url, ref)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
        return checkout.path, f"{REMOTE_TREES_DIR}/{checkout.commit[:16]}"


def discover(
    fmf_root: str | Path,
    plan_filters: Sequence[str] = (),
    context: Mapping[str, str] | None = None,
    *,
    git: GitCache | None = None,
    warned: set[str] | None = None,
) -> list[Plan]:
    """The plans under ``fmf_root`` with the tests tmt would discover for them.

    ``plan_filters`` are regular expressions searched in plan names (tmt's
    ``plan --name``); every one must match some plan. ``context`` maps fmf
    context dimensions to values; a value may list several, comma-separated.
    Plans come in tmt's order (``order`` key, then name); tests in each plan in
    the order tmt would run them. ``git`` fetches remote trees (default: a
    new ``GitCache`` on the user's cache directory, only if a plan needs one).
    ``warned``: warnings already shown (unknown keys), shared by the
    discoveries of one run (one per platform context) so each shows once.

    Libraries are not fetched here: call
    ``libraries.LibraryResolver(cache).resolve_plans(plans)`` before running.
    Raises ConfigError for anything wrong in the tree or the arguments.
    """
    root = Path(fmf_root).absolute()
    cli_context = parse_context(context)
    patterns = _compile_all(plan_filters, "plan name")
    state = _Discovery(root, cli_context, git, warned)
    plan_nodes = _select_plans(state.main.trees.adjusted(cli_context), patterns, plan_filters, root)
    if plan_nodes is None:  # no plan in the whole tree: tmt's default plan
        phase = {"how": "fmf", "name": f"{DEFAULT_PHASE_PREFIX}-0"}
        plan = Plan(name=DEFAULT_PLAN_NAME, context=cli_context)
        return [_plan_tests(plan, [phase], state.main, state)]
    return [_build_plan(node, state) for node in plan_nodes]


def require_tests(plans: Sequence[Plan]) -> None:
    """ConfigError when ``plans`` (a run's discovered plans) select no test at all."""
    if not any(plan.tests for plan in plans):
        names = ", ".join(plan.name for plan in plans)
        raise ConfigError(
            f"no tests selected by plan(s) {names}; check the plans' discover phases, "
            "filters and your -c context (try --dry-run)"
        )


def dry_run_lines(
    found: Sequence[Plan],
    fmf_root: str | Path,
    plan_filters: Sequence[str],
    context: Mapping[str, str],
    platform_context: Mapping[str, Mapping[str, str]],
    *,
    git: GitCache | None = None,
    warned: set[str] | None = None,
) -> Iterator[str]:
    """``run --dry-run``'s listing: the names of the tests ``found``, then, for
    each platform with a context of its own, ``# platform NAME`` and the tests
    discovered with it. Names spelled as every report spells them: a name
    cannot colour the terminal, start a line of its own (a forged workflow
    command) or hold what no terminal can print (a lone surrogate)."""
    from atex_ci.report.text import display_name

    warned = set() if warned is None else warned  # each platform's: only new warnings
    for plan in found:
        for test in plan.tests:
            yield display_name(test.name)
    for platform, extra in sorted(platform_context.items()):
        yield f"# platform {display_name(platform)}"
        for plan in discover(fmf_root, plan_filters, {**context, **extra}, git=git, warned=warned):
            for test in plan.tests:
                yield display_name(test.name)


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


def _plan_nodes(tree: fmf.Tree) -> list[fmf.Tree]:
    # tmt: a plan is a leaf with an 'execute' key (or a 'plan' key: an imported plan).
    return [node for node in tree.prune() if "execute" in node.data or "plan" in node.data]


def _select_plans(
    tree: fmf.Tree,
    patterns: list[re.Pattern[str]],
    filters: Sequence[str],
    root: Path,
) -> list[fmf.Tree] | None:
    """Enabled plan nodes matching any pattern, in tmt's order; None if the tree has none."""
    nodes = _plan_nodes(tree)
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
    return sorted(selected, key=lambda node: _order(node.data, f"plan {node.name}"))


def _build_plan(node: fmf.Tree, state: _Discovery) -> Plan:
    name: str = node.name
    data: dict[str, Any] = node.data
    state.warn_keys("plan", node)
    _check_execute(name, data.get("execute"))
    # tmt: the plan's own context, overridden by the caller's.
    context = {**_plan_context(name, data.get("context")), **state.cli_context}
    source = state.main
    environment = _plan_environment(name, data, source.root)
    trees: dict[str, str] = {}
    if "plan" in data:
        data, source, context, (upload, checkout) = _import_plan(name, data["plan"], context, state)
        trees[upload] = str(checkout)
        # tmt: the importing plan's environment wins over the imported plan's.
        environment = {**_plan_environment(name, data, source.root), **environment}
    plan = Plan(
        name=name,
        environment=environment,
        prepare=_phases(name, "prepare", data.get("prepare"), context, source.root),
        finish=_phases(name, "finish", data.get("finish"), context, source.root),
        context=context,
        tree_path=source.upload,
    )
    plan.trees.update(trees)
    discover_phases = _raw_phases(name, "discover", data.get("discover"))
    scripts = _execute_scripts(name, data.get("execute"))
    if scripts:
        discover_phases = _script_phase(name, discover_phases, scripts)
    if not discover_phases:
        raise ConfigError(
            f"plan {name} has no 'discover' step; add 'discover: {{how: fmf}}' to select its tests"
        )
    return _plan_tests(plan, discover_phases, source, state)


def _import_plan(
    name: str, raw: object, context: dict[str, list[str]], state: _Discovery
) -> tuple[dict[str, Any], _Source, dict[str, list[str]], tuple[str, Path]]:
    """tmt's ``plan: {import: {url, ref, path, name}}``: the remote plan's data,
    the tree it comes from, its context, and its repository (upload path, files)."""
    where = f"plan {name}: plan import"
    spec = raw.get("import") if isinstance(raw, dict) else None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: 'plan' must be a mapping with an 'import' mapping")
    for key, default in (("importing", "replace"), ("scope", "first-plan-only")):
        if spec.get(key, default) != default:
            raise ConfigError(f"{where}: '{key}: {spec[key]}' is not supported (only {default})")
    unknown = sorted(set(spec) - {"url", "ref", "path", "name", "importing", "scope", "enabled"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    checkout, upload = state.remote(spec.get("url"), spec.get("ref"), context, where)
    path = _relative_dir(spec.get("path"), checkout, f"{where}: 'path'")
    source = state.source(checkout / path if path else checkout, _join(upload, path))
    if not (source.root / ".fmf").is_dir():
        raise ConfigError(f"{where}: {spec['url']} has no fmf tree at {path or '/'!r}")
    wanted = spec.get("name")
    if wanted is not None and not isinstance(wanted, str):
        raise ConfigError(f"{where}: 'name' must be a plan name")
    plans = _plan_nodes(source.trees.adjusted(context))
    matches = [p for p in plans if wanted is None or p.name == wanted]
    if not matches and wanted is not None:
        pattern = _compile_all([wanted], "plan name", where)[0]
        matches = [p for p in plans if pattern.search(p.name)]
    if not matches:
        names = ", ".join(p.name for p in plans) or "none"
        raise ConfigError(f"{where}: no plan {wanted!r} in {spec['url']}; plans there: {names}")
    node = sorted(matches, key=lambda p: (_order(p.data, where), p.name))[0]
    if "plan" in node.data:
        raise ConfigError(f"{where}: {node.name} imports a plan itself; that is not supported")
    merged = {**_plan_context(node.name, node.data.get("context")), **context}
    data = node.data if merged == context else source.trees.adjusted(merged).find(node.name).data
    return data, source, merged, (upload, checkout)


def _plan_environment(name: str, data: Mapping[str, Any], root: Path) -> dict[str, str]:
    """``environment-file`` (files relative to the fmf root), then ``environment``."""
    where = f"plan {name}"
    environment: dict[str, str] = {}
    for filename in _string_list(data.get("environment-file"), f"{where}: 'environment-file'"):
        environment.update(_environment_file(filename.strip(), root, where))
    environment.update(_environment(data.get("environment"), where))
    return environment


#: Bytes of one environment file we read; environment files are small.
MAX_ENVIRONMENT_FILE = 1024 * 1024


def _environment_file(filename: str, root: Path, where: str) -> dict[str, str]:
    """tmt's environment file: YAML (``.yaml``/``.yml``) or dotenv ``KEY=VALUE`` lines."""
    import shlex

    from atex_ci import untrusted_yaml

    where = f"{where}: environment-file {filename!r}"
    if re.match(r"^[a-z]+://", filename):
        raise ConfigError(f"{where}: fetching environment files by URL is not supported")
    path = (root / filename).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ConfigError(f"{where}: the file is outside the fmf root {root}")
    try:
        if path.stat().st_size > MAX_ENVIRONMENT_FILE:
            raise ConfigError(f"{where}: larger than {MAX_ENVIRONMENT_FILE} bytes")
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = untrusted_yaml.load(text) or {}
        except untrusted_yaml.UntrustedYAMLError as error:
            raise ConfigError(f"{where}: {error}") from None
        return _environment(data, where)
    environment = {}
    try:
        words = shlex.split(text, comments=True)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: {word!r} is not KEY=VALUE")
        environment[key] = value
    return environment


def _execute_scripts(plan: str, raw: object) -> list[str]:
    """tmt's ``execute: {script: ...}`` (of the first execute phase), if any."""
    first = raw[0] if isinstance(raw, list) and raw else raw
    if not isinstance(first, dict) or first.get("script") is None:
        return []
    return _string_list(first["script"], f"plan {plan}: execute 'script'")


def _script_phase(
    plan: str, phases: list[dict[str, Any]], scripts: list[str]
) -> list[dict[str, Any]]:
    """tmt turns each execute script into a shell test ``/script-00``, ``/script-01``..."""
    if phases and (len(phases) > 1 or phases[0]["how"] != "shell" or phases[0].get("tests")):
        raise ConfigError(
            f"plan {plan}: tests come from either 'discover' or 'execute: script', not both"
        )
    phase: dict[str, Any] = (
        dict(phases[0]) if phases else {"how": "shell", "name": f"{DEFAULT_PHASE_PREFIX}-0"}
    )
    phase["tests"] = [
        {"name": f"script-{index:02d}", "test": script, "duration": SHELL_TEST_DURATION}
        for index, script in enumerate(scripts)
    ]
    return [phase]


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


#: Copr repository names dnf accepts: ``owner/project`` or ``@group/project``
#: (optionally prefixed by a hub host).
_COPR_NAME = re.compile(r"^([A-Za-z0-9.-]+/)?@?[A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+$")


def _phases(
    plan: str, step: str, raw: object, context: Mapping[str, list[str]], root: Path
) -> list[Phase]:
    """A plan's prepare or finish phases; ansible playbooks become paths on the controller."""
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
                    raise ConfigError(
                        f"{where}: install '{key}' is not supported; list packages by name"
                    )
            missing = phase.get("missing", "fail")
            if missing not in INSTALL_MISSING_VALUES:
                raise ConfigError(f"{where}: 'missing' must be 'fail' or 'skip', not {missing!r}")
            copr = _string_list(phase.get("copr"), f"{where}: 'copr'")
            for name in copr:
                if not _COPR_NAME.match(name):
                    raise ConfigError(f"{where}: {name!r} is not a Copr name (owner/project)")
            packages = _string_list(phase.get("package"), f"{where}: 'package'")
            if any(name.startswith("library(") for name in packages):
                raise ConfigError(f"{where}: a beakerlib library is not a package; require it")
            result.append(
                Phase(
                    how="install",
                    name=phase["name"],
                    package=packages,
                    missing=missing,
                    copr=copr,
                    order=_order(phase, where),
                )
            )
        elif how == "ansible" and step in ("prepare", "finish"):
            playbooks = _string_list(phase.get("playbook"), f"{where}: 'playbook'")
            if not playbooks:
                raise ConfigError(f"{where}: 'how: ansible' needs a 'playbook'")
            paths = []
            for playbook in playbooks:
                if re.match(r"^[a-z]+://", playbook):
                    raise ConfigError(
                        f"{where}: playbook URLs are not supported; put {playbook!r} in the tree"
                    )
                path = (root / playbook.lstrip("/")).resolve()
                if not path.is_relative_to(root.resolve()) or not path.is_file():
                    raise ConfigError(f"{where}: playbook {playbook!r} is not a file in {root}")
                paths.append(str(path))
            extra = phase.get("extra-args") or ""
            if not isinstance(extra, str):
                raise ConfigError(f"{where}: 'extra-args' must be a string")
            result.append(
                Phase(
                    how="ansible",
                    name=phase["name"],
                    playbook=paths,
                    extra_args=extra,
                    order=_order(phase, where),
                )
            )
        else:
            supported = "install, shell or ansible" if step == "prepare" else "shell or ansible"
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
    source: _Source
    names: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    includes: list[re.Pattern[str]] = field(default_factory=list)
    excludes: list[re.Pattern[str]] = field(default_factory=list)


def _plan_tests(
    plan: Plan, raw_phases: list[dict[str, Any]], source: _Source, state: _Discovery
) -> Plan:
    # tmt prefixes test names with '/<phase name>' when the step has several phases
    # (counting phases disabled by 'when' too).
    several = len(raw_phases) > 1
    for raw in raw_phases:
        _check_discover_phase(plan.name, raw)
    serial = 0
    for raw in raw_phases:
        if not _enabled_by_when(raw, plan.context):
            continue
        where = f"plan {plan.name}: discover phase {raw['name']!r}"
        phase_source = source
        if raw.get("url"):
            checkout, upload = state.remote(raw["url"], raw.get("ref"), plan.context, where)
            plan.trees[upload] = str(checkout)
            phase_source = state.source(checkout, upload)
        elif raw.get("ref"):
            raise ConfigError(f"{where}: 'ref' needs a 'url' (a git repository)")
        path = _relative_dir(raw.get("path"), phase_source.root, f"{where}: 'path'")
        if path:
            if not (phase_source.root / path / ".fmf").is_dir():
                raise ConfigError(
                    f"{where}: 'path' {raw['path']!r} is not an fmf tree root (no .fmf in it)"
                )
            phase_source = state.source(phase_source.root / path, _join(phase_source.upload, path))
        if raw["how"] == "shell":
            selected = _shell_tests(raw, where)
        else:
            phase = _discover_phase(raw, phase_source, where)
            tree = phase_source.trees.adjusted(plan.context)
            selected = list(_select_tests(tree, phase, state.warn_keys))
        for name, data, default_path, problem in selected:
            serial += 1
            if problem is not None:  # only a selected test's mistakes matter
                raise ConfigError(f"plan {plan.name}: {problem}")
            full_name = f"/{raw['name']}{name}" if several else name
            try:
                test = _make_test(name, data, default_path, full_name, plan.name, serial,
                                  phase_source)  # fmt: skip
            except ConfigError as error:
                raise ConfigError(f"plan {plan.name}: {error}") from None
            plan.tests.append(test)
    return plan


def _check_discover_phase(plan: str, raw: dict[str, Any]) -> None:
    where = f"plan {plan}: discover phase {raw['name']!r}"
    if raw["how"] not in ("fmf", "shell"):
        raise ConfigError(
            f"{where}: 'how: {raw['how']}' is not supported; atex-ci discovers tests "
            "with 'how: fmf' or 'how: shell' (leave this plan out with a plan filter)"
        )
    for key, why in UNSUPPORTED_DISCOVER_KEYS.items():
        if raw.get(key):
            raise ConfigError(f"{where}: {why}")


def _discover_phase(raw: dict[str, Any], source: _Source, where: str) -> _Phase:
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
        source=source,
        names=names,
        filters=filters,
        includes=_compile_all(includes, "include", where),
        excludes=_compile_all(excludes, "exclude", where),
    )


def _relative_dir(raw: object, root: Path, where: str) -> str:
    """A ``path`` key: a directory relative to ``root`` ("" for root itself)."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be a string")
    relative = Path(raw.strip("/")) if raw.strip("/") else Path()
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ConfigError(f"{where} {raw!r} is outside the fmf root {root}")
    return "" if relative == Path() else relative.as_posix()


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


# (name, data, the directory of its definition, a problem if it is not valid)
_Selected = tuple[str, dict[str, Any], str, "str | None"]


def _shell_tests(raw: dict[str, Any], where: str) -> list[_Selected]:
    """tmt's ``discover: how: shell``: tests written in the plan, sorted by ``order``."""
    items = raw.get("tests") or []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: 'tests' must be a list of tests")
    tests: list[tuple[int, _Selected]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}: each test in 'tests' needs a 'name'")
        name = "/" + item["name"].strip("/")
        data = {k: v for k, v in item.items() if k != "name"}
        data.setdefault("duration", SHELL_TEST_DURATION)
        if data.get("enabled", True) is not True or data.get("manual", False) is not False:
            continue
        problem = _problem(name, data, "", f"test {name} ({where})")
        order = data.get("order", DEFAULT_ORDER)
        tests.append(
            (order if isinstance(order, int) else DEFAULT_ORDER, (name, data, "", problem))
        )
    return [test for _order_key, test in sorted(tests, key=lambda pair: pair[0])]


def _select_tests(
    tree: fmf.Tree, phase: _Phase, warn_keys: Callable[[str, fmf.Tree], None]
) -> Iterator[_Selected]:
    """tmt's selection for one phase: names, then filters, manual, include/exclude, enabled.

    Tests are checked only once selected: a mistake in a test the phase never
    selects does not stop the plan (``warn_keys`` is told about each selected node).
    """
    import fmf.utils

    # Each name regex selects its tests in tmt's order; the lists are concatenated,
    # so a test matched by two names runs twice (tmt's documented behaviour).
    groups = [[n] for n in phase.names] if phase.names else [[]]
    candidates: list[tuple[fmf.Tree, dict[str, Any], str | None]] = []
    for names in groups:
        nodes = [(node, *_filter_view(node)) for node in tree.prune(keys=["test"], names=names)]
        candidates.extend(sorted(nodes, key=lambda item: _lenient_order(item[1])))
    for node, metadata, problem in candidates:
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
        if metadata.get("manual", False) is not False or metadata.get("enabled", True) is not True:
            continue
        if any(p.search(node.name) for p in phase.excludes):
            continue
        if phase.includes and not any(p.search(node.name) for p in phase.includes):
            continue
        warn_keys("test", node)
        yield node.name, dict(node.data), os.path.dirname(_source(node)), problem


def _filter_view(node: fmf.Tree) -> tuple[dict[str, Any], str | None]:
    """The node's metadata as tmt's filters see it, and what is wrong with it (if anything)."""
    where = f"test {node.name} ({_source(node)})"
    default_path = os.path.dirname(_source(node))
    try:
        return _metadata(node.name, node.data, default_path, where), None
    except ConfigError as error:
        data = {**node.data, "name": node.name}
        data.setdefault("enabled", True)
        data.setdefault("manual", False)
        return data, str(error)


def _lenient_order(metadata: Mapping[str, Any]) -> int:
    try:
        return _order(metadata, "")
    except ConfigError:
        return DEFAULT_ORDER


def _problem(name: str, data: dict[str, Any], default_path: str, where: str) -> str | None:
    try:
        _metadata(name, data, default_path, where)
    except ConfigError as error:
        return str(error)
    return None


def _metadata(name: str, data: Mapping[str, Any], default_path: str, where: str) -> dict[str, Any]:
    """The test's data with tmt's defaults and normalisation, checked (tmt's filter input)."""
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
        "path": _test_path(data.get("path"), default_path, where),
        "framework": data.get("framework", DEFAULT_FRAMEWORK),
        "manual": data.get("manual", False),
        "tty": data.get("tty", False),
        "environment": _environment(data.get("environment"), where),
        "duration": data.get("duration", DEFAULT_DURATION),
        "result": data.get("result", DEFAULT_RESULT),
        "where": data.get("where") or [],
        "check": data.get("check") or [],
    }
    # Checked here (so a mistake names the test); parsed again with the tree root.
    parse_requirements(data.get("require"), f"{where}: 'require'")
    parse_requirements(data.get("recommend"), f"{where}: 'recommend'")
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
    try:
        metadata["seconds"] = parse_duration(metadata["duration"])
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    return metadata


def _make_test(
    node_name: str,
    data: dict[str, Any],
    default_path: str,
    name: str,
    plan: str,
    serial: int,
    source: _Source,
) -> Test:
    where = f"test {node_name}"
    metadata = _metadata(node_name, data, default_path, where)
    require = parse_requirements(data.get("require"), f"{where}: 'require'", source.root)
    recommend = parse_requirements(data.get("recommend"), f"{where}: 'recommend'", source.root)
    libraries: list[Library] = []
    for library in require.libraries + recommend.libraries:
        if library not in libraries:
            libraries.append(library)
    path = _join(source.upload, metadata["path"])
    return Test(
        name=name,
        plan=plan,
        test=metadata["test"],
        path=path or ".",
        duration=metadata["seconds"],
        environment=metadata["environment"],
        framework=metadata["framework"],
        require=require.packages,
        recommend=[p for p in recommend.packages if p not in require.packages],
        result=metadata["result"],
        tty=metadata["tty"],
        serial_number=serial,
        data=_json_safe(data),
        libraries=[library.to_dict() for library in libraries],
    )


def _test_path(raw: object, default_path: str, where: str) -> str:
    """tmt: the ``path`` key, else the directory of the file defining the node.

    Either way it is relative to the fmf root, with or without a leading slash.
    """
    if raw is not None:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: 'path' must be a string")
        return "/" + raw.strip("/")
    return "/" + default_path.strip("/")


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
    value = data.get("order")
    if value is None:  # absent, or `order:` with no value: tmt's default for both
        value = DEFAULT_ORDER
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
    parser.add_argument(
        "--fetch",
        action="store_true",
        help="also fetch the tests' beakerlib libraries, as a run does (and say how many "
        "repositories were fetched, on stderr)",
    )
    args = parser.parse_args(argv)
    try:
        from atex_ci.libraries import LibraryResolver
        from atex_ci.remote_tree import GitCache

        git = GitCache()
        context = {k: ",".join(v) for k, v in parse_context_options(args.context).items()}
        plans = discover(args.root, args.plan, context, git=git)
        if args.fetch:
            LibraryResolver(git).resolve_plans(plans)
            print(f"fetched {git.fetches} repositories", file=sys.stderr)
    except ConfigError as error:
        print(f"atex-ci: {error}", file=sys.stderr)
        return error.exit_code
    for plan in plans:
        for test in plan.tests:
            print(test.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
