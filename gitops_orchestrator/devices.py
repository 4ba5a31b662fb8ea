"""Device life: introducing devices and noticing that one restarted.

A device becomes known when it is introduced: its description is fetched from each of its
addresses until one answers (protocol §1), it is recorded online with its interfaces, and it is
told where we are (`POST /register`, which also points its log shipping at us: protocol §2).
A known device registering again has restarted and lost its deployments (the Python supervisor
keeps them in memory), so what it ran is forgotten and the reconciler redeploys it.
This module changes device rows and wakes the reconciler; it never deploys anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SupervisorError
from .fleetdb import DeviceRecord, Event
from .store import Store
from .supervisor import SupervisorClient

logger = logging.getLogger(__name__)

# Introductions in flight at once: a burst of registrations is taken in batches.
INTRODUCING = 64
# Seconds between tries of an introduction that failed.
RETRIES = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
class Introducer:
    store: Store
    supervisor: SupervisorClient
    public_url: str
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(INTRODUCING))

    def submit(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None:
        """Introduce in the background: a registering device must get its answer at once."""
        task = asyncio.create_task(self._introduce_registered(name, addresses, port, tls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _introduce_registered(
        self, name: str, addresses: list[str], port: int, tls: bool
    ) -> None:
        # The device got its 204 and will not register again for a long while (protocol §1:
        # 900 s by default), and it may post before its own server answers: try a few times.
        for delay in (*RETRIES, None):
            async with self._gate:
                try:
                    introduced = await self.introduce(
                        name, addresses=addresses, port=port, tls=tls, origin="registered"
                    )
                except Exception:  # one device's surprise must not end quietly in its task
                    logger.exception("unexpected error introducing %s", name)
                    introduced = None
            if introduced is not None or delay is None:
                return
            await asyncio.sleep(delay)

    async def introduce(
        self, name: str, *, addresses: Sequence[str], port: int, tls: bool, origin: str
    ) -> DeviceRecord | None:
        """Fetch the description, record the device online, register ourselves with it."""
        scheme = "https" if tls else "http"
        errors: list[str] = []
        for address in addresses:
            host = f"[{address}]" if ":" in address else address
            url = f"{scheme}://{host}:{port}"
            try:
                description = await self.supervisor.description(url)
            except SupervisorError as exc:
                errors.append(str(exc))
                continue
            return await self._introduced(name, url, addresses, port, origin, description)
        logger.warning("cannot introduce %s: %s", name, "; ".join(errors) or "no address")
        return None

    async def _introduced(
        self,
        name: str,
        url: str,
        addresses: Sequence[str],
        port: int,
        origin: str,
        description: dict[str, Any],
    ) -> DeviceRecord:
        now = self.clock()
        known = await asyncio.to_thread(self.store.device, name)
        was_online = known is not None and known.state == "online"
        record = DeviceRecord(
            device=name,
            url=url,
            addresses=tuple(addresses),
            port=port,
            interfaces=tuple(description["supervisorInterfaces"]),
            platform=description.get("platform") or {},
            origin=origin,
            state="online",
            introduced_at=known.introduced_at if known else now,
            online_since=known.online_since if was_online and known else now,
            last_seen=now,
        )
        kind = "introduced" if known is None else "reintroduced"
        event = Event(kind, f"{name} at {url} ({origin})", device=name)
        await asyncio.to_thread(self.store.upsert_device, record, event=event)
        if known is not None and origin == "registered":
            # Protocol §2: a (re-)registration from a known device is a restart.
            await asyncio.to_thread(
                self.store.forget_applied, name, now=now, why="registered again: restarted"
            )
        try:
            await self.supervisor.register(url, self.public_url)
        except SupervisorError as exc:
            logger.warning("cannot register with %s: %s", name, exc)
        self.wake()
        return record

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
