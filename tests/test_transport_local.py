"""LocalTransport: what the SSH transport's tests check that is the local slot's own."""

from __future__ import annotations

import asyncio

import pytest

from atex_ci.transport.local import LocalTransport, slot_environment


class CallbackFailed(Exception):
    pass


def test_callback_raising_leaves_no_cancellation_behind() -> None:
    """A callback's exception reaches the caller as itself, and the caller's
    task keeps no cancellation request: a later deadline in that task is a
    TimeoutError (on Python 3.11.2 a leftover request made it a CancelledError,
    and the executor recorded a test that overran as interrupted)."""

    def fail(_data: bytes) -> None:
        raise CallbackFailed

    async def main() -> None:
        transport = LocalTransport(slot_environment({}))
        task = asyncio.current_task()
        assert task is not None
        try:
            for stream in ("stdout", "stderr"):
                with pytest.raises(CallbackFailed):
                    await transport.run("echo x >&2; echo x; exec sleep 30", **{stream: fail})
                assert task.cancelling() == 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await asyncio.Event().wait()
            assert await transport.run("true") == 0
        finally:
            await transport.close()

    asyncio.run(main())


def test_stdin_stdout_stderr_and_status() -> None:
    out: list[bytes] = []
    err: list[bytes] = []

    async def main() -> int:
        transport = LocalTransport(slot_environment({}))
        try:
            return await transport.run(
                "cat; echo oops >&2; exit 7", stdin=b"hello", stdout=out.append, stderr=err.append
            )
        finally:
            await transport.close()

    assert asyncio.run(main()) == 7
    assert b"".join(out) == b"hello"
    assert b"".join(err) == b"oops\n"
