"""The shard split (``run --shard I/N``): computing it, recording it in the run
directory (``split.json``) and using a recorded one again.

A split computed from a moving history can put a test on another share the
next time; a re-run of one share (``--rerun-failed``, ``--split-from``,
``--resume``) must see the same tests as the first attempt, so the split of
every share (not only the run's own) is recorded with the history it came
from, and a re-run takes it from there, whatever the history says now.
The format is in docs/run-directory.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import untrusted_json
from .errors import ConfigError
from .model import TestId, as_read_back
from .recorder import Recorder
from .schedule import History, Job, duration_scale, estimate, partition

SPLIT_JSON = "split.json"
SPLIT_FORMAT = "atex-ci-split"
SPLIT_VERSION = 1
# What is read of a split.json (checked before reading): about 150 bytes per
# test, so 100,000 tests are 15 MB; one from anywhere (an artifact of another
# job) costs no more memory than this allows.
MAX_SPLIT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Split:
    """Which share (1-based) of ``count`` each test instance went to, and
    what the history was (``history``: its digest and size)."""

    count: int
    shares: dict[TestId, int]
    history: dict[str, Any]

    def jobs(self, jobs: Sequence[Job], index: int) -> list[Job]:
        """The jobs of share ``index``: those recorded there, in their order.

        A job the split does not know (a test added since) goes to a share
        by a split of the unknown jobs alone (equal counts, discovery order),
        the same in every job of the matrix.
        """
        known = [job for job in jobs if TestId.of(job.platform, job.test) in self.shares]
        new = [job for job in jobs if TestId.of(job.platform, job.test) not in self.shares]
        mine = {id(job) for job in known if self.shares[TestId.of(job.platform, job.test)] == index}
        mine |= {id(job) for job in partition(new, self.count)[index - 1]}
        return [job for job in jobs if id(job) in mine]

    def to_json(self, share: int | None) -> dict[str, Any]:
        """split.json's content; ``share``: the run's own (None in a collected run)."""
        return {
            "format": SPLIT_FORMAT,
            "version": SPLIT_VERSION,
            "count": self.count,
            "share": share,
            "history": self.history,
            "tests": [{**key_record(key), "share": s} for key, s in self.shares.items()],
        }


def compute(jobs: Sequence[Job], count: int, history: History, source: str | None) -> Split:
    """The split of ``jobs`` into ``count`` shares balanced by ``history``
    (``schedule.partition``). With a history, a test it does not know weighs
    its fmf ``duration`` scaled as the history knows the others
    (``schedule.estimate``); without one, every test weighs the same."""
    expected: dict[int, float] = {}
    if history:
        scale = duration_scale(history, jobs)
        expected = {n: estimate(history, job, scale) for n, job in enumerate(jobs)}
    shares: dict[TestId, int] = {}
    for index, share in enumerate(partition(jobs, count, expected), start=1):
        for job in share:
            shares[TestId.of(job.platform, job.test)] = index
    return Split(count, shares, history_record(history, source))


def history_record(history: History, source: str | None) -> dict[str, Any]:
    """What split.json says of the history a split came from: a digest of
    its durations (equal histories, equal digests), how many tests it knew,
    and where it was read from."""
    entries = sorted((list(key), list(values)) for key, values in history.durations.items())
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=True)
    return {
        "digest": "sha256:" + hashlib.sha256(text.encode()).hexdigest(),
        "tests": len(entries),
        "source": source,
    }


def write(recorder: Recorder, split: Split, share: int | None) -> None:
    """Record ``split`` (and the run's own ``share``, None in a collected run)."""
    recorder.selection(SPLIT_JSON, split.to_json(share))


def read(run_dir: Path) -> tuple[Split, int | None] | None:
    """The split recorded in ``run_dir`` and the run's own share (None in a
    collected run); None when it records none. ConfigError naming the file
    when it is damaged: a re-run must not quietly split anew."""
    path = run_dir / SPLIT_JSON
    data = read_document(path)
    if data is None:
        return None
    try:
        return _parse(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged: {exc}") from None


def read_document(path: Path) -> Any:
    """The JSON document at ``path`` (None if there is none), read within
    ``MAX_SPLIT_BYTES``; ConfigError naming the file if it cannot be read."""
    if not path.exists():
        return None
    try:
        return untrusted_json.read_file(path, max_bytes=MAX_SPLIT_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except untrusted_json.UntrustedJSONError as exc:
        raise ConfigError(f"{exc.at(path)} (not a {path.name})") from None


def _parse(data: Any) -> tuple[Split, int | None]:
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise ValueError(f"format is not {SPLIT_FORMAT!r}")
    count = _whole(data.get("count"))
    if count is None or count < 1:
        raise ValueError("'count' must be a whole number of at least 1")
    share = _whole(data.get("share"))
    if data.get("share") is not None and (share is None or not 1 <= share <= count):
        raise ValueError(f"'share' must be null or between 1 and {count}")
    tests = data.get("tests")
    if not isinstance(tests, list):
        raise ValueError("'tests' must be a list")
    shares: dict[TestId, int] = {}
    for entry in tests:
        key, share_of = _entry(entry, count)
        shares[key] = share_of
    history = data.get("history")
    return Split(count, shares, history if isinstance(history, dict) else {}), share


def _entry(entry: Any, count: int) -> tuple[TestId, int]:
    key = parse_key(entry)
    share = _whole(entry.get("share"))
    if share is None or not 1 <= share <= count:
        raise ValueError(f"a test's 'share' must be between 1 and {count}")
    return key, share


def key_record(key: TestId) -> dict[str, Any]:
    """A test instance's key as split.json and selection.json spell it."""
    return {"platform": key[0], "plan": key[1], "test": key[2], "serial_number": key[3]}


def parse_key(entry: Any) -> TestId:
    """The key ``key_record`` wrote; ValueError if ``entry`` is not one."""
    if not isinstance(entry, dict):
        raise ValueError("each of 'tests' must be an object")
    names = (entry.get("platform"), entry.get("plan"), entry.get("test"))
    serial = _whole(entry.get("serial_number"))
    if not all(isinstance(n, str) for n in names) or serial is None:
        raise ValueError("a test needs 'platform', 'plan', 'test' and 'serial_number'")
    platform, plan, test = (as_read_back(str(n)) for n in names)
    return TestId(platform, plan, test, serial)


def _whole(value: Any) -> int | None:
    """``value`` if it is a JSON whole number (not a boolean), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def same(splits: Iterable[Split]) -> Split | None:
    """The one split all of ``splits`` are (the shards of one matrix), else None."""
    found: Split | None = None
    for split in splits:
        if found is not None and (split.count, split.shares) != (found.count, found.shares):
            return None
        found = found or split
    return found


__all__ = [
    "SPLIT_JSON",
    "Split",
    "compute",
    "history_record",
    "key_record",
    "parse_key",
    "read",
    "read_document",
    "same",
    "write",
]
