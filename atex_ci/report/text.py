"""How untrusted text is spelled in every report: names escaped, never deleted; sizes capped.

This module owns, for JUnit, Markdown, HTML and GitHub annotations alike:

* ``display_name``: the one spelling of a test, plan or platform name. Control
  characters, lone surrogates (undecodable bytes), the XML-illegal
  U+FFFE/U+FFFF and every other non-printable character (bidirectional
  overrides, zero-width spaces) become visible escapes (``\\x1b``, ``\\n``,
  ``\\udcff``, ``\\u202e``) and a backslash is doubled, so the spelling is
  injective: two names that differ only in such a character stay two names
  in every report, and the result is legal XML 1.0, one line, and printable.
* ``display_text``: the same for free text (notes, output), keeping line
  breaks and tabs, and without doubling backslashes (text is read, not keyed).
* ``cap_middle`` / ``cap_line``: a head and a tail of over-long text with a
  visible note of what was left out.

Format-specific escaping (XML entities, Markdown punctuation, workflow
commands) is applied by each format's module after this.
"""

from __future__ import annotations

import re

# What is escaped in a name: C0 controls, DEL, C1 controls, surrogates,
# U+FFFE/U+FFFF, and the backslash that starts an escape.
_NAME_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# In free text tab and LF stay as they are, and a backslash is just a backslash.
_TEXT_ESCAPE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _escape(match: re.Match[str]) -> str:
    return _escape_char(match.group())


def display_name(name: str) -> str:
    """``name`` as every report spells it: one line, printable, injective (see above).

    Beyond controls, every other character Python does not call printable
    (format characters such as bidirectional overrides and zero-width
    spaces, unassigned and private-use code points, separators other than
    the space) is escaped too, so a name cannot pose as another one.
    """
    name = _NAME_ESCAPE.sub(_escape, name)
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() or c == " " else _escape_char(c) for c in name)


# Bidirectional overrides and isolates, and the line/paragraph separators,
# which reorder or break the text around them when shown.
_TEXT_SPOOF = re.compile("[\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def display_text(text: str) -> str:
    """Free text (a note, output) with control characters made visible; LF and tab kept.

    CRLF becomes LF first; a lone CR (progress bars) is shown as ``\\r``.
    Bidirectional overrides and Unicode line separators are escaped too.
    """
    text = _TEXT_ESCAPE.sub(_escape, text.replace("\r\n", "\n"))
    return _TEXT_SPOOF.sub(_escape, text)


def cap_middle(text: str, max_chars: int, what: str = "characters") -> str:
    """``text`` if it fits in ``max_chars``; else its head and tail around a visible note.

    The head is a quarter of the budget, the tail the rest (the end of a log
    usually says why it failed).
    """
    if len(text) <= max_chars:
        return text
    head = max_chars // 4
    tail = max_chars - head
    left_out = len(text) - head - tail
    return f"{text[:head]}\n[... {left_out} {what} left out ...]\n{text[len(text) - tail :]}"


def cap_line(text: str, max_chars: int) -> str:
    """The first line of ``text``, at most ``max_chars`` characters, with "…" when cut."""
    first, _, rest = text.strip().partition("\n")
    first = first.strip()
    if rest.strip() and len(first) + 2 <= max_chars:
        return first + " …"
    if len(first) > max_chars or rest.strip():
        return first[: max(0, max_chars - 1)] + "…"
    return first


# A progress line on stderr names the test and says why it failed; the
# details are in the reports.
PROGRESS_NOTE_MAX_CHARS = 200


def progress_note(note: str) -> str:
    """A test's note as it may appear in a one-line progress message on stderr."""
    return cap_line(
        display_text(cap_middle(note, 4 * PROGRESS_NOTE_MAX_CHARS)), PROGRESS_NOTE_MAX_CHARS
    )


# One line on a terminal: a few screen widths at most.
STDERR_LINE_MAX_CHARS = 500


def stderr_line(text: str) -> str:
    """``text`` safe to print as one line on a terminal: controls escaped, capped.

    Names in it (a test called ``/esc\x1b[31mred``) cannot colour or move the
    terminal, and a line break cannot start a fake line.
    """
    text = display_text(cap_middle(text, 4 * STDERR_LINE_MAX_CHARS)).replace("\n", "\\n")
    if len(text) > STDERR_LINE_MAX_CHARS:
        text = text[: STDERR_LINE_MAX_CHARS - 1] + "…"
    return text
