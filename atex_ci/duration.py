"""fmf/tmt duration syntax: ``90``, ``15m``, ``1h 30m``, ``2h*3``.

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
