"""Review: what merging a change would do to the fleet (design §3, `plan`).

This is a purely computational function with no side-effects: two snapshots (base and head),
the facts of both commits' modules and a device inventory go in; a `Review` comes out: per
device, the deployments and modules it gains, changes and loses (with reasons), the steps that
cannot be placed or wait for a device, the breaking changes between module versions, and what
the prune guard would hold. Both commits are placed against the same inventory, head with base's
placement as the previous one, so stickiness shows what would really move. The `review` shell
module loads the commits and the inventory; `report` renders the result. Nothing here reads a
file, a clock or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from ..models import (
    Admission,
    DeviceId,
    Devices,
    DeviceView,
    Problem,
    Snapshot,
)
from . import bodies, planning
from .balancing import Balance
from .placement import Placement, StepKey, StepStatus, place

PLACEHOLDER_URL = "http://orchestrator"
"""The orchestrator's URL in both commits' bodies: only digests and endpoints are compared."""
# A review shows what the change itself does: the moves balancing makes afterwards follow the
# fleet's loads, not the commit, and are bounded and shown by the orchestrator as they happen.
NO_BALANCING = Balance(moves=0)


class Change(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


class BreakingKind(StrEnum):
    EXPORT_REMOVED = "export-removed"
    PARAMS_CHANGED = "params-changed"
    NEW_IMPORT = "new-import"


@dataclass(frozen=True)
class ModuleFacts:
    """What a module is in one commit: enough to compare two versions of it."""

    name: str
    wasm: str
    digest: str | None
    """The binary's sha256; None when it could not be read (its problem is listed)."""
    size: int | None
    exports: Mapping[str, int] = field(default_factory=dict)
    """Exported functions of the binary: name -> parameter count."""
    imports: tuple[str, ...] = ()
    """Every import of the binary, as `module.name`."""
    requirements: tuple[str, ...] = ()
    """The host functions a device must offer to run it (`supervisorInterfaces`)."""
    functions: Mapping[str, str] = field(default_factory=dict)
    """Functions declared in module.yaml -> their signature (`review.signature`)."""
    data: Mapping[str, str] = field(default_factory=dict)
    """Data file name -> sha256."""


@dataclass(frozen=True)
class CommitFacts:
    """The modules of one commit and which module functions its deployments call."""

    modules: Mapping[str, ModuleFacts] = field(default_factory=dict)
    calls: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """Deployment -> (module, function) of each step, in order."""


@dataclass(frozen=True)
class ModuleChange:
    name: str
    change: Change
    base: ModuleFacts | None
    head: ModuleFacts | None
    details: tuple[str, ...]
    """What differs, one fact per line, for people."""


@dataclass(frozen=True)
class DeploymentChange:
    """One deployment gained, changed or lost by one device."""

    deployment: str
    steps: tuple[str, ...]
    """`module.function` of its steps on this device (base's for a loss, head's otherwise)."""
    reason: str
    details: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    """Changed modules this deployment runs here."""


@dataclass(frozen=True)
class DeviceChange:
    device: DeviceId
    state: str
    gains: tuple[DeploymentChange, ...] = ()
    changes: tuple[DeploymentChange, ...] = ()
    loses: tuple[DeploymentChange, ...] = ()
    modules_gained: tuple[str, ...] = ()
    modules_changed: tuple[str, ...] = ()
    modules_lost: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepIssue:
    """A step of head that is not placed: `step` counts from 1."""

    deployment: str
    step: int
    module: str
    function: str
    reason: str


@dataclass(frozen=True)
class Breaking:
    """A module version change that breaks a deployment still using it."""

    kind: BreakingKind
    module: str
    function: str | None
    message: str
    callers: tuple[str, ...]
    """`deployment step N` of every step affected."""
    base: str
    head: str


@dataclass(frozen=True)
class Review:
    base_sha: str | None
    head_sha: str | None
    base_valid: bool
    head_problems: tuple[Problem, ...]
    devices: tuple[DeviceChange, ...]
    modules: tuple[ModuleChange, ...]
    unplaceable: tuple[StepIssue, ...]
    waiting: tuple[StepIssue, ...]
    breaking: tuple[Breaking, ...]
    hold: planning.Hold | None
    notes: tuple[str, ...]
    fleet: int
    """Devices in the inventory placement used."""

    @property
    def valid(self) -> bool:
        return not self.head_problems

    @property
    def ok(self) -> bool:
        """Head is valid and every step can be placed: `plan` exits 0."""
        return self.valid and not self.unplaceable

    @property
    def summary(self) -> str:
        """One line, first in every format: `3 devices change, 1 step cannot be placed`."""
        if not self.valid:
            parts = [
                f"head is not valid ({_count(len(self.head_problems), 'problem')}): "
                "the orchestrator would reject it and change nothing"
            ]
        elif self.devices:
            count = len(self.devices)
            parts = [f"{_count(count, 'device')} change{'s' if count == 1 else ''}"]
        else:
            parts = ["no device changes"]
        if self.unplaceable:
            parts.append(f"{_count(len(self.unplaceable), 'step')} cannot be placed")
        if self.breaking:
            parts.append(_count(len(self.breaking), "breaking change"))
        if self.waiting:
            count = len(self.waiting)
            verb = "waits" if count == 1 else "wait"
            parts.append(f"{_count(count, 'step')} {verb} for a device")
        if self.hold:
            parts.append("held by the prune guard")
        return ", ".join(parts)


def fleet_for(observed: Mapping[DeviceId, DeviceView], devices: Devices) -> dict[str, DeviceView]:
    """The inventory with one commit's `devices.yaml` applied (labels, admission, cordons)."""
    fleet = {}
    for name, view in observed.items():
        entry = devices.devices.get(name)
        fleet[name] = replace(
            view,
            labels=dict(entry.labels) if entry else {},
            admitted=devices.admission is Admission.OPEN or entry is not None,
            cordoned=entry.cordoned if entry else False,
        )
    return fleet


def review(
    base: Snapshot | None,
    head: Snapshot | None,
    *,
    inventory: Mapping[DeviceId, DeviceView],
    now: float,
    base_facts: CommitFacts,
    head_facts: CommitFacts,
    head_problems: Sequence[Problem] = (),
    running: Mapping[StepKey, DeviceId] | None = None,
    return_after: float = 30.0,
    prune_limit: float = 0.5,
    notes: Sequence[str] = (),
) -> Review:
    """What merging head onto base would do to the devices of `inventory`.

    `inventory` holds the devices as observed (their labels, admission and cordons come from
    each commit's devices.yaml); `running`, when known, where the orchestrator runs base's
    steps now (base is placed sticky to it); the facts, each commit's modules and calls, also
    of a commit with problems. A head with problems (`head` None) changes nothing: only its
    problems and the breaking changes visible in `head_facts` are reported.
    """
    notes = list(notes)
    if base is None:
        notes.append("base is not valid: compared with an empty fleet")
    base_fleet = fleet_for(inventory, base.devices) if base else {}
    base_placed = (
        place(
            base,
            fleet=base_fleet,
            previous=running or {},
            now=now,
            return_after=return_after,
            balance=NO_BALANCING,
        )
        if base
        else Placement(steps={}, complete=frozenset())
    )
    modules = tuple(_module_changes(base_facts, head_facts))
    changed = {change.name: change for change in modules if change.change is Change.CHANGED}
    if head is None or head_problems:
        return Review(
            base_sha=base.commit_sha if base else None, head_sha=head.commit_sha if head else None,
            base_valid=base is not None, head_problems=tuple(head_problems), devices=(),
            modules=modules, unplaceable=(), waiting=(),
            breaking=_breaking(base_facts, head_facts, base_placed, None, inventory),
            hold=None, notes=tuple(notes), fleet=len(inventory),
        )  # fmt: skip
    head_fleet = fleet_for(inventory, head.devices)
    head_placed = place(
        head, fleet=head_fleet, previous=base_placed.devices(), now=now,
        return_after=return_after, balance=NO_BALANCING,
    )  # fmt: skip
    base_bodies = (
        bodies.deploy_bodies(
            base, placement=base_placed, fleet=base_fleet, base_url=PLACEHOLDER_URL
        )
        if base
        else {}
    )
    head_bodies = bodies.deploy_bodies(
        head, placement=head_placed, fleet=head_fleet, base_url=PLACEHOLDER_URL
    )
    applied = {
        device: {name: bodies.body_digest(body) for name, body in deployed.items()}
        for device, deployed in base_bodies.items()
    }
    planned = planning.plan(
        head_bodies, applied=applied, fleet=head_fleet, prune_limit=prune_limit,
        deployments=frozenset(head.deployments),
    )  # fmt: skip
    differ = _Differ(base, head, base_placed, head_placed, head_fleet, changed)
    devices = []
    for device in sorted(set(base_bodies) | set(head_bodies)):
        change = differ.device(device, base_bodies.get(device, {}), head_bodies.get(device, {}))
        if change is not None:
            devices.append(change)
    issues: dict[StepStatus, list[StepIssue]] = {StepStatus.UNPLACEABLE: [], StepStatus.WAITING: []}
    for (name, number), step in sorted(head_placed.steps.items()):
        if step.status in issues:
            spec = head.deployments[name].sequence[number]
            issue = StepIssue(name, number + 1, spec.module, spec.function, step.reason)
            issues[step.status].append(issue)
    return Review(
        base_sha=base.commit_sha if base else None, head_sha=head.commit_sha,
        base_valid=base is not None, head_problems=(), devices=tuple(devices), modules=modules,
        unplaceable=tuple(issues[StepStatus.UNPLACEABLE]),
        waiting=tuple(issues[StepStatus.WAITING]),
        breaking=_breaking(base_facts, head_facts, base_placed, head_placed, inventory),
        hold=planned.hold, notes=tuple([*notes, *planned.notes]), fleet=len(inventory),
    )  # fmt: skip


# Modules


def _module_changes(base: CommitFacts, head: CommitFacts) -> list[ModuleChange]:
    changes = []
    for name in sorted(set(base.modules) | set(head.modules)):
        old, new = base.modules.get(name), head.modules.get(name)
        if old is None:
            changes.append(ModuleChange(name, Change.ADDED, None, new, ()))
        elif new is None:
            changes.append(ModuleChange(name, Change.REMOVED, old, None, ()))
        elif old != new:
            changes.append(ModuleChange(name, Change.CHANGED, old, new, _module_details(old, new)))
    return changes


def _module_details(old: ModuleFacts, new: ModuleFacts) -> tuple[str, ...]:
    details = []
    if old.digest != new.digest:
        size = ""
        if old.size is not None and new.size is not None:
            size = f" ({old.size} → {new.size} bytes, {new.size - old.size:+d})"
        details.append(f"binary sha256:{_short(old.digest)} → sha256:{_short(new.digest)}{size}")
    if old.wasm != new.wasm:
        details.append(f"wasm file {old.wasm} → {new.wasm}")
    added, removed, kept = _split(old.exports, new.exports)
    if added:
        details.append("exports added: " + ", ".join(f"{n}({new.exports[n]})" for n in added))
    if removed:
        details.append("exports removed: " + ", ".join(f"{n}({old.exports[n]})" for n in removed))
    for name in kept:
        if old.exports[name] != new.exports[name]:
            details.append(
                f"export {name}: {_count(old.exports[name], 'parameter')} → {new.exports[name]}"
            )
    added, removed, _ = _split(dict.fromkeys(old.imports), dict.fromkeys(new.imports))
    if added:
        details.append("imports added: " + ", ".join(added))
    if removed:
        details.append("imports removed: " + ", ".join(removed))
    added, removed, kept = _split(old.data, new.data)
    changed = [name for name in kept if old.data[name] != new.data[name]]
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            details.append(f"data files {label}: " + ", ".join(names))
    added, removed, kept = _split(old.functions, new.functions)
    for name in added:
        details.append(f"function {name} declared: {new.functions[name]}")
    for name in removed:
        details.append(f"function {name} no longer declared")
    for name in kept:
        if old.functions[name] != new.functions[name]:
            details.append(f"function {name}: {old.functions[name]} → {new.functions[name]}")
    return tuple(details)


def _split(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], ...]:
    """Keys only in `new`, only in `old`, and in both; each sorted."""
    return (
        sorted(new.keys() - old.keys()),
        sorted(old.keys() - new.keys()),
        sorted(old.keys() & new.keys()),
    )


# Breaking changes


def _breaking(
    base: CommitFacts,
    head: CommitFacts,
    base_placed: Placement,
    head_placed: Placement | None,
    inventory: Mapping[DeviceId, DeviceView],
) -> tuple[Breaking, ...]:
    """Exports removed or changed that head's deployments still call; new imports (below)."""
    callers: dict[tuple[str, str], list[StepKey]] = {}
    steps_of: dict[str, list[StepKey]] = {}
    for name, calls in sorted(head.calls.items()):
        for number, call in enumerate(calls):
            callers.setdefault(call, []).append((name, number))
            steps_of.setdefault(call[0], []).append((name, number))
    found = []
    for name in sorted(base.modules.keys() & head.modules.keys()):
        old, new = base.modules[name], head.modules[name]
        if new.digest is None:  # an unreadable binary: its problem is listed
            continue
        for function in sorted(old.exports):
            who = tuple(f"{d} step {n + 1}" for d, n in callers.get((name, function), ()))
            count = new.exports.get(function)
            if not who or count == old.exports[function]:
                continue
            had = _count(old.exports[function], "parameter")
            before = f"{_binary(old)} exports {function} with {had}"
            if count is None:
                exports = ", ".join(f"{n}({c})" for n, c in sorted(new.exports.items()))
                after = f"{_binary(new)} exports {exports or 'nothing'}"
                message = f"{name}.{function} is no longer exported, but {_join(who)} calls it"
                kind = BreakingKind.EXPORT_REMOVED
            else:
                after = f"{_binary(new)} exports {function} with {_count(count, 'parameter')}"
                message = (
                    f"{name}.{function} takes {_count(count, 'parameter')} instead of "
                    f"{old.exports[function]}, and {_join(who)} still calls it"
                )
                kind = BreakingKind.PARAMS_CHANGED
            found.append(Breaking(kind, name, function, message, who, before, after))
        needs = frozenset(new.requirements) - frozenset(old.requirements)
        if needs:
            steps = steps_of.get(name, [])
            found.extend(_lacking(old, needs, steps, base_placed, head_placed, inventory))
    return tuple(found)


def _lacking(
    old: ModuleFacts,
    needs: frozenset[str],
    steps: list[StepKey],
    base_placed: Placement,
    head_placed: Placement | None,
    inventory: Mapping[DeviceId, DeviceView],
) -> list[Breaking]:
    """New imports that devices running the module lack: their steps move, wait or stop."""
    by_device: dict[DeviceId, list[tuple[str, str]]] = {}
    for key in steps:
        before = base_placed.steps.get(key)
        view = inventory.get(before.device) if before and before.device else None
        if view is None or needs <= view.interfaces:
            continue
        caller = f"{key[0]} step {key[1] + 1}"
        after = head_placed.steps.get(key) if head_placed else None
        if after is None:
            outcome = caller
        elif after.status is StepStatus.PLACED:
            outcome = f"{caller} moves to {after.device}"
        else:
            verb = "cannot be placed" if after.status is StepStatus.UNPLACEABLE else "waits"
            outcome = f"{caller} {verb}: {after.reason}"
        by_device.setdefault(view.name, []).append((caller, outcome))
    found = []
    for device, entries in sorted(by_device.items()):
        lacks = ", ".join(sorted(needs - inventory[device].interfaces))
        outcomes = "; ".join(outcome for _, outcome in entries)
        message = f"{old.name} now imports {lacks}, which {device} lacks: {outcomes}"
        was = f"{_binary(old)} needs {', '.join(old.requirements) or 'no host function'}"
        now = f"needs {', '.join(sorted(needs))} too; {device} offers none of {lacks}"
        callers = tuple(caller for caller, _ in entries)
        found.append(Breaking(BreakingKind.NEW_IMPORT, old.name, None, message, callers, was, now))
    return found


# Devices


class _Differ:
    """Compares what one device runs in base and in head, and says why."""

    def __init__(
        self,
        base: Snapshot | None,
        head: Snapshot,
        base_placed: Placement,
        head_placed: Placement,
        fleet: Mapping[DeviceId, DeviceView],
        changed: Mapping[str, ModuleChange],
    ) -> None:
        self.base, self.head = base, head
        self.base_placed, self.head_placed = base_placed, head_placed
        self.fleet = fleet
        self.by_url = {view.url: name for name, view in fleet.items()}
        self.changed = changed

    def device(
        self, device: DeviceId, old: Mapping[str, bodies.Body], new: Mapping[str, bodies.Body]
    ) -> DeviceChange | None:
        gains = tuple(self._gain(device, name, new[name]) for name in sorted(new.keys() - old))
        loses = tuple(self._loss(device, name, old[name]) for name in sorted(old.keys() - new))
        changes = tuple(
            self._change(device, name, old[name], new[name])
            for name in sorted(old.keys() & new.keys())
            if old[name] != new[name]  # deep equality: cheaper than digests, same answer
        )
        if not (gains or loses or changes):
            return None
        before = {m for body in old.values() for m in body["endpoints"]}
        after = {m for body in new.values() for m in body["endpoints"]}
        view = self.fleet.get(device)
        return DeviceChange(
            device, view.state.value if view else "unknown", gains, changes, loses,
            modules_gained=tuple(sorted(after - before)),
            modules_changed=tuple(sorted(m for m in before & after if m in self.changed)),
            modules_lost=tuple(sorted(before - after)),
        )  # fmt: skip

    def _gain(self, device: DeviceId, name: str, body: bodies.Body) -> DeploymentChange:
        steps = _steps(body)
        if self.base is None or name not in self.base.deployments:
            reason = "new deployment"
        elif name not in self.base_placed.complete:
            reason = "now fully placed (" + _first_unplaced(self.base_placed, self.base, name) + ")"
        else:
            reason = "; ".join(self._moves(name, device, here=True)) or "placed here"
        return DeploymentChange(name, steps, reason, modules=self._changed_in(body))

    def _loss(self, device: DeviceId, name: str, body: bodies.Body) -> DeploymentChange:
        if name not in self.head.deployments:
            reason = "removed from the repository"
        elif name not in self.head_placed.complete:
            unplaced = _first_unplaced(self.head_placed, self.head, name)
            reason = f"not fully placed, so deployed nowhere ({unplaced})"
        else:
            reason = "; ".join(self._moves(name, device, here=False)) or "no longer placed here"
        return DeploymentChange(name, _steps(body), reason)

    def _change(
        self, device: DeviceId, name: str, old: bodies.Body, new: bodies.Body
    ) -> DeploymentChange:
        details: list[str] = []
        before, after = _endpoints(old), _endpoints(new)
        for key in sorted(after.keys() - before.keys()):
            details.extend(self._moves(name, device, here=True, only=key))
        for key in sorted(before.keys() - after.keys()):
            details.extend(self._moves(name, device, here=False, only=key))
        modules = self._changed_in(new)
        for module in modules:
            details.append(f"module {module} changed")
        old_instructions = old["instructions"]["modules"]
        new_instructions = new["instructions"]["modules"]
        for module, function in sorted(before.keys() & after.keys()):
            step = f"{module}.{function}"
            was, now = before[(module, function)], after[(module, function)]
            for part in ("method", "request", "response"):
                if was[part] != now[part]:
                    details.append(f"{step} endpoint {part}: {_endpoint_part(part, was, now)}")
            was_to = old_instructions[module][function]["to"]
            now_to = new_instructions[module][function]["to"]
            if was_to != now_to:
                details.append(
                    f"{step} now calls {self._target(now_to)} (was {self._target(was_to)})"
                )
            if old["mounts"][module][function] != new["mounts"][module][function]:
                details.append(f"{step} mounts changed")
        if not details:
            details.append("deploy body changed")
        return DeploymentChange(name, _steps(new), "; ".join(details), tuple(details), modules)

    def _moves(
        self, name: str, device: DeviceId, *, here: bool, only: tuple[str, str] | None = None
    ) -> list[str]:
        """Why steps of `name` came to `device` (`here`) or left it."""
        texts = []
        head_deployment = self.head.deployments.get(name)
        for number, step in enumerate(head_deployment.sequence if head_deployment else ()):
            if only is not None and (step.module, step.function) != only:
                continue
            before = self.base_placed.steps.get((name, number))
            after = self.head_placed.steps.get((name, number))
            was = before.device if before else None
            now = after.device if after else None
            label = f"step {number + 1} ({step.module}.{step.function})"
            if here and now == device and was != device and after:
                origin = f" from {was}" if was else ""
                texts.append(f"{label} moves here{origin}: {after.reason}")
            elif not here and was == device and now != device and after:
                texts.append(f"{label} moves to {now}: {after.reason}")
        if only is not None and not texts:
            verb = "now also runs here" if here else "no longer runs here"
            texts.append(f"{only[0]}.{only[1]} {verb}")
        return texts

    def _changed_in(self, body: bodies.Body) -> tuple[str, ...]:
        return tuple(sorted(m for m in body["endpoints"] if m in self.changed))

    def _target(self, endpoint: Mapping[str, Any] | None) -> str:
        if endpoint is None:
            return "nothing (last step)"
        parts = str(endpoint["path"]).split("/")
        device = self.by_url.get(str(endpoint["url"]), str(endpoint["url"]))
        return f"{parts[-2]}.{parts[-1]} on {device}"


def _steps(body: bodies.Body) -> tuple[str, ...]:
    return tuple(f"{module}.{function}" for module, function in _endpoints(body))


def _endpoints(body: bodies.Body) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {
        (module, function): endpoint
        for module, functions in body["endpoints"].items()
        for function, endpoint in functions.items()
    }


def _endpoint_part(key: str, was: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    if key == "method":
        return f"{was['method']} → {now['method']}"
    if key == "response":
        return f"{was['response']['media_type']} → {now['response']['media_type']}"
    old, new = len(was["request"]["parameters"]), len(now["request"]["parameters"])
    if old != new:
        return f"{_count(old, 'parameter')} → {new}"
    return "input files changed"


def _first_unplaced(placed: Placement, snapshot: Snapshot, name: str) -> str:
    for number in range(len(snapshot.deployments[name].sequence)):
        step = placed.steps.get((name, number))
        if step is None or step.status is not StepStatus.PLACED:
            status, why = (step.status.value, step.reason) if step else ("missing", "not planned")
            return f"step {number + 1} {status}: {why}"
    return "not planned"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _binary(facts: ModuleFacts) -> str:
    return f"{facts.wasm} sha256:{_short(facts.digest)}"


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "unreadable"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
