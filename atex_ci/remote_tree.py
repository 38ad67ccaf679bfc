"""Git repositories on the controller: fetched once per run, cached across runs.

Remote discover phases (``discover: {how: fmf, url, ref, path}``), imported
plans (``plan: {import: {url, ref, path, name}}``) and beakerlib libraries all
need the files of some commit of some git repository. ``GitCache`` owns that:

- one bare repository per URL under the cache directory, updated at most once
  per ``GitCache`` (one per run) and never when the wanted ref is a commit
  the cache already has;
- one read-only checkout per commit (``git archive`` unpacked), shared by
  every run, plan, test and machine that needs it;
- a file lock per URL, so parallel runs on one controller never fetch into
  the same repository at once, and a thread lock per URL, so one run fetches
  each URL once even when libraries are resolved in parallel threads.

The cache directory is ``$ATEX_CI_CACHE``, else ``$XDG_CACHE_HOME/atex-ci``,
else ``~/.cache/atex-ci``; deleting it at any time is safe between runs.
git itself reads the user's configuration, so ``url.<base>.insteadOf`` rules
(and ``GIT_CONFIG_*`` variables) redirect URLs as they would for ``git clone``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: Bound on one git command (a clone of a big repository over a slow link).
GIT_TIMEOUT = 900.0
#: Bytes of git's stderr quoted in an error.
GIT_ERROR_TAIL = 400

_FULL_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def cache_root() -> Path:
    """The cross-run cache directory (not created)."""
    if os.environ.get("ATEX_CI_CACHE"):
        return Path(os.environ["ATEX_CI_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "atex-ci"


@dataclass(frozen=True)
class Checkout:
    """The files of one commit: ``path`` must be treated as read-only."""

    url: str
    ref: str | None
    commit: str
    path: Path


class GitError(ConfigError):
    """A repository or ref could not be fetched (the message names the URL)."""


class GitCache:
    """Fetch and check out git commits; one instance per run.

    Thread-safe: ``checkout`` may be called from several threads at once.
    Raises GitError for a URL git cannot fetch or a ref it does not have.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_root()).absolute()
        self._fetched: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._checkouts: dict[tuple[str, str | None], Checkout] = {}
        #: Number of fetches (clones and updates) this instance made, for tests
        #: and benchmarks: a run fetches each URL at most once.
        self.fetches = 0

    def checkout(self, url: str, ref: str | None = None) -> Checkout:
        """The files of ``ref`` (default: the repository's default branch) of ``url``."""
        key = (url, ref)
        with self._url_lock(url):
            if key in self._checkouts:
                return self._checkouts[key]
            repo = self._repository(url)
            with _file_lock(repo.with_suffix(".lock")):
                commit = self._resolve(repo, url, ref)
                path = self._export(repo, commit, url)
            result = Checkout(url=url, ref=ref, commit=commit, path=path)
            self._checkouts[key] = result
            return result

    # -- internals -------------------------------------------------------------------

    def _url_lock(self, url: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(url, threading.Lock())

    def _repository(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()[:24]
        path = self.root / "git" / f"{digest}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _resolve(self, repo: Path, url: str, ref: str | None) -> str:
        if not (repo / "HEAD").exists():
            self._clone(repo, url)
        elif ref is not None and _FULL_SHA.fullmatch(ref) and self._commit(repo, ref):
            return ref  # a commit never changes: no need to ask the server
        elif url not in self._fetched:
            self._fetch(repo, url)
        commit = self._commit(repo, ref or "HEAD")
        if commit is None and ref is not None and _FULL_SHA.fullmatch(ref):
            # A commit no branch or tag points at: ask for it by name.
            _git(["fetch", "--quiet", "origin", ref], repo, url)
            commit = self._commit(repo, ref)
        if commit is None:
            raise GitError(f"git repository {url} has no ref {ref or 'HEAD'!r}")
        return commit

    def _clone(self, repo: Path, url: str) -> None:
        shutil.rmtree(repo, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=repo.name + ".", dir=repo.parent))
        try:
            _git(["clone", "--quiet", "--bare", "--", url, str(tmp)], None, url)
            # Later updates fetch every branch and tag into their own names.
            _git(["config", "remote.origin.fetch", "+refs/heads/*:refs/heads/*"], tmp, url)
            tmp.rename(repo)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._fetched.add(url)
        self.fetches += 1

    def _fetch(self, repo: Path, url: str) -> None:
        _git(["fetch", "--quiet", "--prune", "--tags", "--force", "origin"], repo, url)
        # The remote's default branch may have changed since the clone.
        head = _git(["ls-remote", "--symref", "origin", "HEAD"], repo, url)
        match = re.match(r"ref: (refs/heads/\S+)\tHEAD", head)
        if match:
            _git(["symbolic-ref", "HEAD", match[1]], repo, url)
        self._fetched.add(url)
        self.fetches += 1

    def _commit(self, repo: Path, ref: str) -> str | None:
        for candidate in (ref, f"refs/tags/{ref}", f"refs/heads/{ref}"):
            proc = subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"],
                cwd=repo,
                capture_output=True,
                text=True,
                env=_git_env(),
                timeout=GIT_TIMEOUT,
            )
            if proc.returncode == 0:
                return proc.stdout.strip()
        return None

    def _export(self, repo: Path, commit: str, url: str) -> Path:
        target = self.root / "trees" / commit
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=commit[:12] + ".", dir=target.parent))
        try:
            archive = tmp / ".archive.tar"
            _git(["archive", "--format=tar", f"--output={archive}", commit], repo, str(repo))
            tree = tmp / "tree"
            tree.mkdir()
            unpack_tree(archive, tree, f"commit {commit} of {url}")
            try:
                tree.rename(target)
            except OSError:
                if not target.is_dir():  # another run won the race: use its copy
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def unpack_tree(archive: Path, tree: Path, what: str) -> None:
    """Unpack ``git archive`` output into the empty directory ``tree``.

    Nothing may land outside ``tree``: absolute names, ``..`` components,
    hard links, devices and fifos are refused, so is a member whose parent is
    a symbolic link, and after unpacking every symbolic link must resolve
    inside ``tree`` (checked once all exist, so no later link can redirect
    an earlier one). Files get mode 0755 or 0644, directories 0755, as git
    records them (no setuid, no group or other write). Written here rather
    than with ``extractall(filter=...)``, which Python 3.11.2 lacks. Raises
    GitError naming ``what`` and the member; OSError if ``tree`` cannot be
    written.
    """
    root = os.path.realpath(tree)
    links: list[tuple[str, str]] = []
    with tarfile.open(archive) as tar:
        for member in tar:
            target = _member_target(root, member, what)
            if target is None:
                continue
            parent = os.path.dirname(target)
            if os.path.realpath(parent) != parent:
                raise GitError(f"{what} holds {member.name!r} inside a symbolic link")
            if member.isdir():
                os.makedirs(target, mode=0o755, exist_ok=True)
            elif member.isfile():
                os.makedirs(parent, mode=0o755, exist_ok=True)
                _unpack_file(tar, member, target, what)
            else:  # a symbolic link: _member_target refused every other kind
                if os.path.isabs(member.linkname):
                    raise GitError(f"{what} holds {member.name!r}, a link to an absolute path")
                os.makedirs(parent, mode=0o755, exist_ok=True)
                os.symlink(member.linkname, target)
                links.append((member.name, target))
    for name, link in links:
        resolved = os.path.realpath(link)
        if resolved != root and not resolved.startswith(root + os.sep):
            raise GitError(f"{what} holds {name!r}, a link that leads outside the repository")


def _member_target(root: str, member: tarfile.TarInfo, what: str) -> str | None:
    """Where ``member`` goes under ``root`` (None for the root itself)."""
    if not (member.isdir() or member.isfile() or member.issym()):
        raise GitError(f"{what} holds {member.name!r}, neither a file, a directory nor a link")
    if member.name.startswith("/"):
        raise GitError(f"{what} holds {member.name!r}, an absolute path")
    parts = [part for part in member.name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise GitError(f"{what} holds {member.name!r}, a path with '..'")
    return os.path.join(root, *parts) if parts else None


def _unpack_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str, what: str) -> None:
    source = tar.extractfile(member)
    assert source is not None  # a regular file always has contents
    mode = 0o755 if member.mode & 0o100 else 0o644
    # O_EXCL: never write through whatever is already there (a link above all).
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise GitError(f"{what} holds {member.name!r} twice") from None
    with source, open(fd, "wb") as out:
        shutil.copyfileobj(source, out)
    os.chmod(target, mode)  # the umask may have taken bits away


def _git_env() -> dict[str, str]:
    # Never wait for a password prompt: an unreachable URL fails at once.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "echo"}


def _git(args: list[str], cwd: Path | None, url: str) -> str:
    """Run git; its stdout. Raises GitError naming ``url``."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=_git_env(),
            timeout=GIT_TIMEOUT,
        )
    except FileNotFoundError:
        raise GitError("git is not installed; it is needed to fetch remote repositories") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} of {url} did not end in {GIT_TIMEOUT:g}s") from None
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[-GIT_ERROR_TAIL:] or f"exit {proc.returncode}"
        raise GitError(f"cannot fetch git repository {url}: {detail}")
    return proc.stdout


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_dynamic_ref(
    checkout: Path, ref: str | None, context: Mapping[str, list[str]], where: str
) -> str | None:
    """tmt's dynamic ref: ``@path/to/file.fmf`` names a file in the repository's
    default branch whose ``ref`` key, after ``adjust`` with the plan's
    context, is the ref to use. Any other ref is returned unchanged."""
    if not ref or not ref.startswith("@"):
        return ref
    import fmf
    from fmf.context import Context

    from . import untrusted_yaml

    path = (checkout / ref[1:].lstrip("/")).resolve()
    if not path.is_relative_to(checkout.resolve()) or not path.is_file():
        raise ConfigError(f"{where}: dynamic ref file {ref[1:]!r} does not exist in the repository")
    try:
        data: Any = untrusted_yaml.read_file(path)
    except (OSError, untrusted_yaml.UntrustedYAMLError) as error:
        raise ConfigError(f"{where}: cannot read dynamic ref file {ref[1:]!r}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: dynamic ref file {ref[1:]!r} must be a mapping")
    tree = fmf.Tree(data)
    try:
        tree.adjust(Context(**context), case_sensitive=False)
    except Exception as error:
        raise ConfigError(f"{where}: cannot apply 'adjust' in {ref[1:]!r}: {error}") from None
    value = tree.get("ref")
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: 'ref' in dynamic ref file {ref[1:]!r} must be a string")
    return value


__all__ = ["Checkout", "GitCache", "GitError", "cache_root", "resolve_dynamic_ref"]
