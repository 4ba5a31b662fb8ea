"""Device life: introducing devices and noticing that one restarted.

A device becomes known when it is introduced: its description is fetched from each of its
addresses until one answers (protocol §1), it is recorded online with its interfaces, and it is
told where we are (`POST /register`, which also points its log shipping at us: protocol §2);
a successful `/register` is the moment its `Custom-Orchestrator-Set` header becomes `true`.
A known device registering again has restarted and lost its deployments (the Python supervisor
keeps them in memory): a new incarnation starts, and the reconciler redeploys it. Except once:
a supervisor announces itself on mDNS about 0.4 s before it registers, so the first
registration within `registration_window` of an introduction belongs to the same start.
Static devices (`devices.yaml`) are introduced in the background, bounded and retried.

Registrations and announcements are not authenticated (docs/security.md), so neither moves a
known device on its own word: a device that still answers at its known address stays there
and the attempt is recorded as a `conflict` event; a static device's address is pinned; a
device moves only when its old address stopped answering and the new one describes a device
with the same interfaces. Restarts taken from registrations are rate-limited per device (a
flood of them at the device's own address is one redeploy now and one when the period ends).
This module changes device rows and wakes the reconciler; it never deploys anything itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import SupervisorError
from .fleetdb import DeviceRecord, Event
from .store import Store
from .supervisor import SupervisorClient

logger = logging.getLogger(__name__)

# Introductions in flight at once: a burst of registrations is taken in batches.
INTRODUCING = 64
# Seconds between tries of an introduction that failed.
RETRIES = (1.0, 2.0, 4.0, 8.0, 16.0)
# Seconds between tries of a static device that never answered, once RETRIES are used up: it
# is listed, so it is expected, but an unreachable one must cost next to nothing.
STATIC_RETRY = 30.0
# A restart taken from a registration, at most once per this many seconds per device: a real
# supervisor registers once per start, and a start takes seconds, so more is a flood. One more
# within the period is coalesced into a single restart when the period ends.
RESTART_EVERY = 30.0
# Seconds between two `conflict` events of one device (a forged flood is one event a minute).
CONFLICT_EVERY = 60.0
# Seconds to ask a device's known address whether it still answers, before it may move.
STILL_THERE_TIMEOUT = 3.0


@dataclass
class Introducer:
    store: Store
    supervisor: SupervisorClient
    public_url: str
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    registration_window: float = 5.0
    """Seconds after an introduction in which a registration belongs to the same start."""
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(INTRODUCING))
    _introductions: dict[str, float] = field(default_factory=dict)
    """Device -> when it was last introduced other than by its registration, until the
    registration of that start comes (or the window passes)."""
    _static: set[str] = field(default_factory=set)
    """Static devices being introduced in the background."""
    _restarts: dict[str, float] = field(default_factory=dict)
    """Device -> when a registration last started a new incarnation."""
    _deferred: dict[str, int] = field(default_factory=dict)
    """Device -> registrations coalesced into one restart at the end of its period."""
    _reintroduced: dict[str, float] = field(default_factory=dict)
    """Device -> when its last `reintroduced` event was written."""
    _conflicts: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Device -> (when its last conflict event was written, conflicts since)."""

    def submit(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None:
        """Introduce in the background: a registering device must get its answer at once."""
        self._spawn(self._introduce_registered(name, addresses, port, tls, self.clock()))

    def submit_static(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None:
        """Introduce a device of `devices.yaml` in the background, retried until it answers."""
        if name not in self._static:
            self._static.add(name)
            self._spawn(self._introduce_static(name, addresses, port, tls))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _introduce_registered(
        self, name: str, addresses: list[str], port: int, tls: bool, arrived: float
    ) -> None:
        # The device got its 204 and will not register again for a long while (protocol §1:
        # 900 s by default), and it may post before its own server answers: try a few times.
        for delay in (*RETRIES, None):
            async with self._gate:
                try:
                    introduced = await self.introduce(
                        name, addresses=addresses, port=port, tls=tls, origin="registered",
                        registered_at=arrived,
                    )  # fmt: skip
                except Exception:  # one device's surprise must not end quietly in its task
                    logger.exception("unexpected error introducing %s", name)
                    introduced = None
            if introduced is not None or delay is None:
                return
            await asyncio.sleep(delay)

    async def _introduce_static(
        self, name: str, addresses: list[str], port: int, tls: bool
    ) -> None:
        try:
            for attempt in itertools.count():
                async with self._gate:
                    introduced = await self.introduce(
                        name, addresses=addresses, port=port, tls=tls, origin="static"
                    )
                if introduced is not None:
                    return
                await asyncio.sleep(RETRIES[attempt] if attempt < len(RETRIES) else STATIC_RETRY)
        finally:
            self._static.discard(name)

    async def introduce(
        self,
        name: str,
        *,
        addresses: Sequence[str],
        port: int,
        tls: bool,
        origin: str,
        registered_at: float | None = None,
    ) -> DeviceRecord | None:
        """Fetch the description, record the device online, register ourselves with it."""
        scheme = "https" if tls else "http"
        urls = [
            f"{scheme}://[{a}]:{port}" if ":" in a else f"{scheme}://{a}:{port}" for a in addresses
        ]
        known = await asyncio.to_thread(self.store.device, name)
        moving = known is not None and known.state != "gone" and known.url not in urls
        if moving and known is not None:
            refusal = await self._refusal(known, origin)
            if refusal is not None:
                await self._conflict(known, urls, origin, refusal)
                return known  # refused, not failed: nothing to retry
        if registered_at is None:
            self._introductions[name] = self.clock()
        errors: list[str] = []
        for url in urls:
            try:
                description = await self.supervisor.description(url)
            except SupervisorError as exc:
                errors.append(str(exc))
                continue
            if (
                moving
                and known is not None
                and (set(description["supervisorInterfaces"]) != set(known.interfaces))
            ):
                await self._conflict(
                    known, [url], origin, "the new address describes a device with other "
                    "interfaces",
                )  # fmt: skip
                return known
            return await self._introduced(
                name, url, addresses, port, origin, description, registered_at
            )
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
        registered_at: float | None,
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
            incarnation=known.incarnation if known else 1,
            # Registrations and announcements come as a supervisor starts; a static device
            # was running for who knows how long.
            started_at=known.started_at if known else (None if origin == "static" else now),
        )
        kind = "introduced" if known is None else "reintroduced"
        if known is None:
            logger.info("device %s introduced at %s (%s)", name, url, origin)
        elif known.url != url:
            logger.warning("device %s moved from %s to %s (%s)", name, known.url, url, origin)
            kind = "moved"
        # A flood of registrations is not a flood of events: one reintroduction per period.
        # (Checked and set before any await: introductions run concurrently.)
        last = self._reintroduced.get(name)
        flooding = kind == "reintroduced" and last is not None and now - last < RESTART_EVERY
        if not flooding:
            self._reintroduced[name] = now
        event = None if flooding else Event(kind, f"{name} at {url} ({origin})", device=name)
        await asyncio.to_thread(self.store.upsert_device, record, event=event)
        if known is not None and registered_at is not None and self._restarted(name, registered_at):
            # Protocol §2: a (re-)registration from a known device is a restart.
            await self._restart(name, registered_at)
        try:
            await self.supervisor.register(url, self.public_url)
        except SupervisorError as exc:
            logger.warning("cannot register with %s: %s", name, exc)
        else:
            await asyncio.to_thread(self.store.mark_orchestrator_set, name)
        self.wake()
        return record

    async def _refusal(self, known: DeviceRecord, origin: str) -> str | None:
        """Why `known` must not move to a new address now, or None when it may."""
        if known.origin == "static" and origin != "static":
            return "its address is pinned in devices.yaml"
        try:
            await self.supervisor.health(
                known.url, forwarded_for=urlsplit(self.public_url).hostname or "",
                timeout=STILL_THERE_TIMEOUT,
            )  # fmt: skip
        except SupervisorError:
            return None  # gone from its old address: it may have moved (DHCP)
        return "it still answers at its known address"

    async def _conflict(
        self, known: DeviceRecord, urls: Sequence[str], origin: str, why: str
    ) -> None:
        """Record a refused move: an event with both addresses, one per `CONFLICT_EVERY`."""
        now = self.clock()
        last, count = self._conflicts.get(known.device, (float("-inf"), 0))
        count += 1
        if now - last < CONFLICT_EVERY:
            self._conflicts[known.device] = (last, count)
            logger.debug("%s: another %s at %s refused", known.device, origin, ", ".join(urls))
            return
        self._conflicts[known.device] = (now, 0)
        again = f" ({count - 1} more since the last one)" if count > 1 else ""
        message = (
            f"{origin} of {known.device} at {', '.join(urls)} refused: {why} ({known.url}){again}"
        )
        logger.warning("device %s: %s", known.device, message)
        event = Event("conflict", message, device=known.device)
        await asyncio.to_thread(self.store.add_events, [event], now=now)

    async def _restart(self, name: str, registered_at: float) -> None:
        """A registration's restart, at most one per `RESTART_EVERY`; more are coalesced."""
        now = self.clock()
        last = self._restarts.get(name)
        if last is not None and now - last < RESTART_EVERY:
            if name not in self._deferred:
                self._spawn(self._deferred_restart(name, last + RESTART_EVERY - now))
            self._deferred[name] = self._deferred.get(name, 0) + 1
            return
        self._restarts[name] = now
        await asyncio.to_thread(
            self.store.new_incarnation, name, now=now, started_at=registered_at,
            why="registered again: restarted",
        )  # fmt: skip

    async def _deferred_restart(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        count = self._deferred.pop(name, 0)
        now = self.clock()
        self._restarts[name] = now
        await asyncio.to_thread(
            self.store.new_incarnation, name, now=now, started_at=None,
            why=f"registered {count} more time(s) within {RESTART_EVERY:g} s: taken as one "
            "restart",
        )  # fmt: skip
        self.wake()

    def _restarted(self, name: str, registered_at: float) -> bool:
        """Whether a registration of a known device is a new start (protocol §2)."""
        introduced = self._introductions.pop(name, None)
        same_start = (
            introduced is not None and registered_at - introduced <= self.registration_window
        )
        return not same_start

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
