"""Durations as text, both ways. Read: fmf/tmt duration syntax (``90``, ``15m``,
``1h 30m``, ``2h*3``) and how long a result took, as tmt's results format
spells it (``00:01:30``). Written: ``format_duration`` in reports,
``format_clock`` on a status or estimate line, ``format_limit`` for a limit
quoted in a message.

A duration is whitespace-separated parts; each is a number with an optional
unit (s, m, h, d; none means seconds) or a multiplier ``*N``. The parts with
units are added up, then every multiplier is applied, as tmt does.
"""

from __future__ import annotations

import math
import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(?:(?P<num>\d+(?:\.\d+)?)(?P<unit>[smhd]?)|\*(?P<mul>\d+(?:\.\d+)?))")

DEFAULT_DURATION = "5m"

#: Longer than any sensible test; also keeps timers finite (no inf/NaN deadlines).
MAX_DURATION = 366 * 86400.0


def parse_duration(spec: object) -> float:
    """Seconds for a duration spec; ValueError with the offending text if invalid."""
    if isinstance(spec, bool):
        raise ValueError(f"invalid duration {spec!r}")
    if isinstance(spec, int | float):
        if not math.isfinite(spec) or spec < 0 or spec > MAX_DURATION:
            raise ValueError(f"invalid duration {spec!r}")
        return float(spec)
    if not isinstance(spec, str):
        raise ValueError(f"invalid duration {spec!r}")
    text = spec.strip()
    if not text:
        raise ValueError("invalid duration '' (empty)")
    total = 0.0
    multiplier = 1.0
    seen_amount = False
    for token in re.split(r"\s+|(?=\*)", text):
        if not token:
            continue
        match = _PART.fullmatch(token)
        if not match:
            raise ValueError(
                f"invalid duration {spec!r}: expected e.g. '90', '15m', '1h 30m' or '2h*3'"
            )
        if match["mul"] is not None:
            multiplier *= float(match["mul"])
        else:
            total += float(match["num"]) * _UNITS[match["unit"]]
            seen_amount = True
    if not seen_amount:
        raise ValueError(f"invalid duration {spec!r}: no amount")
    seconds = total * multiplier
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"invalid duration {spec!r}: longer than a year")
    return seconds


# tmt's results format: ``duration: "HH:MM:SS"`` (hours may exceed 23), as tmt
# writes it in results.yaml; seconds may carry a fraction.
_RESULT_DURATION = re.compile(r"(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)")


def parse_result_duration(value: object) -> float | None:
    """Seconds a result says it took: ``"HH:MM:SS"`` (tmt's results format) or
    a number of seconds; None when ``value`` is neither (or out of range)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _RESULT_DURATION.fullmatch(value.strip())):
        hours, minutes, secs = match.groups()
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(secs)
    else:
        return None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DURATION:
        return None
    return seconds


def format_duration(seconds: float | None) -> str:
    """How reports spell a duration: ``"850ms"``, ``"12.3s"``, ``"4m 05s"``,
    ``"1h 02m 03s"``; ``"-"`` if unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def format_clock(seconds: float) -> str:
    """A duration as a short clock, whole seconds: 45s, 12m05s, 1h02m."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02}m"


def format_limit(seconds: float) -> str:
    """A time limit as a message quotes it: ``10s``, ``0.5s``, ``5m``."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
