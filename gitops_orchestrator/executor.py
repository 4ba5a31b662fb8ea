"""Apply a plan's actions to devices: the side-effects `planning.plan` leaves to others.

Each device has its own worker holding the latest work the reconciler wants done there, in the
manner of a controller work queue keyed by device: new work replaces what is still pending
(level-triggered), work equal to what is in flight or was just done is dropped, and at most
`concurrency` devices are worked on at once. A device's actions run in order (undeploys first,
so a device never holds a stale and a new deployment of one module at once), each retried with
exponential backoff and jitter; a device that stays unreachable has its remaining actions failed
without more waiting, and is tried again after its own growing, jittered wait. The reconciler
never waits for a worker: a hanging device holds one slot while every other device gets a new
commit at once, and no exception from one device leaves its worker. Outcomes go to `record`
(the store discards them when the device restarted meanwhile: see `Work.incarnation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .core.planning import Action, Deploy, Undeploy
from .errors import SupervisorError, SupervisorUnreachable
from .settings import ReconcileSettings

logger = logging.getLogger(__name__)


class Supervisor(Protocol):
    async def deploy(self, base_url: str, body: dict[str, Any]) -> None: ...

    async def undeploy(self, base_url: str, deployment: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    action: Action
    ok: bool
    attempts: int
    at: float
    error: str | None = None


@dataclass(frozen=True)
class Work:
    """Everything one device should do now, as one pass saw it."""

    device: str
    url: str
    incarnation: int
    """The device's incarnation when the pass observed it: outcomes are recorded under it."""
    commit_sha: str | None
    actions: tuple[Action, ...]


Record = Callable[["Work", list[Outcome]], Awaitable[None]]


@dataclass
class _Slot:
    """One device's queue: at most one piece of work pending and one in flight."""

    pending: Work | None = None
    running: Work | None = None
    done: Work | None = None
    """The last work that fully succeeded: a pass that read the store before it was recorded
    would ask for it again."""
    failures: int = 0
    """Batches in a row with a failed action."""
    retry_at: float = 0.0
    errors: dict[str, tuple[str | None, str, int]] = field(default_factory=dict)
    """Deployment -> (body digest, error, attempts) of its last failed action."""
    task: asyncio.Task[None] | None = None


@dataclass
class Workers:
    """The per-device workers; `submit` is called by every pass, never awaited on."""

    supervisor: Supervisor
    record: Record
    settings: ReconcileSettings = field(default_factory=ReconcileSettings)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.5)
    _slots: dict[str, _Slot] = field(default_factory=dict)
    _gate: asyncio.Semaphore | None = None

    def submit(self, work: Work) -> None:
        """Make `work` the device's next work (replacing what is pending); never blocks."""
        slot = self._slots.setdefault(work.device, _Slot())
        if work == slot.running or (work == slot.done and slot.pending is None):
            slot.pending = None  # already under way, or done and not yet seen by the pass
            return
        slot.pending = work if work.actions else None
        if slot.pending is not None and slot.task is None:
            slot.task = asyncio.create_task(self._work(work.device, slot))

    def error(self, device: str, deployment: str, digest: str) -> tuple[str, int] | None:
        """The error and attempts of the last failed try of this body, if it failed last."""
        slot = self._slots.get(device)
        failed = slot.errors.get(deployment) if slot else None
        if failed is None or failed[0] != digest:
            return None
        return failed[1], failed[2]

    def busy(self) -> int:
        """Devices with work pending or in flight (for tests and metrics)."""
        return sum(1 for s in self._slots.values() if s.pending or s.running)

    def next_retry(self) -> float | None:
        """When the earliest device in backoff is tried again (None: none is)."""
        waits = [s.retry_at for s in self._slots.values() if s.failures and s.task]
        return min(waits, default=None)

    async def close(self) -> None:
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self, device: str, slot: _Slot) -> None:
        try:
            while slot.pending is not None:
                wait = slot.retry_at - self.clock()
                if wait > 0:
                    await self.sleep(wait)  # the latest work is taken after the wait
                    if slot.pending is None:
                        break
                work, slot.pending = slot.pending, None
                slot.running = work
                outcomes = await self._run(work)
                self._note(slot, work, outcomes)
                try:
                    await self.record(work, outcomes)
                except Exception:
                    logger.exception("cannot record the outcomes of %s", device)
                slot.running = None
                if any(not o.ok for o in outcomes) and slot.pending is None:
                    slot.pending = work  # retried after the wait, unless newer work comes
        finally:
            slot.running = None
            slot.task = None

    async def _run(self, work: Work) -> list[Outcome]:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.settings.concurrency)
        ordered = sorted(work.actions, key=lambda a: (isinstance(a, Deploy), a.deployment))
        async with self._gate:
            try:
                return await _device_actions(
                    work.url, ordered, supervisor=self.supervisor, settings=self.settings,
                    clock=self.clock, sleep=self.sleep, jitter=self.jitter,
                )  # fmt: skip
            except Exception as exc:  # a bug or a hostile answer: this device's failure only
                logger.exception("unexpected error working on %s", work.device)
                error = f"unexpected error: {type(exc).__name__}: {exc}"
                return [Outcome(action, False, 1, self.clock(), error) for action in ordered]

    def _note(self, slot: _Slot, work: Work, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            name = outcome.action.deployment
            if outcome.ok:
                slot.errors.pop(name, None)
            else:
                digest = outcome.action.digest if isinstance(outcome.action, Deploy) else None
                slot.errors[name] = (digest, outcome.error or "failed", outcome.attempts)
        if all(o.ok for o in outcomes):
            slot.failures, slot.retry_at, slot.done = 0, 0.0, work
            return
        slot.failures += 1
        slot.done = None
        backoff = self.settings.retry_backoff * 2**slot.failures
        # Jitter keeps devices that failed together (a switch went down) from retrying in step.
        delay = min(backoff, self.settings.failed_retry_max) * self.jitter()
        slot.retry_at = self.clock() + delay


async def _device_actions(
    url: str,
    actions: list[Action],
    *,
    supervisor: Supervisor,
    settings: ReconcileSettings,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.5),
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    unreachable: str | None = None
    for action in actions:
        if unreachable is not None:
            outcomes.append(Outcome(action, False, 0, clock(), unreachable))
            continue
        for attempt in range(1, settings.attempts + 1):
            try:
                await _apply(action, url, supervisor)
                outcomes.append(Outcome(action, True, attempt, clock()))
                break
            except SupervisorError as exc:
                if attempt == settings.attempts:
                    outcomes.append(Outcome(action, False, attempt, clock(), str(exc)))
                    if isinstance(exc, SupervisorUnreachable):
                        unreachable = f"not tried: the device is unreachable ({exc})"
                    break
                # Jitter keeps a fleet of devices that failed together from retrying in step.
                delay = settings.retry_backoff * 2 ** (attempt - 1) * jitter()
                await sleep(delay)
    return outcomes


async def _apply(action: Action, url: str, supervisor: Supervisor) -> None:
    if isinstance(action, Undeploy):
        await supervisor.undeploy(url, action.deployment)
    else:
        await supervisor.deploy(url, dict(action.body))
