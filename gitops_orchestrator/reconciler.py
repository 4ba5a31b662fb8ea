"""The reconcile loop: observe, plan (pure), hand each device its work, record; level-triggered.

A new commit, a device change, an outcome or a timer only wake the loop; each pass recomputes
everything from the store: the desired snapshot and the devices (observe), placement, deploy
bodies and the plan (`core`, pure), then gives every device its share of the plan
(`executor.Workers.submit`, which never waits) and writes the pass (placements, statuses) in
one transaction. The workers record what each device acknowledged, under the incarnation the
pass saw, and wake the loop. A pass never waits for a device: a hanging one retries on its own
while a new commit reaches every other device at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import executor
from .core import bodies, placement, planning
from .core.balancing import Balance
from .core.planning import Deploy, Plan, Undeploy
from .fleetdb import Applied, DeviceRecord, Event, PassRecord, StatusRecord, StepRecord
from .models import Admission, DeviceState, DeviceView, Snapshot
from .settings import ReconcileSettings
from .store import Store
from .wakeup import Wakeup

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassResult:
    """What one pass decided and did (for tests and logs)."""

    commit_sha: str | None
    plan: Plan | None = None


def fleet_views(records: list[DeviceRecord], snapshot: Snapshot) -> dict[str, DeviceView]:
    """The devices as placement sees them: what we observed, with `devices.yaml` applied."""
    config = snapshot.devices
    views = {}
    for record in records:
        entry = config.devices.get(record.device)
        admitted = config.admission is Admission.OPEN or entry is not None
        views[record.device] = DeviceView(
            name=record.device,
            url=record.url,
            state=DeviceState(record.state),
            interfaces=frozenset(record.interfaces),
            labels=dict(entry.labels) if entry else {},
            admitted=admitted,
            cordoned=entry.cordoned if entry else False,
            online_since=record.online_since,
        )
    return views


class StaticIntroducer(Protocol):
    """Introduces devices of `devices.yaml` in the background (`devices.Introducer`)."""

    def submit_static(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None: ...


@dataclass
class Reconciler:
    store: Store
    supervisor: executor.Supervisor
    introducer: StaticIntroducer
    public_url: str
    settings: ReconcileSettings = field(default_factory=ReconcileSettings)
    clock: Callable[[], float] = time.time
    observe_pass: Callable[[float], None] = lambda seconds: None
    """Told how long each pass took (the `/metrics` histogram)."""
    _wakeup: Wakeup = field(default_factory=Wakeup)
    _last_hold: str | None = None
    _failing: set[tuple[str, str]] = field(default_factory=set)
    """(device, deployment) whose last deploy or undeploy failed: logged once, not per retry."""
    workers: executor.Workers = field(init=False)

    def __post_init__(self) -> None:
        self.workers = executor.Workers(
            self.supervisor, self._record, settings=self.settings, clock=self.clock
        )

    _settle_until: float | None = None
    """When free steps may be placed anew: the first pass's time plus `settle_window`."""
    _settling: bool = False
    """Some step waits for `_settle_until`: the loop wakes then to place it."""

    def wake(self) -> None:
        """Ask for a pass now (safe from any thread); wakes before the pass count as one."""
        self._wakeup.set()

    async def run(self) -> None:
        """Reconcile until cancelled."""
        try:
            while True:
                started = time.perf_counter()
                try:
                    await self.reconcile_once()
                except Exception:
                    logger.exception("reconcile pass failed")
                self.observe_pass(time.perf_counter() - started)
                await self._wakeup.wait(self._next_wait())
        finally:
            await self.workers.close()

    def _next_wait(self) -> float:
        if self._settling and self._settle_until is not None:
            # Place the steps that wait for the fleet to settle as soon as it has.
            return max(0.05, min(self.settings.interval, self._settle_until - self.clock()))
        return self.settings.interval

    async def reconcile_once(self) -> PassResult:
        snapshot = await asyncio.to_thread(self.store.desired_snapshot)
        if snapshot is None:
            return PassResult(None)
        records, previous, applied, recorded = await asyncio.to_thread(self._observe)
        self._introduce_static(snapshot, known={record.device for record in records})
        now = self.clock()
        if self._settle_until is None:
            self._settle_until = now + self.settings.settle_window
        fleet = fleet_views(records, snapshot)
        placed = placement.place(
            snapshot, fleet=fleet, previous=previous, now=now,
            return_after=self.settings.return_after, settle_until=self._settle_until,
            balance=Balance(self.settings.balance_threshold, self.settings.balance_moves),
        )  # fmt: skip
        self._settling = bool(placed.settling)
        desired = bodies.deploy_bodies(
            snapshot, placement=placed, fleet=fleet, base_url=self.public_url
        )
        plan = planning.plan(
            desired, applied=applied, recorded=recorded, fleet=fleet,
            prune_limit=self.settings.prune_limit, deployments=frozenset(snapshot.deployments),
        )  # fmt: skip
        by_device: dict[str, list[planning.Action]] = {}
        for action in plan.actions:
            by_device.setdefault(action.device, []).append(action)
        for record in records:
            self.workers.submit(executor.Work(
                record.device, record.url, record.incarnation, snapshot.commit_sha,
                tuple(by_device.get(record.device, ())),
            ))  # fmt: skip
        await asyncio.to_thread(
            self.store.record_pass, self._pass_record(snapshot, placed, desired, plan, now)
        )
        return PassResult(snapshot.commit_sha, plan)

    def _observe(self) -> tuple[list[DeviceRecord], dict[tuple[str, int], str], Any, Any]:
        previous = {(s.deployment, s.step): s.device for s in self.store.step_placements()}
        sticky = {key: device for key, device in previous.items() if device is not None}
        return self.store.devices(), sticky, self.store.applied(), self.store.recorded()

    def _introduce_static(self, snapshot: Snapshot, *, known: set[str]) -> None:
        """Devices of `devices.yaml` with an address need no multicast: introduce them.

        In the background (bounded, retried with backoff by the introducer): a static device
        that does not answer never delays the pass for the others.
        """
        for name, entry in snapshot.devices.devices.items():
            if entry.address is None or name in known:
                continue
            scheme, _, rest = entry.address.rstrip("/").partition("://")
            host, _, port = rest.rpartition(":")
            if not port.isdigit():
                host, port = rest, "443" if scheme == "https" else "80"
            self.introducer.submit_static(
                name, addresses=[host.strip("[]")], port=int(port), tls=scheme == "https"
            )

    async def _record(self, work: executor.Work, outcomes: list[executor.Outcome]) -> None:
        """A worker's outcomes, written unless the device restarted since the pass saw it."""
        done = Applied(
            device=work.device,
            incarnation=work.incarnation,
            now=self.clock(),
            commit_sha=work.commit_sha,
            deployed=tuple(
                (o.action.deployment, o.action.digest)
                for o in outcomes
                if o.ok and isinstance(o.action, Deploy)
            ),
            removed=tuple(
                o.action.deployment for o in outcomes if o.ok and isinstance(o.action, Undeploy)
            ),
            failed=tuple(
                (
                    o.action.deployment,
                    o.action.digest if isinstance(o.action, Deploy) else None,
                    o.error or "failed",
                    o.attempts,
                )
                for o in outcomes
                if not o.ok
            ),
            events=tuple(_event(o) for o in outcomes),
        )
        self._log_outcomes(work.device, outcomes)
        # The store already has the statuses of these outcomes: no pass is needed for them
        # (a pass per outcome would replan a 1,000-device fleet hundreds of times a commit).
        # Discarded ones are of a device that restarted, whose restart sign woke a pass.
        if not await asyncio.to_thread(self.store.record_applied, done):
            logger.info(
                "%s restarted while it was being deployed: %d outcomes discarded",
                work.device, len(outcomes),
            )  # fmt: skip
            self.wake()

    def _log_outcomes(self, device: str, outcomes: list[executor.Outcome]) -> None:
        """A failing deploy is logged once (WARNING), not per retry; its recovery once (INFO)."""
        for outcome in outcomes:
            key = (device, outcome.action.deployment)
            if not outcome.ok and key not in self._failing:
                self._failing.add(key)
                logger.warning("%s (retrying with backoff)", _event(outcome).message)
            elif outcome.ok and key in self._failing:
                self._failing.discard(key)
                logger.info("%s, after failing before", _event(outcome).message)

    def _pass_record(
        self,
        snapshot: Snapshot,
        placed: placement.Placement,
        desired: bodies.Bodies,
        plan: Plan,
        now: float,
    ) -> PassRecord:
        steps = tuple(
            StepRecord(name, index, step.device, step.status.value, step.reason, now)
            for (name, index), step in sorted(placed.steps.items())
        )
        statuses = []
        for device, deployments in desired.items():
            for name, body in deployments.items():
                digest = bodies.body_digest(body)
                # `synced` is decided by the store, against what is acknowledged under the
                # device's current incarnation at the moment of writing.
                failed = self.workers.error(device, name, digest)
                status, error, attempts = (
                    ("failed", *failed) if failed else ("progressing", None, 0)
                )
                statuses.append(StatusRecord(
                    device, name, status, error, attempts, now, body_digest=digest,
                    commit_sha=snapshot.commit_sha,
                ))  # fmt: skip
        events = []
        hold = plan.hold.reason if plan.hold else None
        if hold != self._last_hold and hold is not None:
            events.append(Event("held", hold))
            logger.warning("commit %s held: %s", (snapshot.commit_sha or "")[:12], hold)
        self._last_hold = hold
        return PassRecord(
            now=now,
            commit_sha=snapshot.commit_sha,
            steps=steps,
            statuses=tuple(statuses),
            events=tuple(events),
        )


def _event(outcome: executor.Outcome) -> Event:
    action = outcome.action
    verb = "deploy" if isinstance(action, Deploy) else "undeploy"
    if outcome.ok:
        message = f"{verb}ed {action.deployment} on {action.device}"
        if isinstance(action, Deploy):
            message += f" ({action.reason})"
    else:
        message = f"{verb} of {action.deployment} on {action.device} failed: {outcome.error}"
    kind = verb + ("ed" if outcome.ok else "_failed")
    return Event(kind, message, device=action.device, deployment=action.deployment)
