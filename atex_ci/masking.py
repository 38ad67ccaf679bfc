"""Secrets handed to tests (``run --secret-env NAME``), and keeping them out of what a run writes.

This module owns the secrets a run gives every test and the one redactor that
replaces them, wherever bytes leave a test or the run writes a record:

* the forms of a value that are masked: the value itself, its standard and
  URL-safe base64 (with and without padding, and the part of it that stays the
  same whatever bytes come before or after the value in a longer base64
  stream, at each of the three alignments), and its URL encodings
  (``quote``, ``quote_plus``, lower-case escapes);
* ``Masker.bytes`` / ``Masker.text`` / ``Masker.data``: every form replaced by
  ``***`` (``MASK``) in bytes, text, or JSON-like data (keys too);
* ``StreamMasker``: the same for a stream read in chunks (a test's output, an
  uploaded file), with a value split between two chunks still masked, holding
  back at most one form's length minus one byte;
* the registry of this process's secrets (``add_secret_env``, ``active``,
  ``secret_environment``): the CLI fills it while it reads the command line,
  before any machine is reserved, and the executor, the artifact sink and the
  run directory's record writer ask ``active()``; ``mask_logs`` masks what
  the log handlers write (stderr at -vv shows the commands sent over SSH).

A tar stream (TMT_TEST_DATA) must keep its layout: it is masked with as many
``*`` as the form had bytes (``StreamMasker(same_length=True)``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from . import environ_secrets
from .errors import ConfigError
from .model import Result

#: What a masked secret becomes.
MASK = "***"

# A shorter value would be found inside ordinary words and numbers: masking it
# would rewrite every log, and a value that short is no secret anyway.
MIN_SECRET_CHARS = 4
# A secret is a token or a password, not a file. Every stream holds back up to
# the longest form (about three times the value, URL-encoded) in memory.
MAX_SECRET_BYTES = 16 * 1024
# The part of a value's base64 that is the same at any alignment is shorter
# than the value's own base64; below this it would match unrelated base64.
MIN_CORE_CHARS = 8

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _base64_cores(value: bytes) -> list[bytes]:
    """For each alignment of ``value`` in a longer base64 stream (0, 1 or 2 bytes
    before it in its group of three), the characters that depend on its bytes alone."""
    cores = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            encoded = encode(bytes(offset) + value + bytes(3))
            first = math.ceil(8 * offset / 6)
            last = (8 * (offset + len(value))) // 6
            core = encoded[first:last]
            if len(core) >= MIN_CORE_CHARS:
                cores.append(core)
    return cores


def forms(value: str) -> list[bytes]:
    """Every form of ``value`` that is masked, longest first, without repeats."""
    raw = value.encode()
    found = [raw]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(raw)
        found += [encoded, encoded.rstrip(b"=")]
    found += _base64_cores(raw)
    for encoded_text in (quote(value, safe=""), quote(value), quote_plus(value)):
        lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded_text)
        found += [encoded_text.encode(), lower.encode()]
    # A record's JSON spelling of the value (escapes), should one be masked as text.
    found.append(json.dumps(value)[1:-1].encode())
    unique = {form for form in found if form}
    return sorted(unique, key=lambda form: (-len(form), form))


class Masker:
    """Replaces every form of the given secret values; falsy when it has none."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.forms = sorted(
            {form for value in values for form in forms(value)}, key=lambda f: (-len(f), f)
        )
        #: The longest form in bytes: what a stream may have to hold back, plus one.
        self.longest = len(self.forms[0]) if self.forms else 0
        self._bytes = (
            re.compile(b"|".join(re.escape(f) for f in self.forms)) if self.forms else None
        )
        text_forms = sorted({f.decode() for f in self.forms}, key=lambda f: (-len(f), f))
        self._text = re.compile("|".join(re.escape(f) for f in text_forms)) if self.forms else None

    def __bool__(self) -> bool:
        return bool(self.forms)

    def bytes(self, data: bytes) -> bytes:
        """``data`` with every form replaced by ``MASK`` (a complete buffer)."""
        if self._bytes is None:
            return data
        return self._bytes.sub(MASK.encode(), data)

    def text(self, text: str) -> str:
        """``text`` with every form replaced by ``MASK``."""
        if self._text is None:
            return text
        return self._text.sub(MASK, text)

    def data(self, value: Any) -> Any:
        """JSON-like ``value`` with every string masked, dictionary keys included."""
        if self._text is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        return value

    def result(self, result: Result) -> Result:
        """``result`` with its note, sub-result name, file paths and extra keys masked."""
        if self._text is None:
            return result
        return dataclasses.replace(
            result,
            note=self.data(result.note),
            name=self.data(result.name),
            files=self.data(result.files),
            extra=self.data(result.extra),
        )

    def stream(self, *, same_length: bool = False) -> StreamMasker:
        """A masker for one stream read in chunks (see ``StreamMasker``)."""
        return StreamMasker(self, same_length=same_length)


class StreamMasker:
    """Masks a stream chunk by chunk: ``feed`` each chunk, ``flush`` at the end.

    A form that starts within the last ``longest - 1`` bytes of what was fed
    may still be cut by the chunk boundary, so those bytes are held back
    until the next chunk (or ``flush``); a form that starts earlier is whole
    in the buffer and is masked at once. Nothing else is buffered.
    """

    def __init__(self, masker: Masker, *, same_length: bool = False) -> None:
        self.masker = masker
        self.same_length = same_length
        self._held = b""

    def _replace(self, found: re.Match[bytes]) -> bytes:
        return b"*" * len(found.group()) if self.same_length else MASK.encode()

    def feed(self, chunk: bytes) -> bytes:
        """The masked bytes of ``chunk`` that can be written now."""
        pattern = self.masker._bytes
        if pattern is None:
            return chunk
        buffer = self._held + chunk
        safe = len(buffer) - (self.masker.longest - 1)
        out: list[bytes] = []
        position = 0
        for found in pattern.finditer(buffer):
            if found.start() >= safe:
                break
            out += [buffer[position : found.start()], self._replace(found)]
            position = found.end()
        end = max(safe, position)
        out.append(buffer[position:end])
        self._held = buffer[end:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The masked rest (the stream has ended)."""
        held, self._held = self._held, b""
        pattern = self.masker._bytes
        if pattern is None or not held:
            return held
        return pattern.sub(self._replace, held)


# -- this process's secrets ---------------------------------------------------------------

_secrets: dict[str, str] = {}
_active = Masker()


def add_secret_env(name: str) -> None:
    """Hand the controller's environment variable ``name`` to every test, masked.

    Takes it out of this process's environment (``environ_secrets.take``) and
    adds it to the registry. ConfigError (one line, never the value) when it
    is not set, or its value cannot be handed over or masked.
    """
    global _active
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(f"--secret-env {name!r}: not an environment variable name")
    environ_secrets.take([name])
    value = environ_secrets.get(name)
    if value is None:
        raise ConfigError(f"--secret-env {name}: the environment variable {name} is not set")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise ConfigError(f"--secret-env {name}: the value is not valid UTF-8") from None
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"--secret-env {name}: the value is shorter than {MIN_SECRET_CHARS} characters; "
            "masking it would rewrite ordinary output"
        )
    if size > MAX_SECRET_BYTES:
        raise ConfigError(f"--secret-env {name}: the value is over {MAX_SECRET_BYTES} bytes")
    _secrets[name] = value
    _active = Masker(_secrets.values())


class LogFilter(logging.Filter):
    """Masks every record a handler writes (the SSH library logs each command it
    sends at -vv, and a test's command carries its environment)."""

    def filter(self, record: logging.LogRecord) -> bool:
        masker = active()
        if masker:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                return True  # logging reports the caller's bad format itself
            record.msg = masker.text(message)
            record.args = ()
        return True


def mask_logs() -> None:
    """Mask the secrets in whatever the root logger's handlers write (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, LogFilter) for f in handler.filters):
            handler.addFilter(LogFilter())


def take_secret_env(names: tuple[str, ...]) -> tuple[str, ...]:
    """``run --secret-env``: each variable is taken and registered as the
    command line is read, so a missing one stops ``run`` before it reserves."""
    for name in names:
        add_secret_env(name)
    if names:
        mask_logs()
    return names


def clear() -> None:
    """Forget every secret (a program that runs several runs with different ones)."""
    global _active
    _secrets.clear()
    _active = Masker()


def active() -> Masker:
    """The masker of every secret registered so far (falsy when there is none)."""
    return _active


def secret_environment() -> dict[str, str]:
    """The variables every test gets from ``--secret-env``."""
    return dict(_secrets)


__all__ = [
    "MASK",
    "LogFilter",
    "Masker",
    "StreamMasker",
    "active",
    "add_secret_env",
    "clear",
    "forms",
    "mask_logs",
    "secret_environment",
    "take_secret_env",
]
