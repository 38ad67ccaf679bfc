"""Check that an sdist holds what its test suite needs (run by .ci/release-check).

Two checks, from two sides:
- every file git tracks is in the sdist, and nothing else but PKG-INFO (when
  the tree is a git checkout; a copy without .git/ skips this one);
- every repository path the tests name (``REPO / "action.yml"``,
  ``REPO / "examples" / "demo"``...) is in the sdist.

usage: python .ci/sdist_contents.py SDIST
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: A path the tests build from the repository root: REPO / "a" / "b" ...
REFERENCE = re.compile(r'\bREPO((?:\s*/\s*"[^"]+")+)')

#: Files the build adds to an sdist beyond the repository's own.
GENERATED = {"PKG-INFO"}


def members(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile() or m.issym()]
    top = {name.split("/", 1)[0] for name in names}
    if len(top) != 1:
        sys.exit(f"sdist check: {sdist.name} has several top directories: {sorted(top)}")
    return {name.split("/", 1)[1] for name in names if "/" in name}


def tracked() -> set[str] | None:
    """Files git tracks, or None when ROOT is not a git checkout."""
    if not (ROOT / ".git").exists():
        return None
    proc = subprocess.run(
        ["git", "-c", f"safe.directory={ROOT}", "ls-files", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {name for name in proc.stdout.split("\0") if name}


def referenced() -> set[str]:
    """Repository paths the tests name."""
    found = set()
    for test in sorted((ROOT / "tests").glob("*.py")):
        for match in REFERENCE.finditer(test.read_text()):
            found.add("/".join(re.findall(r'"([^"]+)"', match.group(1))))
    return found


def main() -> None:
    sdist = Path(sys.argv[1])
    shipped = members(sdist)
    problems = []
    files = tracked()
    if files is None:
        print("sdist check: not a git checkout, the tracked-files check is skipped")
    else:
        missing = sorted(files - shipped)
        extra = sorted(shipped - files - GENERATED)
        if missing:
            problems.append(f"tracked files missing from the sdist: {missing}")
        if extra:
            problems.append(f"files in the sdist that git does not track: {extra}")
    needed = referenced()
    if not needed:
        problems.append("found no REPO / ... path in tests/*.py (has the spelling changed?)")
    for path in sorted(needed):
        if path not in shipped and not any(name.startswith(path + "/") for name in shipped):
            problems.append(f"the tests read {path}, which is not in the sdist")
    if problems:
        sys.exit("sdist check: " + "; ".join(problems))
    tracked_note = "" if files is None else f", all {len(files)} tracked files"
    print(f"sdist check: {sdist.name} holds the {len(needed)} paths the tests name{tracked_note}")


if __name__ == "__main__":
    main()
