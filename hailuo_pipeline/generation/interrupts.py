"""A stop request (Ctrl-C, `kill`, Dagster's "Terminate") reaches a running batch through its event loop.

Python's and Dagster's signal handlers raise the interrupt wherever the main thread happens to be. Inside an
event loop that is often one of asyncio's own callbacks, which takes it for a broken connection ("Fatal write
error on socket transport") or stores it in a background task: the interrupt is lost and the batch goes on
paying for requests nobody wants. Here the loop hears the signal and cancels the batch instead.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BatchStopped(Exception):
    """The batch was cancelled because the process was asked to stop."""


async def until_stopped(work: Awaitable[T]) -> T:
    """Await `work`; SIGINT or SIGTERM cancels it and raises BatchStopped. The handlers that were in place
    before (Dagster's, during a step) are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return await work  # signals are delivered to the main thread only; its own handlers stay in charge
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    stopped: list[int] = []

    def stop(number: int) -> None:
        stopped.append(number)
        task.cancel()

    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, stop, number)
    try:
        return await work
    except asyncio.CancelledError:
        if not stopped:
            raise
        task.uncancel()
        raise BatchStopped(f"stopped by {signal.Signals(stopped[0]).name}") from None
    finally:
        for number, handler in previous.items():
            loop.remove_signal_handler(number)
            signal.signal(number, handler)
