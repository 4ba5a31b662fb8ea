"""The reconcile loop: observe, plan (pure), execute, record; level-triggered.

A new commit, a device change, an outcome or a timer only wake the loop; each pass recomputes
everything from the store: the desired snapshot and the devices (observe), placement, deploy
bodies and the plan (`core`, pure), the deploys and undeploys (`executor`), and one write of
the whole pass (`store.record_pass`). Devices whose deploys failed are retried on later passes
with a growing wait, without holding up the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import executor
from .core import bodies, placement, planning
from .core.balancing import Balance
from .core.planning import Deploy, Plan, Undeploy
from .devices import Introducer
from .fleetdb import DeviceRecord, Event, PassRecord, StatusRecord, StepRecord
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
    outcomes: tuple[executor.Outcome, ...] = ()


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


@dataclass
class Reconciler:
    store: Store
    supervisor: executor.Supervisor
    introducer: Introducer
    public_url: str
    settings: ReconcileSettings = field(default_factory=ReconcileSettings)
    clock: Callable[[], float] = time.time
    observe_pass: Callable[[float], None] = lambda seconds: None
    """Told how long each pass took (the `/metrics` histogram)."""
    _wakeup: Wakeup = field(default_factory=Wakeup)
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Device -> (failing passes in a row, when to try it again)."""
    _last_hold: str | None = None
    _settle_until: float | None = None
    """When free steps may be placed anew: the first pass's time plus `settle_window`."""
    _settling: bool = False
    """Some step waits for `_settle_until`: the loop wakes then to place it."""

    def wake(self) -> None:
        """Ask for a pass now (safe from any thread); wakes before the pass count as one."""
        self._wakeup.set()

    async def run(self) -> None:
        """Reconcile until cancelled."""
        while True:
            started = time.perf_counter()
            try:
                await self.reconcile_once()
            except Exception:
                logger.exception("reconcile pass failed")
            self.observe_pass(time.perf_counter() - started)
            await self._wakeup.wait(self._next_wait())

    def _next_wait(self) -> float:
        waits = [retry - self.clock() for _, retry in self._failures.values()]
        if self._settling and self._settle_until is not None:
            waits.append(self._settle_until - self.clock())  # place the waiting steps then
        return max(0.05, min([self.settings.interval, *waits]))

    async def reconcile_once(self) -> PassResult:
        snapshot = await asyncio.to_thread(self.store.desired_snapshot)
        if snapshot is None:
            return PassResult(None)
        await self._introduce_static(snapshot)
        records, previous, applied = await asyncio.to_thread(self._observe)
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
            desired, applied=applied, fleet=fleet, prune_limit=self.settings.prune_limit,
            deployments=frozenset(snapshot.deployments),
        )  # fmt: skip
        actions = [a for a in plan.actions if self._may_try(a.device, now)]
        outcomes = await executor.execute(
            actions, urls={name: view.url for name, view in fleet.items()},
            supervisor=self.supervisor, settings=self.settings, clock=self.clock,
        )  # fmt: skip
        self._note_failures(outcomes, now)
        record = self._pass_record(snapshot, placed, desired, applied, plan, outcomes, now)
        await asyncio.to_thread(self.store.record_pass, record)
        return PassResult(snapshot.commit_sha, plan, tuple(outcomes))

    def _observe(self) -> tuple[list[DeviceRecord], dict[tuple[str, int], str], Any]:
        previous = {(s.deployment, s.step): s.device for s in self.store.step_placements()}
        sticky = {key: device for key, device in previous.items() if device is not None}
        return self.store.devices(), sticky, self.store.applied()

    async def _introduce_static(self, snapshot: Snapshot) -> None:
        """Devices of `devices.yaml` with an address need no multicast: introduce them."""
        known = {record.device for record in await asyncio.to_thread(self.store.devices)}
        for name, entry in snapshot.devices.devices.items():
            if entry.address is None or name in known:
                continue
            scheme, _, rest = entry.address.rstrip("/").partition("://")
            host, _, port = rest.rpartition(":")
            if not port.isdigit():
                host, port = rest, "443" if scheme == "https" else "80"
            await self.introducer.introduce(
                name, addresses=[host.strip("[]")], port=int(port), tls=scheme == "https",
                origin="static",
            )  # fmt: skip

    def _may_try(self, device: str, now: float) -> bool:
        failing = self._failures.get(device)
        return failing is None or failing[1] <= now

    def _note_failures(self, outcomes: list[executor.Outcome], now: float) -> None:
        failed = {o.action.device for o in outcomes if not o.ok}
        for device in {o.action.device for o in outcomes}:
            if device not in failed:
                self._failures.pop(device, None)
                continue
            count = self._failures.get(device, (0, 0.0))[0] + 1
            wait = min(self.settings.retry_backoff * 2**count, self.settings.failed_retry_max)
            self._failures[device] = (count, now + wait)

    def _pass_record(
        self,
        snapshot: Snapshot,
        placed: placement.Placement,
        desired: bodies.Bodies,
        applied: Mapping[str, Mapping[str, str]],
        plan: Plan,
        outcomes: list[executor.Outcome],
        now: float,
    ) -> PassRecord:
        steps = tuple(
            StepRecord(name, index, step.device, step.status.value, step.reason, now)
            for (name, index), step in sorted(placed.steps.items())
        )
        errors = {
            (o.action.device, o.action.deployment): (o.error, o.attempts)
            for o in outcomes
            if not o.ok
        }
        done = {(o.action.device, o.action.deployment): o.action for o in outcomes if o.ok}
        statuses = []
        for device, deployments in desired.items():
            for name, body in deployments.items():
                digest = bodies.body_digest(body)
                key = (device, name)
                if key in errors:
                    error, attempts = errors[key]
                    statuses.append(StatusRecord(device, name, "failed", error, attempts, now))
                elif key in done or applied.get(device, {}).get(name) == digest:
                    statuses.append(StatusRecord(device, name, "synced", None, 0, now))
                else:
                    statuses.append(StatusRecord(device, name, "progressing", None, 0, now))
        events = [_event(o) for o in outcomes]
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
            applied=tuple(
                (a.device, a.deployment, a.digest) for a in done.values() if isinstance(a, Deploy)
            ),
            removed=tuple(
                (a.device, a.deployment) for a in done.values() if isinstance(a, Undeploy)
            ),
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
