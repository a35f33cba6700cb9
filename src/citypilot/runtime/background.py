"""Background tasks of a serving process."""

from __future__ import annotations

import asyncio
from contextlib import suppress


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Stop a background loop and wait until it has (its cancellation is the expected way out)."""
    if task is not None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
