"""A test's deadline: its ``duration``, as the test moves it at run time.

Pure arithmetic on a clock the caller reads: every method takes ``now`` (in
the caller's clock, e.g. the event loop's), so the rules of docs/test-control.md
("duration" words, save/restore nesting, the grace after ``exitcode``) can be
tested without waiting.
"""

from __future__ import annotations

from ..duration import MAX_DURATION
from .control import ControlError, Duration


class Deadline:
    """When a test must have ended. ``at`` is the current deadline."""

    def __init__(self, now: float, duration: float) -> None:
        self.at = now + duration
        self._saved_remaining: float | None = None
        self._save_depth = 0

    def remaining(self, now: float) -> float:
        """Seconds left (never negative)."""
        return max(self.at - now, 0.0)

    def change(self, event: Duration, now: float) -> float:
        """Apply a ``duration`` word; returns the new deadline.

        ``save``/``restore`` nest and only the outermost pair counts: restore
        gives back the time that was left at save. Raises ControlError for a
        restore without a save. The deadline never lies more than MAX_DURATION
        ahead of ``now``.
        """
        if event.op == "save":
            if self._save_depth == 0:
                self._saved_remaining = self.at - now
            self._save_depth += 1
        elif event.op == "restore":
            if self._save_depth == 0:
                raise ControlError("'duration restore' without 'duration save'")
            self._save_depth -= 1
            if self._save_depth == 0 and self._saved_remaining is not None:
                self.at = now + self._saved_remaining
        elif event.seconds is not None:
            if event.op == "set":
                self.at = now + event.seconds
            elif event.op == "add":
                self.at += event.seconds
            elif event.op == "sub":
                self.at -= event.seconds
        self.at = min(self.at, now + MAX_DURATION)
        return self.at

    def test_ended(self, now: float, grace: float) -> float:
        """The wrapper reported the exit code: allow at least ``grace`` more
        seconds (to start sending the test's files); returns the new deadline."""
        self.at = max(self.at, now + grace)
        return self.at


__all__ = ["Deadline"]
