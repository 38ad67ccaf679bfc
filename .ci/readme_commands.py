"""Print the setup commands of README.md, one per line, exactly as written.

They are the one-line ```sh blocks of the "## Setup" section; .ci/run runs
them verbatim, so the README can never drift from what CI checks.
"""

import re
import sys

with open(sys.argv[1], encoding="utf-8") as readme:
    text = readme.read()
section = re.search(r"^## Setup\n(.*?)(?=^## )", text, re.S | re.M)
if section is None:
    sys.exit("README.md has no '## Setup' section")
for block in re.findall(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M):
    lines = [line for line in block.splitlines() if line.strip()]
    if len(lines) != 1:
        sys.exit(f"a setup command must be one line, got {len(lines)}: {block!r}")
    print(lines[0])
