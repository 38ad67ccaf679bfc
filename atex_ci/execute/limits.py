"""Per-test resource caps (docs/test-limits.md): what one test may cost the controller."""

from __future__ import annotations

from dataclasses import dataclass


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


__all__ = ["Limits"]
