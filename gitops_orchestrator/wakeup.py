"""A wake-up call that any thread may give to a coroutine waiting on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Wakeup:
    """An asyncio.Event that any thread may set; sets before the next wait count as one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def set(self) -> None:
        with self._lock:
            loop = self._loop
            if loop is not None:
                try:
                    running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
                except RuntimeError:
                    running = None
                if running is not loop:
                    with contextlib.suppress(RuntimeError):  # that loop is closed
                        loop.call_soon_threadsafe(self._event.set)
                        return
            self._event.set()

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop:  # first wait, or a new event loop (asyncio.run again)
                was_set = self._event.is_set()
                self._event = asyncio.Event()
                if was_set:
                    self._event.set()
                self._loop = loop
            event = self._event
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), max(timeout, 0.0))
        event.clear()
