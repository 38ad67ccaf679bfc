"""fmf duration syntax."""

from __future__ import annotations

import pytest

from atex_ci.duration import parse_duration, parse_result_duration


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


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("00:00:03", 3.0),  # as tmt writes it in results.yaml
        ("01:02:03", 3723.0),
        ("100:00:00", 360000.0),
        ("0:00:01.5", 1.5),
        (2, 2.0),
        (0.25, 0.25),
        ("3", None),  # a bare string is not tmt's results format
        ("00:60:00", None),
        ("-00:00:01", None),
        (True, None),
        (float("nan"), None),
        (-1, None),
        (None, None),
        ([1], None),
    ],
)
def test_result_duration_as_tmt_writes_it(value: object, seconds: float | None) -> None:
    assert parse_result_duration(value) == seconds
