"""beakerlib libraries: what a test's ``require``/``recommend`` ask for, and
getting them onto the machine the way tmt arranges them.

Two halves, kept apart:

- parsing (pure, used by discovery): ``parse_requirements`` splits a
  ``require``/``recommend`` list into package names, file requirements and
  ``Library`` references, in every form tmt accepts: ``library(ns/name)``
  (https://github.com/beakerlib/ns, library ``/name``) and
  ``{url, ref, name, path, nick, destination}`` (``type: library`` or no type);
- resolution (I/O, once per run, before tests start): ``resolve_libraries``
  fetches every library through a ``GitCache`` (each URL once per run, in
  parallel, cached across runs), reads the library's own ``require`` and
  ``recommend`` (recursively; the first library of a name wins, as in tmt),
  adds the packages to the test's, and records where the library's directory
  goes in the uploaded tree.

On the machine a library of repository ``openssl`` named ``/certgen`` lands in
``<tree>/.atex-ci/libs/openssl/certgen`` (``libs`` is tmt's default
``destination``), and ``BEAKERLIB_LIBRARY_PATH`` names ``<tree>/.atex-ci``, so
beakerlib's ``rlImport openssl/certgen`` finds ``libs/openssl/certgen/lib.sh``
exactly as it does in a tmt run. A ``library(...)`` string never reaches the
package manager: a library that cannot be fetched is an error naming the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import fmf

    from .model import Plan, Test
    from .remote_tree import GitCache

#: tmt's short form ``library(ns/name)``.
LIBRARY_PATTERN = re.compile(r"^library\(([^/]+)(/[^)]+)\)$")
#: Where tmt fetches ``library(ns/name)`` from.
DEFAULT_REPOSITORY = "https://github.com/beakerlib/{}"
#: tmt's default ``destination`` of a library.
DEFAULT_DESTINATION = "libs"
#: The directory of the uploaded tree that holds libraries and remote trees.
STAGING_DIR = ".atex-ci"
#: Forges whose URLs tmt strips of a trailing ``.git`` before naming the clone.
_STRIP_GIT_SUFFIX = ("https://github.com", "https://gitlab.com", "https://pagure.io")
#: Parallel git fetches when a run needs several repositories.
FETCH_WORKERS = 8
#: Library keys tmt knows; anything else is a typo we refuse.
_LIBRARY_KEYS = {"type", "url", "ref", "name", "path", "nick", "destination", "format"}


@dataclass(frozen=True)
class Library:
    """One beakerlib library reference, as a test (or a library) asks for it.

    ``url`` (a git repository) or ``path`` (a directory on the controller:
    the discovered tree for a ``nick``-only reference) says where it comes
    from; for a ``url``, ``path`` is the fmf root inside the repository.
    ``repo`` is the directory name it gets (``nick``, else the URL's last
    component), ``name`` the library inside it (``/`` for the whole repo).
    """

    name: str
    repo: str
    url: str | None = None
    ref: str | None = None
    path: str | None = None
    destination: str = DEFAULT_DESTINATION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Library:
        return cls(**{k: data[k] for k in ("name", "repo", "url", "ref", "path", "destination")})

    @property
    def label(self) -> str:
        """How errors name it: ``repo/name`` and where it comes from."""
        source = self.url or self.path or ""
        ref = f"#{self.ref}" if self.ref else ""
        return f"library {self.repo}{self.name} ({source}{ref})"


@dataclass
class Requirements:
    """A parsed ``require`` or ``recommend`` list."""

    packages: list[str]
    libraries: list[Library]
    files: list[str]


def parse_requirements(value: object, where: str, tree_root: Path | None = None) -> Requirements:
    """Split a ``require``/``recommend`` value into packages, libraries and files.

    ``tree_root`` is the discovered tree, the source of a ``nick``-only
    library. Packages are de-duplicated in their listed order. Raises
    ConfigError naming ``where`` for anything tmt would refuse too.
    """
    result = Requirements([], [], [])
    items = value if isinstance(value, list) else [] if value is None else [value]
    for item in items:
        if isinstance(item, str):
            text = item.strip()
            if not text:
                raise ConfigError(f"{where}: an empty package name")
            match = LIBRARY_PATTERN.match(text)
            if match:
                url = DEFAULT_REPOSITORY.format(match[1])
                _add(result.libraries, Library(name=match[2], repo=match[1], url=url))
            elif text not in result.packages:
                result.packages.append(text)
        elif isinstance(item, dict):
            kind = item.get("type", "library")
            if kind == "file":
                patterns = item.get("pattern")
                patterns = patterns if isinstance(patterns, list) else [patterns]
                if not all(isinstance(p, str) and p for p in patterns):
                    raise ConfigError(f"{where}: a file requirement needs a 'pattern' string")
                result.files.extend(patterns)
            elif kind == "library":
                _add(result.libraries, _library(item, where, tree_root))
            else:
                raise ConfigError(
                    f"{where}: unknown requirement type {kind!r} (tmt knows library and file)"
                )
        else:
            raise ConfigError(f"{where}: a requirement must be a package name or a mapping")
    return result


def _add(libraries: list[Library], library: Library) -> None:
    if library not in libraries:
        libraries.append(library)


def _library(item: Mapping[str, Any], where: str, tree_root: Path | None) -> Library:
    unknown = sorted(set(item) - _LIBRARY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown library key {unknown[0]!r} in {dict(item)!r}")
    for key in ("url", "ref", "name", "path", "nick", "destination"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise ConfigError(f"{where}: library '{key}' must be a string, got {item[key]!r}")
    name = item.get("name") or "/"
    if not name.startswith("/"):
        raise ConfigError(f"{where}: library name {name!r} must start with '/'")
    destination = item.get("destination") or DEFAULT_DESTINATION
    if destination.startswith("/") or ".." in Path(destination).parts:
        raise ConfigError(f"{where}: library destination {destination!r} must be a relative path")
    url, path, nick = item.get("url"), item.get("path"), item.get("nick")
    if url:
        for forge in _STRIP_GIT_SUFFIX:
            if url.startswith(forge):
                url = url.removesuffix(".git")
        repo = nick
        if not repo:
            match = re.search(r"/([^/]+?)(/|\.git)?$", url)
            if not match:
                raise ConfigError(f"{where}: cannot name the library repository of {url!r}")
            repo = match[1]
        return Library(name=name, repo=repo, url=url, ref=item.get("ref"), path=path,
                       destination=destination)  # fmt: skip
    if path:
        repo = nick or Path(path).name
        return Library(name=name, repo=repo, path=str(Path(path).absolute()),
                       destination=destination)  # fmt: skip
    if nick and tree_root is not None:
        return Library(name=name, repo=nick, path=str(tree_root), destination=destination)
    raise ConfigError(
        f"{where}: a library needs 'url' (a git repository), 'path' (a local directory) "
        "or 'nick' (the discovered tree itself)"
    )


# --------------------------------------------------------------------------- resolution


@dataclass
class _Fetched:
    """A library on the controller: its directory and its own requirements."""

    directory: Path
    requires: Requirements
    recommends: Requirements
    source: str


class LibraryResolver:
    """Fetches libraries for a run and caches what it has read.

    Use one per run: ``resolve_plans(plans)`` does everything. Raises
    ConfigError (or GitError, a ConfigError) naming the test and library.
    """

    def __init__(self, cache: GitCache) -> None:
        self.cache = cache
        self._fetched: dict[tuple[Library, str], _Fetched] = {}
        self._trees: dict[Path, fmf.Tree] = {}
        #: Upload path (relative to the tree) -> (directory on the controller, who).
        self.staged: dict[str, tuple[Path, str]] = {}

    def resolve_plans(self, plans: Iterable[Plan]) -> None:
        """Fetch every library of every test (in parallel), extend the tests'
        packages with the libraries' own, set ``Test.library_dirs`` and add the
        library directories to ``Plan.trees``."""
        plans = list(plans)
        self._prefetch(plans)
        for plan in plans:
            for test in plan.tests:
                if test.libraries:
                    self._resolve_test(plan, test)

    def _prefetch(self, plans: list[Plan]) -> None:
        wanted: set[tuple[str, str | None]] = set()
        for plan in plans:
            for test in plan.tests:
                for raw in test.libraries:
                    library = Library.from_dict(raw)
                    if library.url and not (library.ref or "").startswith("@"):
                        wanted.add((library.url, library.ref))
        if len(wanted) < 2:
            return
        with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(wanted))) as pool:
            futures = [pool.submit(self.cache.checkout, url, ref) for url, ref in wanted]
            for future in futures:
                future.exception()  # errors are raised again, with context, below

    def _resolve_test(self, plan: Plan, test: Test) -> None:
        where = f"plan {plan.name}: test {test.name}"
        requires: list[str] = []
        recommends: list[str] = []
        seen: dict[str, Library] = {}
        queue = [Library.from_dict(raw) for raw in test.libraries]
        while queue:
            library = queue.pop(0)
            target = f"{STAGING_DIR}/{library.destination}/{library.repo}{library.name}".rstrip("/")
            if target in seen:  # tmt: the first library of a name wins
                continue
            seen[target] = library
            fetched = self._fetch(library, plan.context, where)
            self._stage(target, fetched, library, where)
            for name in fetched.requires.packages:
                if name not in requires:
                    requires.append(name)
            for name in fetched.recommends.packages:
                if name not in recommends:
                    recommends.append(name)
            queue.extend(fetched.requires.libraries)
            queue.extend(fetched.recommends.libraries)
            plan.trees[target] = str(fetched.directory)
        test.require = _merge(test.require, requires)
        test.recommend = _merge(test.recommend, recommends)
        # beakerlib's rlImport tries <root>/libs/<repo>/<name>/lib.sh and
        # <root>/<repo>/<name>/lib.sh for each root in BEAKERLIB_LIBRARY_PATH.
        test.library_dirs = sorted(
            {
                STAGING_DIR if lib.destination == DEFAULT_DESTINATION
                else f"{STAGING_DIR}/{lib.destination}"
                for lib in seen.values()
            }
        )  # fmt: skip

    def _fetch(self, library: Library, context: Mapping[str, list[str]], where: str) -> _Fetched:
        from .remote_tree import resolve_dynamic_ref

        if library.url:
            ref = library.ref
            if ref and ref.startswith("@"):
                default = self.cache.checkout(library.url, None)
                ref = resolve_dynamic_ref(default.path, ref, context, f"{where}: {library.label}")
            try:
                checkout = self.cache.checkout(library.url, ref)
            except ConfigError as error:
                raise ConfigError(f"{where}: cannot fetch {library.label}: {error}") from None
            root = checkout.path / (library.path or "").strip("/")
            key = (library, checkout.commit)
            source = f"{library.url}@{checkout.commit[:12]}"
        else:
            root = Path(library.path or ".")
            key = (library, "")
            source = str(root)
        if key in self._fetched:
            return self._fetched[key]
        tree = self._tree(root, where, library)
        node = tree.find(library.name)
        directory = root / library.name.strip("/")
        if node is None or not directory.is_dir():
            raise ConfigError(f"{where}: {library.label} not found: no fmf node {library.name}")
        label = f"{where}: {library.label}"
        fetched = _Fetched(
            directory=directory,
            requires=parse_requirements(node.data.get("require"), f"{label}: 'require'", root),
            recommends=parse_requirements(
                node.data.get("recommend"), f"{label}: 'recommend'", root
            ),
            source=source,
        )
        self._fetched[key] = fetched
        return fetched

    def _tree(self, root: Path, where: str, library: Library) -> fmf.Tree:
        import fmf
        import fmf.utils

        if root not in self._trees:
            try:
                self._trees[root] = fmf.Tree(str(root))
            except fmf.utils.GeneralError as error:
                raise ConfigError(
                    f"{where}: {library.label} is not an fmf tree: {' '.join(str(error).split())}"
                ) from None
        return self._trees[root]

    def _stage(self, target: str, fetched: _Fetched, library: Library, where: str) -> None:
        previous = self.staged.get(target)
        if previous is not None and previous[0] != fetched.directory:
            raise ConfigError(
                f"{where}: {library.label} and the library from {previous[1]} would both be "
                f"{target}; give one of them another 'nick' or 'destination'"
            )
        self.staged[target] = (fetched.directory, fetched.source)


def _merge(first: list[str], more: list[str]) -> list[str]:
    return first + [name for name in more if name not in first]


__all__ = [
    "DEFAULT_DESTINATION",
    "STAGING_DIR",
    "Library",
    "LibraryResolver",
    "Requirements",
    "parse_requirements",
]
