"""Placement: which device runs each step of each deployment, and why (design §2, Placement).

This is a purely computational function with no side-effects: the desired snapshot, the fleet
as observed and the previous placement go in, a `Placement` with a status and a reason a person
understands for every step comes out. Time is passed in (`now`), never read. It is consumed by
`bodies.deploy_bodies`, which turns fully placed deployments into wire bodies, and by the
status pages and the `plan` command, which show the reasons.

Where design §2 leaves room: a step without `device` tries its `failovers` in order before the
least loaded candidate, and a selector step's failovers must match its selector too; a named
device that lacks an import of the module is as final as an unknown one (unplaceable, unless a
failover takes the step); an unknown `online_since` counts as online long enough to return to.
Sticky with bounded rebalancing: until `settle_until` (a cold start) a step without `device` or
`selector` that has no device to keep waits, so that it is placed on the fleet that came up
rather than on the first devices seen; after it, such steps move when the loads drift apart
(`balancing`, the rule in docs/operations.md).

A pass indexes the eligible devices by interface and by label once, so a step costs a few set
operations and a heap pop, never a scan of the fleet.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from typing import NamedTuple, TypeAlias

from ..models import Deployment, DeviceId, DeviceState, DeviceView, Snapshot
from .balancing import Balance, Heap, least_loaded_heap, rebalance, top

StepKey: TypeAlias = tuple[str, int]
"""(deployment name, index of the step in its sequence)."""

Labels: TypeAlias = tuple[tuple[str, str], ...]
_Key: TypeAlias = str | tuple[str, str]
"""An interface name or a (label, value) pair: what the fleet index is keyed by."""

# Candidate lists longer than this are summarised in reasons.
NAMED_CANDIDATES = 5


class StepStatus(StrEnum):
    PLACED = "placed"
    WAITING = "waiting"
    """Some known device could take the step once it is eligible again."""
    UNPLACEABLE = "unplaceable"
    """No known device could ever take the step: fix the repository or add a device."""


@dataclass(frozen=True)
class StepPlacement:
    device: DeviceId | None
    status: StepStatus
    reason: str


@dataclass(frozen=True)
class Placement:
    steps: Mapping[StepKey, StepPlacement]
    complete: frozenset[str]
    """Deployments whose every step is placed: the only ones deployed anywhere."""
    settling: frozenset[StepKey] = frozenset()
    """Steps that wait for the settle window to end (the reconciler wakes then)."""

    def devices(self) -> dict[StepKey, DeviceId]:
        """The device of every placed step: the `previous` of the next pass."""
        return {key: step.device for key, step in self.steps.items() if step.device is not None}


def place(
    snapshot: Snapshot,
    *,
    fleet: Mapping[DeviceId, DeviceView],
    previous: Mapping[StepKey, DeviceId],
    now: float,
    return_after: float = 30.0,
    settle_until: float = 0.0,
    balance: Balance = Balance(),  # noqa: B008  (frozen: one shared default is safe)
) -> Placement:
    """A device, status and reason for every step of every deployment in `snapshot`.

    Before `settle_until`, steps without `device` or `selector` are placed only where they
    already are (or on a failover); after it, such steps are balanced by `balance`.
    """
    requirements = {
        name: frozenset(module.requirements) for name, module in snapshot.modules.items()
    }
    selectors = {
        label
        for deployment in snapshot.deployments.values()
        for step in deployment.sequence
        for label in (step.selector or {}).items()
    }
    index = _FleetIndex(fleet, wanted=frozenset().union(selectors, *requirements.values()))
    rules = _Rules(index, previous, now, return_after)
    results: dict[StepKey, StepPlacement | _Choice] = {}
    free: dict[StepKey, frozenset[str]] = {}
    """The steps without `device` or `selector`, with the imports they need."""
    settling = now < settle_until
    waiting: set[StepKey] = set()
    for name in sorted(snapshot.deployments):
        for number, step in enumerate(snapshot.deployments[name].sequence):
            key = (name, number)
            needs = requirements.get(step.module)
            if needs is None:  # a valid snapshot never gets here; bad data is never fatal
                results[key] = _unplaceable(f"module {step.module!r} is not in the snapshot")
                continue
            selector = tuple(sorted((step.selector or {}).items()))
            target = _Target(key, step.module, needs, step.device, selector, (*step.failovers,))
            result = rules.resolve(target)
            if step.device is None and not selector:
                free[key] = needs
                if settling and isinstance(result, _Choice):
                    result = _settling(result, settle_until - now)
                    waiting.add(key)
            results[key] = result
    incomplete = {
        key[0]
        for key, result in results.items()
        if isinstance(result, StepPlacement) and result.status is not StepStatus.PLACED
    }
    # Loads count only steps of deployments that will run: a waiting step must not push the
    # other deployments around (it only affects its own).
    load: dict[DeviceId, int] = {}
    for key, result in results.items():
        if isinstance(result, StepPlacement) and result.device and key[0] not in incomplete:
            load[result.device] = load.get(result.device, 0) + 1
    # Fixed choices (named, sticky, failover) were counted first, so the free choices below
    # balance around them instead of piling onto a device that sticky steps already fill.
    heaps: dict[frozenset[DeviceId], Heap] = {}
    steps: dict[StepKey, StepPlacement] = {}
    for key, result in results.items():
        if isinstance(result, StepPlacement):
            steps[key] = result
            continue
        heap = heaps.get(result.candidates)
        if heap is None:
            heap = heaps[result.candidates] = least_loaded_heap(result.candidates)
        steps[key] = _least_loaded(result, heap=heap, load=load, counts=key[0] not in incomplete)
    if not settling:
        _balance(steps, free=free, incomplete=incomplete, index=index, load=load, balance=balance)
    complete = frozenset(snapshot.deployments) - incomplete
    return Placement(steps=steps, complete=complete, settling=frozenset(waiting))


def _settling(choice: _Choice, left: float) -> StepPlacement:
    why = f"waiting {left:.0f} s more for the fleet to settle before placing it"
    return StepPlacement(None, StepStatus.WAITING, "; ".join([*choice.prefix, why]))


def _balance(
    steps: dict[StepKey, StepPlacement],
    *,
    free: Mapping[StepKey, frozenset[str]],
    incomplete: set[str],
    index: _FleetIndex,
    load: dict[DeviceId, int],
    balance: Balance,
) -> None:
    """Move free steps of running deployments off devices that carry too many (in place)."""
    movable = {
        key: step.device
        for key, step in steps.items()
        if step.device is not None and key in free and key[0] not in incomplete
    }
    moves = rebalance(
        movable, candidates=lambda key: index.capable(free[key]), load=load,
        eligible=index.eligible, balance=balance,
    )  # fmt: skip
    for move in moves:
        steps[move.key] = _placed(
            move.target,
            f"moved from {move.source} ({_steps(move.source_load)}) to {move.target} "
            f"({_steps(move.target_load)}) to balance",
        )


def deployment_status(placement: Placement, deployment: Deployment) -> tuple[bool, tuple[str, ...]]:
    """Whether every step is placed, and why each step that is not is not."""
    reasons = []
    for number, step in enumerate(deployment.sequence):
        result = placement.steps.get((deployment.name, number))
        status, why = (result.status, result.reason) if result else ("missing", "not planned")
        if status is not StepStatus.PLACED:
            reasons.append(f"step {number + 1} ({step.module}.{step.function}) {status}: {why}")
    return not reasons, tuple(reasons)


def ineligibility(view: DeviceView) -> str:
    """Why a device is not eligible, as `offline and cordoned`; empty when it is."""
    parts = [] if view.state is DeviceState.ONLINE else [view.state.value]
    if not view.admitted:
        parts.append("not admitted")
    if view.cordoned:
        parts.append("cordoned")
    return " and ".join(parts)


@dataclass(frozen=True)
class _Target:
    key: StepKey
    module: str
    needs: frozenset[str]
    device: DeviceId | None
    selector: Labels
    failovers: tuple[DeviceId, ...]


@dataclass(frozen=True)
class _Choice:
    """A step that goes to the least loaded of `candidates` (never empty)."""

    candidates: frozenset[DeviceId]
    prefix: tuple[str, ...]
    """Why the earlier options (previous device, failovers) were not taken."""


class _Problem(NamedTuple):
    """Why a device cannot take a step; `passing` when that may change without a commit."""

    device: DeviceId
    text: str
    passing: bool


class _FleetIndex:
    """The fleet, indexed once per pass: devices by interface and by label.

    Only the interfaces some module imports and the labels some selector names are indexed:
    devices offer dozens of WASI calls that no step asks for. Keys are an interface name or a
    (label, value) pair; `known` indexes devices in any state, `usable` eligible ones only.
    """

    def __init__(self, fleet: Mapping[DeviceId, DeviceView], *, wanted: frozenset[_Key]) -> None:
        self.devices = fleet
        self.eligible = frozenset(name for name, view in fleet.items() if view.is_eligible)
        self._wanted = wanted
        self._built = False
        self.known: dict[_Key, set[DeviceId]] = {}
        self.usable: dict[_Key, set[DeviceId]] = {}
        self._memo: dict[tuple[frozenset[str], Labels, bool], frozenset[DeviceId]] = {}
        self._interned: dict[frozenset[DeviceId], frozenset[DeviceId]] = {}

    def _build(self) -> None:
        """Index the fleet, on the first free choice: a pass of sticky steps never needs it."""
        self._built = True
        wanted, eligible = self._wanted, self.eligible
        groups: dict[frozenset[str], tuple[list[DeviceId], list[DeviceId]]] = {}
        for name, view in self.devices.items():
            usable = name in eligible
            group = groups.get(view.interfaces)
            if group is None:
                group = groups[view.interfaces] = ([], [])
            group[0].append(name)
            if usable:
                group[1].append(name)
            for label in view.labels.items():
                if label in wanted:
                    self.known.setdefault(label, set()).add(name)
                    if usable:
                        self.usable.setdefault(label, set()).add(name)
        for interfaces, (every, usable_names) in groups.items():
            for key in interfaces & wanted:
                self.known.setdefault(key, set()).update(every)
                self.usable.setdefault(key, set()).update(usable_names)

    def fits(self, name: DeviceId, needs: frozenset[str], selector: Labels) -> bool:
        """`name in capable(needs, selector=selector)`, without building the index."""
        if name not in self.eligible:
            return False
        view = self.devices[name]
        return needs <= view.interfaces and all(view.labels.get(k) == v for k, v in selector)

    def capable(
        self, needs: frozenset[str], *, selector: Labels = (), known: bool = False
    ) -> frozenset[DeviceId]:
        """Eligible (or with `known`, all) devices offering `needs` and labelled `selector`."""
        memo = (needs, selector, known)
        found = self._memo.get(memo)
        if found is None:
            if not self._built:
                self._build()
            every, index = (
                (frozenset(self.devices), self.known) if known else (self.eligible, self.usable)
            )
            # Smallest set first: the intersection can only shrink.
            keys: list[_Key] = [*needs, *selector]
            sets = sorted((index.get(key, set()) for key in keys), key=len)
            found = frozenset(sets[0].intersection(*sets[1:])) if sets else every
            # One object per distinct set: heaps are keyed by candidate sets, and comparing
            # two equal sets of 10,000 devices on every lookup would cost more than placing.
            found = self._memo[memo] = self._interned.setdefault(found, found)
        return found

    def why_not(self, name: DeviceId, needs: frozenset[str]) -> _Problem | None:
        """Why `name` cannot take a step needing `needs`; None when it can."""
        view = self.devices.get(name)
        if view is None:
            return _Problem(name, f"{name} is unknown", passing=False)
        missing = sorted(needs - view.interfaces)
        if missing:
            # Checked before eligibility: an offline device lacking an import will not gain
            # it by coming back, so it never makes the step wait.
            plural = "s" if len(missing) > 1 else ""
            text = f"{name}: lacks interface{plural} {', '.join(missing)}"
            return _Problem(name, text, passing=False)
        if name not in self.eligible:
            return _Problem(name, f"{name} is {ineligibility(view)}", passing=True)
        return None


@dataclass(frozen=True)
class _Rules:
    """The placement rules of design §2, applied to one step at a time."""

    index: _FleetIndex
    previous: Mapping[StepKey, DeviceId]
    now: float
    return_after: float

    def resolve(self, target: _Target) -> StepPlacement | _Choice:
        return self._free(target) if target.device is None else self._named(target, target.device)

    def _named(self, target: _Target, named: DeviceId) -> StepPlacement:
        index = self.index
        named_problem = index.why_not(named, target.needs)
        before = self.previous.get(target.key)
        failovers = [name for name in target.failovers if name != named]
        if before in failovers and index.why_not(before, target.needs) is None:
            if named_problem is None:
                since = index.devices[named].online_since
                # An unknown start is taken as long ago: no evidence says the device is flapping.
                online_for = None if since is None else self.now - since
                if online_for is not None and online_for < self.return_after:
                    return _placed(
                        before,
                        f"sticky on failover {before}: {named} online for only "
                        f"{online_for:.0f} s of {self.return_after:g} s",
                    )
                back = "" if online_for is None else f" for {online_for:.0f} s"
                return _placed(named, f"{named} back online{back}; returned from failover {before}")
            return _placed(before, f"{named_problem.text}; sticky on failover {before}")
        if named_problem is None:
            return _placed(named, f"on {named} as named")
        problems = [named_problem]
        for name in failovers:
            problem = index.why_not(name, target.needs)
            if problem is None:
                texts = [p.text for p in problems]
                return _placed(name, "; ".join([*texts, f"on failover {name}"]))
            problems.append(problem)
        reasons = "; ".join(problem.text for problem in problems)
        waiting_for = [problem.device for problem in problems if problem.passing]
        if waiting_for:
            return StepPlacement(
                None, StepStatus.WAITING, f"{reasons}; waiting for {' or '.join(waiting_for)}"
            )
        return _unplaceable(f"{reasons}; no known device can take it")

    def _free(self, target: _Target) -> StepPlacement | _Choice:
        before = self.previous.get(target.key)
        if before is not None and self.index.fits(before, target.needs, target.selector):
            return _placed(before, f"sticky on {before}")
        candidates = self.index.capable(target.needs, selector=target.selector)
        prefix: list[str] = []
        if before in candidates:
            return _placed(before, f"sticky on {before}")
        tried = dict.fromkeys([*([] if before is None else [before]), *target.failovers])
        for name in tried:
            if name in candidates:
                return _placed(name, "; ".join([*prefix, f"on failover {name}"]))
            # A device that is eligible and capable but not a candidate fails the selector.
            problem = self.index.why_not(name, target.needs)
            prefix.append(problem.text if problem else f"{name} does not match {_labels(target)}")
        if candidates:
            return _Choice(candidates, tuple(prefix))
        status, why = self._stuck(target)
        return StepPlacement(None, status, "; ".join([*prefix, why]))

    def _stuck(self, target: _Target) -> tuple[StepStatus, str]:
        """Why no device can take a step without `device` now, and whether one may later."""
        if not self.index.capable(target.needs, known=True):
            if not target.needs:
                return StepStatus.UNPLACEABLE, "no device is known"
            imports = ", ".join(sorted(target.needs))
            return (
                StepStatus.UNPLACEABLE,
                f"no known device offers every import of {target.module}: {imports}",
            )
        if not target.selector:
            offering = f" offering {', '.join(sorted(target.needs))}" if target.needs else ""
            return StepStatus.WAITING, f"no eligible device{offering}; waiting"
        # Labels come from devices.yaml and devices come and go: a selector step always waits.
        matching = sorted(self.index.capable(frozenset(), selector=target.selector, known=True))
        if not matching:
            return StepStatus.WAITING, f"no known device matches {_labels(target)}; waiting"
        problems = (self.index.why_not(name, target.needs) for name in matching)
        shown = [problem.text for problem in islice(problems, NAMED_CANDIDATES) if problem]
        if len(matching) > len(shown):
            shown.append(f"{len(matching) - len(shown)} more")
        why = "; ".join(shown)
        return StepStatus.WAITING, f"no eligible device matches {_labels(target)} ({why}); waiting"


def _least_loaded(
    choice: _Choice, *, heap: Heap, load: dict[DeviceId, int], counts: bool
) -> StepPlacement:
    # Loads only grow while free choices are made: a stale heap entry is too small (`top`).
    steps, device = top(heap, load)
    heapq.heappop(heap)
    tied = bool(heap) and top(heap, load)[0] == steps
    if counts:
        load[device] = steps + 1
    heapq.heappush(heap, (load.get(device, 0), device))
    if len(choice.candidates) == 1:
        reason = f"only candidate: {device}"
    else:
        among, loads = f"{len(choice.candidates)} devices", f"{device}: {_steps(steps)}"
        # Short candidate lists are spelled out; a reason naming 10,000 devices helps nobody.
        if len(choice.candidates) <= NAMED_CANDIDATES:
            among = ", ".join(sorted(choice.candidates))
            others = (load.get(name, 0) for name in choice.candidates if name != device)
            if all(count == steps for count in others):
                loads = f"{_steps(steps)} each"
        reason = f"least loaded of {among} ({loads})" + ("; first by name" if tied else "")
    return _placed(device, "; ".join([*choice.prefix, reason]))


def _labels(target: _Target) -> str:
    return ", ".join(f"{key}={value}" for key, value in target.selector)


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _placed(device: DeviceId, reason: str) -> StepPlacement:
    return StepPlacement(device, StepStatus.PLACED, reason)


def _unplaceable(reason: str) -> StepPlacement:
    return StepPlacement(None, StepStatus.UNPLACEABLE, reason)
