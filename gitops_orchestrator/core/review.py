"""Review: what merging a change would do to the fleet (design §3, `plan`).

This is a purely computational function with no side-effects: two snapshots (base and head),
the facts of both commits' modules and a device inventory go in; a `Review` comes out: what
the files change (deployments and devices.yaml, `repodiff`; modules, `modulediff`), per device
the deployments and modules it gains, changes and loses with reasons (`devicediff`), the steps
that cannot be placed or wait for a device, the breaking changes between module versions
(`breaking`), and the prune guard's counts (`pruneguard`). Both commits are placed against the
same inventory, head with base's placement as the previous one, so stickiness shows what would
really move. The `review` shell module loads the commits and the inventory; `report` renders the
result. Nothing here reads a file, a clock or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..models import Admission, DeviceId, Devices, DeviceState, DeviceView, Problem, Snapshot
from . import bodies, planning, wording
from .balancing import Balance
from .breaking import Breaking, breaking
from .devicediff import DeviceChange, Differ
from .modulediff import Change, CommitFacts, ModuleChange, module_changes
from .placement import Placement, StepKey, StepStatus, place
from .pruneguard import PruneGuard, prune_guard
from .repodiff import DeploymentDiff, DevicesFileDiff, deployment_diffs, devices_file_diff

PLACEHOLDER_URL = "http://orchestrator"
"""The orchestrator's URL in both commits' bodies: only digests and endpoints are compared."""
# A review shows what the change itself does: the moves balancing makes afterwards follow the
# fleet's loads, not the commit, and are bounded and shown by the orchestrator as they happen.
NO_BALANCING = Balance(moves=0)


@dataclass(frozen=True)
class StepIssue:
    """A step of head that is not placed: `step` counts from 1."""

    deployment: str
    step: int
    module: str
    function: str
    reason: str


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
    prune: PruneGuard | None
    """Set when head removes deployments that run: whether the guard would hold it, and why."""
    notes: tuple[str, ...]
    fleet: int
    """Devices in the inventory placement used."""
    deployments: tuple[DeploymentDiff, ...] = ()
    devices_yaml: DevicesFileDiff = field(default_factory=DevicesFileDiff)

    @property
    def valid(self) -> bool:
        return not self.head_problems

    @property
    def ok(self) -> bool:
        """Head is valid and every step can be placed: `plan` exits 0."""
        return self.valid and not self.unplaceable

    @property
    def summary(self) -> str:
        """One line, first in every format: what the files change, then what the devices do.

        `1 deployment added, 1 module changed; 3 devices change, 1 step cannot be placed`.
        """
        if not self.valid:
            return ", ".join([
                f"head is not valid ({wording.count(len(self.head_problems), 'problem')}): "
                "the orchestrator would reject it and change nothing",
                *self._blockers(),
            ])  # fmt: skip
        files = ", ".join(self._file_changes())
        return f"{files}; {self._device_summary()}" if files else self._device_summary()

    def _file_changes(self) -> list[str]:
        parts = []
        for kind, changes in (("deployment", self.deployments), ("module", self.modules)):
            for change in Change:
                number = sum(1 for item in changes if item.change is change)
                if number:
                    parts.append(f"{wording.count(number, kind)} {change.value}")
        if self.devices_yaml:
            parts.append("devices.yaml changed")
        return parts

    def _blockers(self) -> list[str]:
        return [wording.count(len(self.breaking), "breaking change")] if self.breaking else []

    def _device_summary(self) -> str:
        parts: list[str]
        if self.devices:
            count = len(self.devices)
            parts = [f"{wording.count(count, 'device')} change{'s' if count == 1 else ''}"]
        else:
            parts = ["no device changes"]
        if self.unplaceable:
            parts.append(f"{wording.count(len(self.unplaceable), 'step')} cannot be placed")
        parts.extend(self._blockers())
        if self.waiting:
            count = len(self.waiting)
            verb = "waits" if count == 1 else "wait"
            parts.append(f"{wording.count(count, 'step')} {verb} for a device")
        if self.prune and self.prune.held:
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
    assumed: bool = False,
) -> Review:
    """What merging head onto base would do to the devices of `inventory`.

    `inventory` holds the devices as observed (their labels, admission and cordons come from
    each commit's devices.yaml); `running`, when known, where the orchestrator runs base's
    steps now (base is placed sticky to it); the facts, each commit's modules and calls, also
    of a commit with problems. A head with problems (`head` None) changes nothing: only its
    problems and the breaking changes visible in `head_facts` are reported.

    `assumed` says the inventory was made of devices.yaml (no inventory given), so where base
    runs is not known: the prune guard then takes base's deployments as running where base
    would place them were every device of the inventory online, as the orchestrator's are.
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
    modules = tuple(module_changes(base_facts, head_facts))
    changed = {change.name: change for change in modules if change.change is Change.CHANGED}
    if head is None or head_problems:
        return Review(
            base_sha=base.commit_sha if base else None, head_sha=head.commit_sha if head else None,
            base_valid=base is not None, head_problems=tuple(head_problems), devices=(),
            modules=modules, unplaceable=(), waiting=(),
            breaking=breaking(base_facts, head_facts, base_placed, None, inventory),
            prune=None, notes=tuple(notes), fleet=len(inventory),
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
    differ = Differ(base, head, base_placed, head_placed, head_fleet, changed)
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
    guard = prune_guard(
        _running(base, inventory, now=now) if assumed and base else base_bodies,
        deployments=frozenset(head.deployments), limit=prune_limit,
    )  # fmt: skip
    if guard and assumed:
        notes.append(
            "prune guard: without an inventory, base's deployments are taken as running where "
            "base would place them were every device of devices.yaml online"
        )
    return Review(
        base_sha=base.commit_sha if base else None, head_sha=head.commit_sha,
        base_valid=base is not None, head_problems=(), devices=tuple(devices), modules=modules,
        unplaceable=tuple(issues[StepStatus.UNPLACEABLE]),
        waiting=tuple(issues[StepStatus.WAITING]),
        breaking=breaking(base_facts, head_facts, base_placed, head_placed, inventory),
        prune=guard,
        notes=tuple([*notes, *planned.notes]), fleet=len(inventory),
        deployments=deployment_diffs(base, head), devices_yaml=devices_file_diff(base, head),
    )  # fmt: skip


def _running(
    base: Snapshot, inventory: Mapping[DeviceId, DeviceView], *, now: float
) -> dict[DeviceId, dict[str, bodies.Body]]:
    """Base's bodies with every device online: what the orchestrator runs, as far as known."""
    online = {name: replace(view, state=DeviceState.ONLINE) for name, view in inventory.items()}
    fleet = fleet_for(online, base.devices)
    placed = place(base, fleet=fleet, previous={}, now=now)
    return bodies.deploy_bodies(base, placement=placed, fleet=fleet, base_url=PLACEHOLDER_URL)
