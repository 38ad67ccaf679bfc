"""Containers against sshd hosts: start-to-first-test time and per-test overhead.

Starts N real sshd test hosts (tests/hosts.py; needs root and openssh-server)
and builds (once per machine) the Debian image of tests/images.py (needs
podman, runc, debootstrap). Then, alternating, in rounds:

  (a) ``atex-ci run --provisioner podman --image IMAGE --count N`` of T
      trivial tests (``test: "true"``): the containers are made by the run;
  (b) ``atex-ci run --host ...`` of the same tests on the N running hosts
      (checked, host key pinned, as ``run`` does for existing hosts).

Each is a real CLI process. From its events.jsonl: start-to-first-test is
the time from starting the process to the first ``test_started`` event
(interpreter, discovery, reservation or host check, upload of the tree);
per-test overhead is the time from the first ``test_started`` to the last
``test_finished``, per test and machine (the tests themselves take no time).
Medians are printed side by side; the last line is machine-readable:

    container_first_ms=A ssh_first_ms=B container_test_ms=C ssh_test_ms=D

    python benchmarks/containers.py [--tests T] [--machines N] [--rounds R]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.overhead import hosts_and_tree  # noqa: E402
from tests import images  # noqa: E402
from tests.hosts import SSHHost, missing_requirements  # noqa: E402


def _stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def timed_run(run: Path, tree: Path, machines: list[str]) -> tuple[float, float, int]:
    """(seconds to the first test, seconds from it to the last test's end, tests)."""
    started = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "atex_ci",
            "run",
            "-d",
            str(run),
            "--fmf-root",
            str(tree),
            *machines,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CONTAINERS_CONF": str(images.containers_conf())},
    )
    if proc.returncode != 0:
        raise SystemExit(f"the run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    starts = [_stamp(e["time"]) for e in events if e["event"] == "test_started"]
    ends = [_stamp(e["time"]) for e in events if e["event"] == "test_finished"]
    return min(starts) - started, max(ends) - min(starts), len(ends)


def ssh_machines(hosts: list[SSHHost]) -> list[str]:
    args = ["--key", str(hosts[0].key_path)]
    for host in hosts:
        args += ["--host", f"root@{host.address}"]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--machines", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    args = parser.parse_args()
    for reason in (missing_requirements(), images.missing_podman()):
        if reason:
            raise SystemExit(f"cannot run the benchmark: {reason}")
    os.environ["CONTAINERS_CONF"] = str(images.containers_conf())
    image = images.debian_image()
    podman = ["--provisioner", "podman", "--image", image, "--count", str(args.machines)]
    measured: dict[str, list[tuple[float, float]]] = {"container": [], "ssh": []}
    with hosts_and_tree(args.machines, args.tests) as (hosts, tmp):
        for n in range(args.rounds):
            for kind, machines in (("container", podman), ("ssh", ssh_machines(hosts))):
                first, rest, done = timed_run(tmp / f"{kind}-{n}", tmp / "tree", machines)
                assert done == args.tests, f"{kind}: {done} of {args.tests} tests ran"
                per_test = rest / args.tests * args.machines
                measured[kind].append((first, per_test))
    first = {k: statistics.median(f for f, _ in v) * 1000 for k, v in measured.items()}
    per = {k: statistics.median(p for _, p in v) * 1000 for k, v in measured.items()}
    print(
        f"{args.tests} trivial tests on {args.machines} machines, median of {args.rounds} "
        "alternating rounds (each a real `atex-ci run` process)"
    )
    print(f"{'':18}{'start to first test':>22}{'per test and machine':>24}")
    for kind, label in (("container", "podman containers"), ("ssh", "sshd hosts")):
        print(f"{label:18}{first[kind]:>19.0f} ms{per[kind]:>21.1f} ms")
    print(
        f"container_first_ms={first['container']:.0f} ssh_first_ms={first['ssh']:.0f} "
        f"container_test_ms={per['container']:.1f} ssh_test_ms={per['ssh']:.1f}"
    )


if __name__ == "__main__":
    main()
