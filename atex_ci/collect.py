"""Merge run directories (shards, reruns) into one.

Sources are merged in the order given. A test attempt that already exists in
the destination (the same test run in two sources) becomes the next attempt
number, with its artifacts moved along, so nothing is overwritten and
reporters, which keep the last attempt of each test (``report/summary.py``),
show the result of the later source.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import ConfigError
from .model import Result
from .rundir import ARTIFACTS, RunDir


def collect(dest: Path, sources: list[Path]) -> int:
    """Merge ``sources`` into ``dest`` (created if needed); returns the number of results merged.

    Raises ConfigError if a source is not a run directory or is ``dest`` itself;
    nothing is written to ``dest`` until every source has been checked.
    """
    opened = [RunDir.open(src) for src in sources]
    for src in opened:
        if dest.exists() and src.path.resolve() == dest.resolve():
            raise ConfigError(f"cannot collect {src.path} into itself")
    out = RunDir.open_or_create(dest)
    count = 0
    with out.locked():
        attempts: dict[tuple[str, str, str, int | None], int] = {}
        for result in out.read_results():
            key = (result.platform, result.plan, result.test, result.serial_number)
            attempts[key] = max(attempts.get(key, 0), result.attempt)
        platforms: set[str] = set(out.read_run().get("platforms") or [])
        for src in opened:
            results = src.read_results()
            renumbered: dict[tuple[str, str, str, int | None, int], int] = {}
            for result in results:
                key = (result.platform, result.plan, result.test, result.serial_number)
                old = (*key, result.attempt)
                if old not in renumbered:
                    renumbered[old] = attempts.get(key, 0) + 1
                    attempts[key] = renumbered[old]
                _merge_one(src, out, result, renumbered[old])
            count += len(results)
            platforms.update(src.read_run().get("platforms") or [])
            out.append_event("collected", source=str(src.path), results=len(results))
        out.update_run(state="collected", platforms=sorted(platforms))
    return count


def _merge_one(src: RunDir, out: RunDir, result: Result, attempt: int) -> None:
    """Copy one result's artifacts under its new attempt number and append it."""
    # A repeated instance's files are under instance-<serial>/ (see RunDir.artifact_path).
    serial = result.serial_number
    old_path = src.artifact_path(result.platform, result.test, result.attempt, result.plan, serial)
    if serial is None or not old_path.is_dir():
        serial = None
        old_path = src.artifact_path(result.platform, result.test, result.attempt, result.plan)
    old_dir = src.relative(old_path)
    new_dir = out.relative(
        out.artifact_dir(result.platform, result.test, attempt, result.plan, serial)
    )
    files = []
    for name in result.files:
        rel = new_dir + name[len(old_dir) :] if name.startswith(old_dir + "/") else name
        source = src.path / ARTIFACTS / name
        target = out.path / ARTIFACTS / rel
        if source.is_file() and not source.is_symlink() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        files.append(rel)
    result.attempt = attempt
    result.files = files
    out.append_result(result)
