"""Check that a demo run directory holds the demo's expected outcome.

Reads the files with plain json (not with atex_ci), so a bug in the package's
own reader cannot hide a broken run: 12 tests, two of them failing on purpose.
"""

import json
import sys
from pathlib import Path

run = Path(sys.argv[1])
state = json.loads((run / "run.json").read_text())["state"]
results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
own = {r["test"]: r["status"] for r in results if r.get("name") is None}
expected = {"/tests/broken/fails": "fail", "/tests/broken/errors": "error"}
problems = []
if state != "finished":
    problems.append(f"run state is {state!r}, expected 'finished'")
if len(own) != 12:
    problems.append(f"{len(own)} tests have a result, expected 12")
for test, status in own.items():
    if status != expected.get(test, "pass"):
        problems.append(f"{test}: {status}, expected {expected.get(test, 'pass')}")
if problems:
    sys.exit("demo check failed: " + "; ".join(problems))
print(f"demo check: {len(own)} tests as expected in {run}")
