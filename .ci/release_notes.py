"""Print CHANGELOG.md's section for a version: the GitHub release's notes.

usage: python .ci/release_notes.py VERSION   (fails when there is no section)
A section starts with a line ``## VERSION`` (a date may follow after " - ")
and ends at the next ``## `` line.
"""

import re
import sys
from pathlib import Path

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"

version = sys.argv[1]
text = CHANGELOG.read_text(encoding="utf-8")
section = re.search(
    rf"^## {re.escape(version)}(?: - [^\n]*)?\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M
)
if section is None or not section.group(1).strip():
    sys.exit(f"CHANGELOG.md has no section '## {version}': add one before tagging v{version}")
print(section.group(1).strip())
