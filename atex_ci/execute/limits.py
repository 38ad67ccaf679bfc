"""Per-test resource caps (docs/test-limits.md): what one test may cost the controller."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class Limits:
    """Per-test resource caps; exceeding one ends the test as error."""

    #: Bytes of captured stdout+stderr kept in output.txt.
    max_output: int = 1024 * 1024 * 1024
    #: Bytes of files a test may upload (result files plus TMT_TEST_DATA).
    max_upload: int = 1024 * 1024 * 1024
    #: Bytes of one result's JSON.
    max_result_json: int = 1024 * 1024
    #: Seconds a test that has ended (``exitcode``) gets past its duration to
    #: start sending TMT_TEST_DATA (the wrapper packs it first). Only sending
    #: it gets the longer data timeout, so a test that writes ``exitcode``
    #: itself and goes on running still times out.
    exit_grace: float = 30.0
    #: Bytes of every result's JSON together: a test that reports millions of
    #: small results must not grow the controller's memory without end.
    max_results_total: int = 64 * 1024 * 1024
    #: Files and directories a test may create in its artifact directory
    #: (uploaded files plus TMT_TEST_DATA entries): each one costs a system
    #: call on the controller and an inode, whatever its size.
    max_files: int = 10_000


def parse_size(text: str) -> int:
    """A size as the command line gives it (``500M``, ``2G``, ``1048576``) in
    bytes; ConfigError if it is malformed or less than one byte."""
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = raw[-1] if raw and raw[-1] in "kmg" else ""
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"invalid size {text!r}: expected e.g. 500M, 2G or 1048576")
    size = int(value * units[unit])
    if size < 1:
        # 0.1 would be a cap of 0 bytes: every test an error, surely not meant.
        raise ConfigError(f"invalid size {text!r}: less than one byte")
    return size


__all__ = ["Limits", "parse_size"]
