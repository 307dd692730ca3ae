"""Handlers that never give up, for the worker-process tests (imported by the worker with --import)."""

from __future__ import annotations

import asyncio
import threading

from kubeworkers import handler
from pydantic import BaseModel


class Nothing(BaseModel):
    pass


@handler("stubborn.async", max_attempts=1)
async def ignores_cancellation(inp: Nothing) -> None:
    """Swallows every CancelledError and never returns."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


@handler("stubborn.sync", max_attempts=1)
def never_returns(inp: Nothing) -> None:
    """Blocks its thread for good."""
    threading.Event().wait()
