"""Loading JSON we do not control with limits on size and nesting depth.

Every JSON text atex-ci reads comes from outside its own process: a result a
test sends on the control stream, a test's results.json, the run directory
(``collect`` and ``report`` read other people's), a history file, an HTTP
answer. Python's JSON parser recurses once per nesting level, and so does
everything that later walks the data (copying, merging, ``dataclasses``,
writing it back), so a small text of a few thousand brackets ends in
RecursionError far from where it came in. ``loads`` therefore measures the
depth first, without recursion and at C speed, and refuses the text with a
one-line reason naming the line before anything parses it; size is bounded
before reading (``read_file``) or before parsing (``loads``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from . import untrusted_yaml

# What a test may send or write (a result object, results.json): the same
# depth as a results.yaml, so both formats of one result obey one limit.
MAX_DEPTH = untrusted_yaml.MAX_DEPTH

# Files atex-ci writes wrap a test's data in a few levels of their own
# (results.jsonl keeps a test's extra keys under "extra"; tests.json holds fmf
# data under platforms, plans and tests), so their readers allow this much
# more: whatever a run accepted from a test always reads back.
MAX_DOCUMENT_DEPTH = MAX_DEPTH + 16

_OPENERS = frozenset("[{")
# A JSON string, escapes included (unrolled, so no backtracking blow-up).
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRING_TEXT = re.compile(_STRING, re.DOTALL)
_NOT_BRACKET_TEXT = re.compile(r"[^\[\]{}]+")
# Objects nest like arrays: one kind of bracket is enough to measure depth.
_ONE_KIND = str.maketrans("{}", "[]")
_TOKEN_TEXT = re.compile(_STRING + r"|[\[\]{}]", re.DOTALL)


class UntrustedJSONError(ValueError):
    """The text is not valid JSON or crosses a limit.

    ``reason`` is one line without a location; ``line`` is the 1-based line
    of the text where the problem is, when known.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)

    def at(self, source: str | os.PathLike[str]) -> str:
        """The one-line message naming ``source`` (a file) and the line."""
        if self.line is None:
            return f"{source}: {self.reason}"
        return f"{source}:{self.line}: {self.reason}"


def loads(
    data: str | bytes,
    *,
    max_bytes: int,
    max_depth: int = MAX_DOCUMENT_DEPTH,
    errors: str = "strict",
    allow_constants: bool = True,
) -> Any:
    """Parse one JSON text within the limits.

    ``errors`` is how bytes that are not UTF-8 are decoded (``strict``
    refuses them); ``allow_constants`` False refuses NaN and Infinity, which
    are not JSON. Raises UntrustedJSONError with a one-line reason, never
    anything else, for any input.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise UntrustedJSONError(f"larger than {max_bytes} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8", errors)
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise UntrustedJSONError(f"not UTF-8 ({error.reason})", line) from None
    else:
        text = data
    check_depth(text, max_depth)
    try:
        if allow_constants:
            return json.loads(text)
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise UntrustedJSONError(
            f"invalid JSON: {error.msg} (column {error.colno})", error.lineno
        ) from None
    except RecursionError:
        # check_depth lets through only what it could not measure (unbalanced
        # brackets, invalid anyway); the parser may still recurse on them.
        raise UntrustedJSONError(f"invalid JSON nested deeper than {max_depth} levels") from None
    except ValueError as error:  # a constant refused, an integer too long...
        raise UntrustedJSONError(f"invalid JSON: {' '.join(str(error).split())}") from None


def check_depth(text: str, max_depth: int) -> None:
    """Raise UntrustedJSONError if arrays and objects nest deeper than ``max_depth``.

    No recursion and no Python loop over the text: strings are cut out,
    everything but brackets is dropped, then every innermost pair is removed
    once per level, so ``max_depth`` passes empty any text that is shallow
    enough. Only a text that is not (too deep, or brackets
    that do not pair up) is walked again to name the line. At most
    ``max_depth`` passes over the brackets: linear in the text's size.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper: nearly every result line ends here
    brackets = _NOT_BRACKET_TEXT.sub("", _STRING_TEXT.sub("", text)).translate(_ONE_KIND)
    for _level in range(max_depth):
        if not brackets:
            return
        # One pass removes exactly one level: replace never rescans its output.
        brackets = brackets.replace("[]", "")
    if not brackets:
        return
    position = _first_too_deep(text, max_depth)
    if position is not None:
        line = text.count("\n", 0, position) + 1
        raise UntrustedJSONError(f"nested deeper than {max_depth} levels", line)
    # Unbalanced brackets: invalid JSON, which the parser names precisely.


def _first_too_deep(text: str, max_depth: int) -> int | None:
    """Offset of the first bracket that opens level ``max_depth + 1``, if any."""
    depth = 0
    for match in _TOKEN_TEXT.finditer(text):
        token = match.group()
        if token in _OPENERS:
            depth += 1
            if depth > max_depth:
                return match.start()
        elif token in "]}":
            depth -= 1
    return None


def read_file(
    path: str | os.PathLike[str], *, max_bytes: int, max_depth: int = MAX_DOCUMENT_DEPTH
) -> Any:
    """Read and parse the JSON file at ``path``, reading at most ``max_bytes``.

    The size is checked before a byte is read, so a huge or endless file
    (a 2 GB run.json, a FIFO, /dev/zero behind a symlink) costs nothing.
    OSError if it cannot be opened; UntrustedJSONError otherwise, whose
    ``at(path)`` is the one-line message.
    """
    try:
        data = untrusted_yaml.read_limited(path, max_bytes)
    except untrusted_yaml.UntrustedYAMLError as exc:
        raise UntrustedJSONError(str(exc)) from None
    return loads(data, max_bytes=max_bytes, max_depth=max_depth)


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_DEPTH",
    "UntrustedJSONError",
    "check_depth",
    "loads",
    "read_file",
]
