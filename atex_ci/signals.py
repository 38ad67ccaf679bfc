"""Orderly signal handling for a command's event loop: the first SIGINT/SIGTERM
cancels the main task so everything is cleaned up on the way out; a second
one exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import Interrupted

T = TypeVar("T")

_HANDLED = (signal.SIGINT, signal.SIGTERM)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh event loop with orderly signal handling.

    The first SIGINT/SIGTERM cancels the main task, so every machine, connection
    and remote process is cleaned up on the way out, and then raises Interrupted
    (exit code 128 + the signal's number); a second signal exits at once with
    its own code.
    """

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1:
                print(
                    ("\r\x1b[K" if sys.stderr.isatty() else "")
                    + "atex-ci: interrupted; cleaning up (interrupt again to exit at once)",
                    file=sys.stderr,
                    flush=True,
                )
                task.cancel()
            else:
                os._exit(128 + signum)

        for sig in _HANDLED:
            loop.add_signal_handler(sig, on_signal, int(sig))
        try:
            return await factory()
        except asyncio.CancelledError:
            if received:
                raise Interrupted(received[0]) from None
            raise
        finally:
            for sig in _HANDLED:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


__all__ = ["run_async"]
