"""fmf duration syntax."""

from __future__ import annotations

import pytest

from atex_ci.duration import parse_duration


@pytest.mark.parametrize(
    ("spec", "seconds"),
    [
        ("90", 90),
        (90, 90),
        ("15m", 900),
        ("1h 30m", 5400),
        ("2h*3", 21600),
        ("1.5h", 5400),
        ("1d", 86400),
        ("5m*2", 600),
    ],
)
def test_valid(spec, seconds):
    assert parse_duration(spec) == seconds


@pytest.mark.parametrize(
    "spec", ["", "soon", "5x", "-5", True, None, "*2", "9" * 400, "inf", float("nan"), 1e30]
)
def test_invalid_values_are_refused(spec):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(spec)
