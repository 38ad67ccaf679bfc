"""ControlParser: every word, every violation, every split of real streams, fuzzing."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atex_ci.execute.control import (
    MAX_LINE,
    ControlError,
    ControlParser,
    Disconnect,
    Duration,
    Event,
    ExitCode,
    FileChunk,
    FileEnd,
    ResultEvent,
    safe_join,
    sanitize_name,
)

FIXTURES = Path(__file__).parent / "fixtures" / "control"
STREAMS = sorted(FIXTURES.glob("*.bin"))


def result(obj: object, *datas: bytes) -> bytes:
    text = json.dumps(obj).encode()
    return b"result %d\n" % len(text) + text + b"".join(datas)


def parse(data: bytes, **kwargs: int) -> list[Event]:
    parser = ControlParser(**kwargs)
    return merged(parser.feed(data) + parser.feed_eof())


def merged(events: list[Event]) -> list[Event]:
    """Consecutive chunks of one file joined: how a stream is split must not matter."""
    out: list[Event] = []
    for event in events:
        previous = out[-1] if out else None
        if (
            isinstance(event, FileChunk)
            and isinstance(previous, FileChunk)
            and previous.name == event.name
        ):
            out[-1] = FileChunk(event.name, previous.data + event.data)
        else:
            out.append(event)
    return out


def feed_pieces(pieces: list[bytes]) -> tuple[list[Event], str | None]:
    """Events (chunks merged) and the error text, if any, for a stream fed in pieces."""
    parser = ControlParser()
    events: list[Event] = []
    try:
        for piece in pieces:
            events += parser.feed(piece)
        events += parser.feed_eof()
    except ControlError as error:
        return merged(events + error.events), str(error)
    return merged(events), None


# -- words ---------------------------------------------------------------------------


def test_every_word() -> None:
    stream = (
        b"noop\nexitcode -1\ndisconnect\n"
        b"duration 90\nduration 15m\nduration +1h 30m\nduration -2m\nduration 2h*3\n"
        b"duration save\nduration restore\n"
    )
    assert parse(stream) == [
        ExitCode(-1),
        Disconnect(),
        Duration("set", 90.0),
        Duration("set", 900.0),
        Duration("add", 5400.0),
        Duration("sub", 120.0),
        Duration("set", 21600.0),
        Duration("save", None),
        Duration("restore", None),
    ]


def test_exit_codes() -> None:
    for code in (0, -1, 255, 4096):
        assert parse(f"exitcode {code}\n".encode()) == [ExitCode(code)]


def test_second_exitcode_is_a_violation() -> None:
    # Only the wrapper writes it, once: a test that writes it too must not
    # pass for finished (it would escape its duration).
    parser = ControlParser()
    assert parser.feed(b"exitcode 0\n") == [ExitCode(0)]
    with pytest.raises(ControlError, match="second 'exitcode'"):
        parser.feed(b"exitcode 0\n")


def test_result_with_files() -> None:
    stream = result(
        {
            "status": "pass",
            "x": [1],
            "files": [{"name": "a", "length": 3}, {"name": "b", "length": 0}],
        },
        b"a\nb",
    )
    assert parse(stream + b"exitcode 1\n") == [
        ResultEvent(
            {
                "status": "pass",
                "x": [1],
                "files": [{"name": "a", "length": 3}, {"name": "b", "length": 0}],
            }
        ),
        FileChunk("a", b"a\nb"),
        FileEnd("a"),
        FileEnd("b"),
        ExitCode(1),
    ]


def test_result_without_files_gets_empty_list() -> None:
    assert parse(result({"status": "fail"})) == [ResultEvent({"status": "fail", "files": []})]
    assert parse(result({"files": None})) == [ResultEvent({"files": []})]


def test_result_json_may_span_lines_and_is_utf8() -> None:
    text = '{\n"name": "/é",\n"note": "\\u00e9"\n}'.encode()
    events = parse(b"result %d\n" % len(text) + text)
    assert events == [ResultEvent({"name": "/é", "note": "é", "files": []})]


def test_undecodable_bytes_become_replacement_characters() -> None:
    text = b'{"name": "/\xff"}'
    assert parse(b"result %d\n" % len(text) + text) == [
        ResultEvent({"name": "/\ufffd", "files": []})
    ]


def test_file_names_are_sanitised_in_events() -> None:
    stream = result({"files": [{"name": "../../etc/passwd", "length": 1}]}, b"x")
    assert parse(stream) == [
        ResultEvent({"files": [{"name": "etc/passwd", "length": 1}]}),
        FileChunk("etc/passwd", b"x"),
        FileEnd("etc/passwd"),
    ]


def test_line_of_exactly_max_length_is_accepted() -> None:
    line = b"duration " + b" " * (MAX_LINE - len(b"duration 90\n")) + b"90\n"
    assert len(line) == MAX_LINE
    assert parse(line) == [Duration("set", 90.0)]


# -- violations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"bogus\n", "unknown word"),
        (b"RESULT 2\n{}", "unknown word"),
        (b"\n", "empty line"),
        (b"noop\r\n", "unknown word"),
        (b"noop extra\n", "takes no argument"),
        (b"disconnect now\n", "takes no argument"),
        (b"exitcode\n", "bad exit code"),
        (b"exitcode x\n", "bad exit code"),
        (b"exitcode 1.5\n", "bad exit code"),
        (b"result\n", "bad result length"),
        (b"result -1\n", "bad result length"),
        (b"result 1e3\n", "bad result length"),
        (b"result  2\n{}", "bad result length"),
        (b"duration\n", "bad duration"),
        (b"duration \n", "bad duration"),
        (b"duration 5x\n", "bad duration"),
        (b"duration +\n", "bad duration"),
        (b"duration \xc3\xa9\n", "not ASCII"),
        (b"noop\xff\n", "not ASCII"),
        (b"result 4\nnull", "not a JSON object"),
        (b"result 2\n[]", "not a JSON object"),
        (b"result 3\n{x}", "invalid JSON"),
        (b"result 3\nNaN", "invalid JSON"),
        (b'result 14\n{"a": NaN, "b"', "invalid JSON"),
        (result({"files": {}}), "must be a list"),
        (result({"files": ["a"]}), "must be an object"),
        (result({"files": [{"length": 1}]}), "string 'name'"),
        (result({"files": [{"name": "a"}]}), "non-negative integer"),
        (result({"files": [{"name": "a", "length": -1}]}), "non-negative integer"),
        (result({"files": [{"name": "a", "length": 1.0}]}), "non-negative integer"),
        (result({"files": [{"name": "a", "length": True}]}), "non-negative integer"),
        (result({"files": [{"name": "../..", "length": 0}]}), "empty after sanitising"),
        (result({"files": [{"name": "", "length": 0}]}), "empty after sanitising"),
        (b"result 5\n{}", "short of a result"),
        (result({"files": [{"name": "a", "length": 5}]}, b"abc"), "short of file"),
        (b"noop", "no newline"),
        (b"x" * (MAX_LINE + 10), "longer than"),
        (b"noop " + b"x" * MAX_LINE + b"\n", "longer than"),
    ],
)
def test_violations(stream: bytes, message: str) -> None:
    with pytest.raises(ControlError, match=message):
        parse(stream)


def _nested(levels: int, open_: str = "[", close: str = "]") -> bytes:
    return ('{"status": "pass", "deep": ' + open_ * levels + close * levels + "}").encode()


@pytest.mark.parametrize(
    "text",
    [
        _nested(600),  # 1.2 KB, valid JSON: parsed, then recursion elsewhere crashed the run
        _nested(64),  # one level over: the result object itself is a level
        _nested(300, '{"a": ', "}"),
        b"[" * 200_000,  # never closed
        b'{"x": "' + b"[" * 1000 + b'", "deep": ' + _nested(100) + b"}",
    ],
    ids=["600-lists", "65-levels", "300-objects", "unclosed", "after-a-string"],
)
def test_deeply_nested_json_is_a_control_error(text: bytes) -> None:
    with pytest.raises(ControlError, match=r"result after line 1: .*nested deeper than 64"):
        parse(b"result %d\n" % len(text) + text)


def test_nesting_up_to_the_limit_is_kept() -> None:
    events = parse(result({"status": "pass", "deep": json.loads("[" * 63 + "]" * 63)}))
    assert isinstance(events[0], ResultEvent)
    # Brackets inside strings are text, not nesting.
    assert parse(result({"status": "pass", "note": "[" * 5000}))


def test_result_over_the_cap() -> None:
    assert parse(result({"n": "x" * 80}), max_result_bytes=100)
    with pytest.raises(ControlError, match="over the limit"):
        parse(result({"n": "x" * 100}), max_result_bytes=100)


def test_endless_line_raises_once_past_the_limit_without_a_newline() -> None:
    parser = ControlParser()
    for _ in range(MAX_LINE - 1):
        assert parser.feed(b"a") == []
    with pytest.raises(ControlError, match="longer than"):
        parser.feed(b"a")


def test_parser_stays_broken_after_an_error() -> None:
    parser = ControlParser()
    assert parser.feed(b"exitcode 0\n") == [ExitCode(0)]
    with pytest.raises(ControlError, match="unknown word"):
        parser.feed(b"oops\nexitcode 1\n")
    with pytest.raises(ControlError, match="unknown word"):
        parser.feed(b"noop\n")
    with pytest.raises(ControlError, match="unknown word"):
        parser.feed_eof()


def test_events_before_a_violation_come_with_the_error() -> None:
    parser = ControlParser()
    with pytest.raises(ControlError, match="unknown word") as caught:
        parser.feed(b"exitcode 7\n" + result({"status": "pass"}) + b"bogus\nexitcode 8\n")
    assert caught.value.events == [ExitCode(7), ResultEvent({"status": "pass", "files": []})]
    with pytest.raises(ControlError, match="unknown word") as again:
        parser.feed(b"noop\n")
    assert again.value.events == []


def test_feed_after_eof_is_an_error() -> None:
    parser = ControlParser()
    parser.feed_eof()
    with pytest.raises(ControlError, match="after the end"):
        parser.feed(b"noop\n")


# -- fixtures, split everywhere -----------------------------------------------------


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_fixture_split_at_every_offset(path: Path) -> None:
    data = path.read_bytes()
    whole = feed_pieces([data])
    events, error = whole
    assert events
    assert (error is not None) == path.name.startswith("truncated-")
    for offset in range(len(data) + 1):
        assert feed_pieces([data[:offset], data[offset:]]) == whole, offset
    for first in range(0, len(data), 7):
        for second in range(first, len(data), 13):
            pieces = [data[:first], data[first:second], data[second:]]
            assert feed_pieces(pieces) == whole, (first, second)
    assert feed_pieces([bytes([b]) for b in data]) == whole


def test_fixture_all_words_content() -> None:
    events, error = feed_pieces([(FIXTURES / "all-words.bin").read_bytes()])
    assert error is None
    assert events == [
        Duration("set", 900.0),
        Duration("add", 90.0),
        Duration("sub", 5400.0),
        Duration("save", None),
        Duration("restore", None),
        ResultEvent(
            {
                "status": "pass",
                "note": "ok",
                "files": [
                    {"name": "a.txt", "length": 5},
                    {"name": "empty", "length": 0},
                    {"name": "dir/b.bin", "length": 3},
                ],
            }
        ),
        FileChunk("a.txt", b"hello"),
        FileEnd("a.txt"),
        FileEnd("empty"),
        FileChunk("dir/b.bin", b"\x00\n\xff"),
        FileEnd("dir/b.bin"),
        ResultEvent({"name": "/multi", "status": "pass", "files": []}),
        Disconnect(),
        ExitCode(0),
    ]


def test_fixture_file_data_that_looks_like_words_is_data() -> None:
    events, error = feed_pieces([(FIXTURES / "json-with-newlines-in-data.bin").read_bytes()])
    assert error is None
    assert events[1] == FileChunk("f", b"result 5\nexitcode 1\nnoop\n")
    assert events[-1] == ExitCode(1)


def test_large_file_is_streamed_not_buffered() -> None:
    size = 5 * 1024 * 1024
    parser = ControlParser()
    header = result({"files": [{"name": "big", "length": size}]})
    assert len(parser.feed(header)) == 1
    block = os.urandom(64 * 1024)
    received = 0
    blocks = size // len(block)
    for n in range(blocks):
        events = parser.feed(block)
        if n < blocks - 1:
            assert events == [FileChunk("big", block)]
        else:
            assert events == [FileChunk("big", block), FileEnd("big")]
        received += len(block)
        assert len(parser._buf) == 0  # nothing held back between feeds
    assert received == size
    assert parser.feed(b"exitcode 0\n") == [ExitCode(0)]


# -- fuzzing ------------------------------------------------------------------------

_WORDS = [b"result ", b"exitcode ", b"duration ", b"noop", b"disconnect", b"\n", b"{", b"}",
          b'"files"', b'"name"', b'"length"', b":", b",", b"[", b"]", b"1", b"0", b"-", b"+",
          b"save", b"restore", b"..", b"/", b"\x00", b"\xff"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_WORDS), st.binary(max_size=20)), max_size=40),
       st.integers(min_value=1, max_value=50))  # fmt: skip
def test_fuzz_only_control_errors(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    outcome = feed_pieces(pieces)  # any exception other than ControlError fails the test
    assert outcome == feed_pieces([data])


def test_fuzz_random_bytes_fixed_seed() -> None:
    rng = random.Random(20240601)
    for _ in range(300):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        feed_pieces([data])
        feed_pieces([b"result %d\n" % len(data) + data])


def test_fuzz_mutated_fixtures() -> None:
    rng = random.Random(7)
    for path in STREAMS:
        data = path.read_bytes()
        for _ in range(200):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
            assert feed_pieces([bytes(mutated)]) == feed_pieces(
                [bytes(mutated[:50]), bytes(mutated[50:])]
            )


# -- names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.txt", "a.txt"),
        ("dir/sub/a", "dir/sub/a"),
        ("../../x", "x"),
        ("/etc/passwd", "etc/passwd"),
        ("a/../b", "a/b"),
        ("./a//b/.", "a/b"),
        ("nul\x00byte", "nul_byte"),
        ("ctl\x01\x1f\x7f\x9f", "ctl____"),
        ("new\nline", "new_line"),
        ("...", "..."),
        (".hidden", ".hidden"),
        ("caf\u00e9", "caf\u00e9"),
        ("surrogate\udcff", "surrogate_"),
        ("..\x00", ".._"),
    ],
)
def test_sanitize_name(name: str, expected: str) -> None:
    assert sanitize_name(name) == expected


@pytest.mark.parametrize("name", ["", "/", ".", "..", "../..", "././/"])
def test_sanitize_name_nothing_left(name: str) -> None:
    with pytest.raises(ControlError, match="empty after sanitising"):
        sanitize_name(name)


def test_safe_join_stays_inside(tmp_path: Path) -> None:
    base = tmp_path / "art"
    base.mkdir()
    assert safe_join(base, "../../x") == base.resolve() / "x"
    assert safe_join(base, "/abs/y") == base.resolve() / "abs" / "y"
    assert safe_join(base, "d/e") == base.resolve() / "d" / "e"


def test_safe_join_refuses_symlink_escape(tmp_path: Path) -> None:
    base = tmp_path / "art"
    base.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "link").symlink_to(outside)
    (base / "flink").symlink_to(tmp_path / "secret")
    (base / "inner").mkdir()
    (base / "ok").symlink_to(base / "inner")
    with pytest.raises(ControlError, match="outside"):
        safe_join(base, "link/file")
    with pytest.raises(ControlError, match="outside"):
        safe_join(base, "flink")
    assert safe_join(base, "ok/file") == base.resolve() / "inner" / "file"
