"""Merge run directories (shards, reruns) into one.

Results are appended in the order the sources are given, artifacts copied
alongside; reporters then keep the final attempt of each test (see
``report/summary.py``), so a later source's attempt wins over an earlier one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import ConfigError
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
        platforms: set[str] = set(out.read_run().get("platforms") or [])
        for src in opened:
            results = src.read_results()
            artifacts = src.path / ARTIFACTS
            if artifacts.is_dir():
                shutil.copytree(artifacts, out.path / ARTIFACTS, dirs_exist_ok=True)
            for result in results:
                out.append_result(result)
            count += len(results)
            platforms.update(src.read_run().get("platforms") or [])
            out.append_event("collected", source=str(src.path), results=len(results))
        out.update_run(state="collected", platforms=sorted(platforms))
    return count
