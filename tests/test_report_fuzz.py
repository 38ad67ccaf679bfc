"""Every reporter on arbitrary results: never a crash, always valid and within its caps."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atex_ci.model import Reason, Result, Status
from atex_ci.report.github import make_annotations, outputs
from atex_ci.report.html import write_html
from atex_ci.report.junit import junit_xml
from atex_ci.report.markdown import markdown_summary
from atex_ci.report.summary import final_results
from atex_ci.report.text import display_name

from .reportutil import validate

# Any code point, lone surrogates and controls included, and the characters
# each format gives a meaning to.
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x10FFFF),
        st.sampled_from(list("\x00\x1b\x7f\x9b\ud800\udfff\ufffe\uffff\\:,%<>&\"'`*_[]|\n\r\t")),
    ),
    max_size=40,
)
STAMPS = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(
        [
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:00:05.123+00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-13-45T99:99:99",
        ]
    ),
)
RESULTS = st.lists(
    st.builds(
        Result,
        test=TEXT.filter(bool),
        status=st.sampled_from(list(Status)),
        plan=st.one_of(st.just(""), TEXT),
        name=st.one_of(st.none(), TEXT),
        platform=st.sampled_from(["p1", "p2", "\x1bp"]),
        attempt=st.integers(min_value=1, max_value=3),
        machine=st.one_of(st.none(), TEXT),
        start=STAMPS,
        end=STAMPS,
        duration=st.one_of(st.none(), st.floats(min_value=0, max_value=1e12)),
        note=st.one_of(st.none(), TEXT),
        files=st.lists(TEXT, max_size=3),
        exit_code=st.one_of(st.none(), st.integers(-(2**63), 2**63)),
        reason=st.one_of(st.none(), st.sampled_from(list(Reason))),
    ),
    max_size=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results=RESULTS)
def test_reporters_never_crash_and_stay_valid(results: list[Result]) -> None:
    document = junit_xml(results)
    root = validate(document)
    final = final_results(results)
    keys = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    assert len(keys) == len(set(keys)) == len(final)
    text = markdown_summary(results, max_bytes=64 * 1024)
    assert len(text.encode()) <= 64 * 1024
    with tempfile.TemporaryDirectory() as scratch:
        write_html(results, Path(scratch) / "r.html", rundir_path=Path(scratch))
    found, _rest = make_annotations(results)
    for annotation in found:
        command = annotation.command()
        assert "\n" not in command and "\r" not in command
    assert int(outputs(results)["total"]) == len(final)


@given(TEXT, TEXT)
def test_display_name_is_injective_and_printable(a: str, b: str) -> None:
    if a != b:
        assert display_name(a) != display_name(b)
    assert all(c.isprintable() or c == " " for c in display_name(a))
