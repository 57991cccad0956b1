"""Child-process helpers shared by the media adapters."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec hook: the child gets SIGKILL if its parent dies, so no ffmpeg is ever orphaned."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # parent already gone between fork and prctl
        os._exit(1)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait for it to finish, without swallowing our *own* cancellation.

    `with suppress(CancelledError): await task` also hides a cancellation of the awaiting
    task that arrives meanwhile — its loop then runs on and shutdown hangs. This re-raises it.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
