"""Health checks: which devices are online, and which restarted (protocol §2, design §2).

Every interval each known device (not gone) gets `GET /health`, many at once but bounded, with
`X-Forwarded-For` set to our host so self-registering supervisors do not re-register for
nothing. A device is offline after `health_failures` failed checks in a row and online again
on the next success. `Custom-Orchestrator-Set` turning from `true` to `false` is a restart sign
(our own successful `/register` counts as it turning `true`): a new incarnation starts, the
reconciler redeploys what it should run, and it is told where we are. A device back from
offline may have restarted unseen: its incarnation is unknown, so its work is posted once more.
One sweep is recorded in one transaction; state changes wake the reconciler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import SupervisorError
from .fleetdb import DeviceRecord, Event, HealthCheck
from .settings import DeviceSettings
from .store import Store
from .supervisor import SupervisorClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checked:
    """One device after its check: the new record, what was seen, and what must follow."""

    record: DeviceRecord
    check: HealthCheck
    event: Event | None = None
    restarted: bool = False
    returned: bool = False
    """Back from offline: it may have restarted while we could not see it."""
    register: bool = False


def judge(
    record: DeviceRecord,
    *,
    ok: bool,
    report: dict[str, object] | None,
    known: bool | None,
    error: str | None,
    now: float,
    failures_to_offline: int,
) -> Checked:
    """The device's next state after one check (pure, so the rules are tested on their own)."""
    check = HealthCheck(record.device, now, ok, report, error)
    if not ok:
        failures = record.failures + 1
        going_offline = record.state == "online" and failures >= failures_to_offline
        state = "offline" if going_offline else record.state
        updated = dataclasses.replace(record, failures=failures, state=state, checked_at=now)
        offline = Event(
            "offline", f"{failures} health checks failed: {error}", device=record.device
        )
        return Checked(updated, check, offline if going_offline else None)
    coming_back = record.state != "online"
    # Protocol §2: a supervisor that knew us and now does not has restarted.
    restarted = record.orchestrator_set is True and known is False
    updated = dataclasses.replace(
        record,
        state="online",
        failures=0,
        online_since=now if coming_back else record.online_since,
        last_seen=now,
        orchestrator_set=known,
        health=report,
        checked_at=now,
    )
    event: Event | None = None
    if restarted:
        event = Event("restart", "Custom-Orchestrator-Set turned false", device=record.device)
    elif coming_back:
        event = Event("online", "health check succeeded", device=record.device)
    returned = record.state == "offline" and not restarted
    return Checked(
        updated, check, event, restarted=restarted, returned=returned, register=known is not True
    )


@dataclass
class HealthChecker:
    store: Store
    supervisor: SupervisorClient
    public_url: str
    settings: DeviceSettings = dataclasses.field(default_factory=DeviceSettings)
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time

    @property
    def forwarded_for(self) -> str:
        return urlsplit(self.public_url).hostname or ""

    async def run(self) -> None:
        """Sweep every `health_interval` until cancelled."""
        while True:
            started = time.monotonic()
            try:
                await self.sweep()
            except Exception:
                logger.exception("health sweep failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.settings.health_interval - elapsed))

    async def sweep(self) -> list[Checked]:
        """Check every device that is not gone, record the results, act on restarts."""
        records = [r for r in await asyncio.to_thread(self.store.devices) if r.state != "gone"]
        gate = asyncio.Semaphore(self.settings.health_concurrency)

        async def one(record: DeviceRecord) -> Checked:
            async with gate:
                return await self._check(record)

        results = await asyncio.gather(*(one(record) for record in records))
        await asyncio.to_thread(
            self.store.record_health,
            [r.check for r in results],
            [r.record for r in results],
            keep=self.settings.health_history,
        )
        now = self.clock()
        for result in results:
            if result.restarted:  # the new incarnation records the restart event too
                await asyncio.to_thread(
                    self.store.new_incarnation, result.record.device, now=now, started_at=now,
                    why="Custom-Orchestrator-Set turned false: restarted",
                )  # fmt: skip
            elif result.returned:
                logger.info(
                    "device %s is online again: what it runs is unknown, so its deployments "
                    "are posted once more", result.record.device,
                )  # fmt: skip
                await asyncio.to_thread(
                    self.store.new_incarnation, result.record.device, now=now, started_at=None,
                    kind="online", why="health check succeeded after being offline; what it "
                    "runs is unknown, so its deployments are posted once more",
                )  # fmt: skip
            elif result.event is not None:
                await asyncio.to_thread(self._note, result.event, now)
            if result.register:
                await self._register(result.record)
        if any(result.event is not None for result in results):
            self.wake()
        return results

    async def _check(self, record: DeviceRecord) -> Checked:
        try:
            report, known = await self.supervisor.health(
                record.url, forwarded_for=self.forwarded_for, timeout=self.settings.health_timeout
            )
        except SupervisorError as exc:
            return self._failed(record, str(exc))
        except Exception as exc:
            # A bug or a hostile answer we did not foresee is this device's failed check:
            # it must never abort the gather, and so the sweep of every other device.
            logger.exception("unexpected error checking %s", record.device)
            return self._failed(record, f"unexpected error: {type(exc).__name__}: {exc}")
        return judge(
            record, ok=True, report=report, known=known, error=None, now=self.clock(),
            failures_to_offline=self.settings.health_failures,
        )  # fmt: skip

    def _failed(self, record: DeviceRecord, error: str) -> Checked:
        return judge(
            record, ok=False, report=None, known=None, error=error, now=self.clock(),
            failures_to_offline=self.settings.health_failures,
        )  # fmt: skip

    def _note(self, event: Event, now: float) -> None:
        # Offline needs a person (power, network); coming back does not. Each is one line: the
        # event is made only when the state changes, not for every failed check.
        level = logging.WARNING if event.kind == "offline" else logging.INFO
        logger.log(level, "device %s is %s: %s", event.device, event.kind, event.message)
        self.store.add_events([event], now=now)

    async def _register(self, record: DeviceRecord) -> None:
        # Protocol §2: when the header is not `true`, tell the device where we are.
        try:
            await self.supervisor.register(record.url, self.public_url)
        except SupervisorError as exc:
            logger.debug("cannot register with %s: %s", record.device, exc)
            return
        # Protocol §2: the header is `true` from now on; `false` later means a restart.
        await asyncio.to_thread(self.store.mark_orchestrator_set, record.device)
