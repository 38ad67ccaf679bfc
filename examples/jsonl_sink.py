"""An event sink of your own: every event of a run as one JSON line.

A sink is any callable taking an ``atex_ci.events.Event``; the run hands it
each event as it happens, after the Recorder has written it to the run
directory. This one appends each event to a JSON Lines file of your choice
(``events.to_record``: the event's kind, time and fields, results as
results.jsonl records), and keeps a count per kind. A dashboard upload has
the same shape: post each record instead of writing it.

    from jsonl_sink import JsonLinesSink
    sink = JsonLinesSink("events-log.jsonl")
    summary = atex_ci.run("run", fmf_root="tests", options=RunOptions(sinks=[sink]))
    sink.close()
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from atex_ci.events import Event, to_record


class JsonLinesSink:
    """Appends each event as one JSON line, flushed at once (a run cut short
    keeps every line written so far)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self._file = self.path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self.counts[event.kind] += 1
        self._file.write(json.dumps(to_record(event), ensure_ascii=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
