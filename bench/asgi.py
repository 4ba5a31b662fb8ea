"""Running an ASGI app's lifespan around in-process calls, for the benchmarks' per-request cost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Start `app`'s lifespan, yield the state it set (copy it into each request's scope)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    state: dict[str, Any] = {}
    started = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await queue.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, receive, send)
    )
    await queue.put({"type": "lifespan.startup"})
    await started.wait()
    try:
        yield state
    finally:
        await queue.put({"type": "lifespan.shutdown"})
        await task
