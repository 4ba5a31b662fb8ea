"""View models: what each page and each `/api/v1` answer shows, built once from the store.

Every builder reads the store (in a worker thread: callers use `asyncio.to_thread`) and returns
a frozen pydantic model; `api` renders it as JSON and `pages` as HTML, so the two never
disagree. The models are also the source of the OpenAPI schemas. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..core import openapi
from ..fleetdb import DeviceRecord
from ..models import Admission, Snapshot
from ..store import CommitRecord, Store, SyncState
from .responses import timestamp


class View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProblemView(View):
    file: str
    line: int | None
    message: str


class CommitView(View):
    sha: str
    author: str
    committed_at: str | None
    message: str
    seen_at: str | None
    status: str
    problems: list[ProblemView]
    changes: list[CommitChange] | None = None
    """For an accepted commit whose snapshot and predecessor's are kept; None otherwise."""


class CommitChange(View):
    """What an accepted commit changed against the accepted commit before it."""

    kind: str
    """module, deployment or devices"""
    name: str
    change: str
    """added, changed or removed"""


class SourceView(View):
    repo: str
    branch: str
    fetched_at: str | None
    error: str | None
    error_at: str | None


class HeadView(View):
    """The branch head, and whether the fleet runs it (a rejected head never is)."""

    sha: str
    status: str
    """accepted or rejected"""
    applied: bool
    """False while the head is rejected: nothing of it is applied and the fleet stays on
    `runs`. True when the head is the desired commit (each deployment's status says how far
    its devices have got)."""
    runs: str | None
    """The commit the fleet runs: the desired one (None before any commit was accepted)."""


class SyncView(View):
    desired: CommitView | None
    last_seen: CommitView | None
    last_rejected: CommitView | None
    source: SourceView
    head: HeadView | None
    """The branch head (the last commit seen) and whether it is applied; None before any."""


class RunsView(View):
    """One deployment a device runs or should run, with its status there."""

    deployment: str
    status: str
    error: str | None = None
    steps: list[int]


class DeviceView(View):
    name: str
    state: str
    url: str
    addresses: list[str]
    port: int
    interfaces: list[str]
    labels: dict[str, str]
    admitted: bool
    admission: str
    """Why the device may or may not get work."""
    cordoned: bool
    origin: str
    introduced_at: str | None
    online_since: str | None
    last_seen: str | None
    runs: list[RunsView]


class HealthView(View):
    at: str | None
    ok: bool
    report: dict[str, Any] | None
    error: str | None


class LogView(View):
    at: str | None
    level: str | None
    message: str
    entry: dict[str, Any]


class EventView(View):
    id: int
    at: str | None
    kind: str
    device: str | None
    deployment: str | None
    commit_sha: str | None
    message: str


class CommitDetailView(CommitView):
    previous_accepted: str | None
    """The accepted commit before this one, which `changes` compares with (None for the
    first); for a rejected commit, the one the fleet kept running."""
    events: list[EventView]
    """What happened for this commit (accepted or rejected, deploys, holds), newest first."""


class LedgerView(View):
    """One deployment on a device: what it should run, and what it acknowledged since it
    started (design §2: statuses come only from the current incarnation)."""

    deployment: str
    status: str
    """`synced` only when `applied_digest` is `desired_digest`; else `progressing`, `failed`,
    or `undeploying` for a body it runs that is no longer desired there."""
    desired_digest: str | None
    desired_commit: str | None
    applied_digest: str | None
    """The body acknowledged under the current incarnation; null when none is."""
    applied_commit: str | None
    applied_at: str | None
    pending_since: str | None
    """Since when the desired body waits to be acknowledged; null once it is."""
    error: str | None = None


class DeviceDetailView(DeviceView):
    incarnation: int
    """Grows with every restart sign (and after we could not see the device)."""
    started_at: str | None
    """When the current incarnation started, as far as we know (null: unknown)."""
    ledger: list[LedgerView]
    platform: dict[str, Any]
    health: dict[str, Any] | None
    health_history: list[HealthView]
    logs: list[LogView]
    events: list[EventView]


class FunctionView(View):
    name: str
    method: str
    params: int
    output: str


class ModuleView(View):
    name: str
    digest: str
    size: int
    functions: list[FunctionView]
    exports: dict[str, int]
    imports: list[str]
    requirements: list[str]
    data: dict[str, str]
    """Data file name -> its sha256 digest."""
    devices: list[str]
    deployments: list[str]


class ModuleDetailView(ModuleView):
    description: dict[str, Any]


class StepView(View):
    index: int
    module: str
    function: str
    device: str | None
    status: str
    reason: str
    """Why the step is where it is in the latest pass (`sticky on sup2` once it stays)."""
    placed_at: str | None = None
    """Since when the step has been on its device; None while it has none."""
    placed_reason: str | None = None
    """Why the step was placed on its device, kept while it stays there."""
    device_status: str | None
    """The deploy status of this deployment on the step's device."""
    error: str | None


class DeploymentView(View):
    name: str
    status: str
    """synced, progressing, failed, waiting or unplaceable: the worst of its steps."""
    steps: list[StepView]
    entry: str | None
    """The URL that runs the deployment on its first device."""


class OverviewView(View):
    sync: SyncView
    devices: dict[str, int]
    deployments: dict[str, int]
    events: list[EventView]


class Page(View):
    total: int
    offset: int
    limit: int


class DevicePage(Page):
    items: list[DeviceView]
    state: list[str]
    """The states asked for (`?state=`, repeatable); every state when empty."""
    search: str
    """What the names contain (`?search=`, any case); every name when empty."""


class ModulePage(Page):
    items: list[ModuleView]


class DeploymentDetailView(DeploymentView):
    head: HeadView | None
    """The branch head: when it is not applied, this deployment runs as of `head.runs`."""


class DeploymentPage(Page):
    items: list[DeploymentView]
    head: HeadView | None
    """As in `DeploymentDetailView`: the deployments listed are those of `head.runs`."""


class CommitPage(Page):
    items: list[CommitView]


class EventPage(Page):
    items: list[EventView]


# Builders. Each reads the store once per call; they run in a worker thread.


def commit_view(record: CommitRecord | None) -> CommitView | None:
    if record is None:
        return None
    return CommitView(
        sha=record.sha,
        author=record.author,
        committed_at=timestamp(record.committed_at),
        message=record.message,
        seen_at=timestamp(record.seen_at),
        status=record.status,
        problems=[
            ProblemView(file=p.file, line=p.line, message=p.message) for p in record.problems
        ],
    )


def head_view(state: SyncState) -> HeadView | None:
    """The branch head as `SyncView.head` shows it."""
    head, desired = state.last_seen, state.desired
    if head is None:
        return None
    runs = desired.sha if desired else None
    return HeadView(sha=head.sha, status=head.status, applied=head.sha == runs, runs=runs)


def sync_view(store: Store, *, repo: str, branch: str) -> SyncView:
    state = store.sync_state()
    return SyncView(
        head=head_view(state),
        desired=commit_view(state.desired),
        last_seen=commit_view(state.last_seen),
        last_rejected=commit_view(state.last_rejected),
        source=SourceView(
            repo=repo,
            branch=branch,
            fetched_at=timestamp(state.fetched_at),
            error=state.error,
            error_at=timestamp(state.error_at),
        ),
    )


class Fleet:
    """What several views share, read from the store once."""

    def __init__(self, store: Store, records: Iterable[DeviceRecord] | None = None) -> None:
        """`records` limits the devices read to those (a page of a large fleet)."""
        self.snapshot: Snapshot | None = store.desired_snapshot()
        records = store.devices() if records is None else records
        self.records = {record.device: record for record in records}
        self.steps = store.step_placements()
        self.statuses = {(s.device, s.deployment): s for s in store.deploy_statuses()}

    def device(self, record: DeviceRecord) -> DeviceView:
        config = self.snapshot.devices if self.snapshot else None
        entry = config.devices.get(record.device) if config else None
        if config is None or config.admission is Admission.OPEN:
            admitted, admission = True, "admission is open"
        elif entry is not None:
            admitted, admission = True, "listed in devices.yaml"
        else:
            admitted, admission = False, "not listed in devices.yaml (admission: listed)"
        runs: dict[str, list[int]] = {}
        for step in self.steps:
            if step.device == record.device:
                runs.setdefault(step.deployment, []).append(step.step)
        return DeviceView(
            name=record.device,
            state=record.state,
            url=record.url,
            addresses=list(record.addresses),
            port=record.port,
            interfaces=list(record.interfaces),
            labels=dict(entry.labels) if entry else {},
            admitted=admitted,
            admission=admission,
            cordoned=bool(entry and entry.cordoned),
            origin=record.origin,
            introduced_at=timestamp(record.introduced_at),
            online_since=timestamp(record.online_since),
            last_seen=timestamp(record.last_seen),
            runs=[
                RunsView(
                    deployment=name,
                    status=self._status(record.device, name),
                    error=self._error(record.device, name),
                    steps=steps,
                )
                for name, steps in sorted(runs.items())
            ],
        )

    def _status(self, device: str, deployment: str) -> str:
        status = self.statuses.get((device, deployment))
        return status.status if status else "waiting"

    def _error(self, device: str, deployment: str) -> str | None:
        status = self.statuses.get((device, deployment))
        return status.error if status else None

    def deployment(self, name: str) -> DeploymentView | None:
        spec = self.snapshot.deployments.get(name) if self.snapshot else None
        if spec is None:
            return None
        placed = {s.step: s for s in self.steps if s.deployment == name}
        steps = []
        for index, step in enumerate(spec.sequence):
            record = placed.get(index)
            device = record.device if record else None
            status = self.statuses.get((device, name)) if device else None
            steps.append(
                StepView(
                    index=index,
                    module=step.module,
                    function=step.function,
                    device=device,
                    status=record.status if record else "waiting",
                    reason=record.reason if record else "not planned yet",
                    placed_at=timestamp(record.placed_at) if record else None,
                    placed_reason=record.placed_reason if record else None,
                    device_status=status.status if status else None,
                    error=status.error if status else None,
                )
            )
        first = steps[0]
        entry_record = self.records.get(first.device) if first.device else None
        entry = (
            f"{entry_record.url}/{name}/modules/{first.module}/{first.function}"
            if entry_record
            else None
        )
        return DeploymentView(name=name, status=_worst(steps), steps=steps, entry=entry)

    def module(self, name: str) -> ModuleView | None:
        module = self.snapshot.modules.get(name) if self.snapshot else None
        if module is None or self.snapshot is None:
            return None
        using = sorted(
            d.name for d in self.snapshot.deployments.values()
            if any(step.module == name for step in d.sequence)
        )  # fmt: skip
        devices = sorted(
            {
                s.device
                for s in self.steps
                if s.device and s.deployment in using
                and self.snapshot.deployments[s.deployment].sequence[s.step].module == name
            }
        )  # fmt: skip
        return ModuleView(
            name=name,
            digest=module.binary.digest,
            size=module.binary.size,
            functions=[
                FunctionView(
                    name=f, method=spec.method.value, params=len(spec.params), output=spec.output
                )
                for f, spec in module.spec.functions.items()
            ],
            exports=dict(module.inspection.functions),
            imports=[f"{i.module}.{i.name}" for i in module.inspection.imports],
            requirements=list(module.requirements),
            data={file: facts.digest for file, facts in module.data.items()},
            devices=devices,
            deployments=using,
        )


# The order in which a deployment's status is the worst of its steps'.
SEVERITY = ("unplaceable", "failed", "waiting", "progressing", "synced")


def _worst(steps: list[StepView]) -> str:
    statuses = []
    for step in steps:
        if step.status != "placed":
            statuses.append(step.status)
        else:
            statuses.append(step.device_status or "progressing")
    return min(statuses, key=lambda s: SEVERITY.index(s) if s in SEVERITY else 0)


def event_view(row: tuple[Any, ...]) -> EventView:
    id_, at, kind, device, deployment, commit_sha, message = row
    return EventView(
        id=id_, at=timestamp(at), kind=kind, device=device, deployment=deployment,
        commit_sha=commit_sha, message=message,
    )  # fmt: skip


def overview(store: Store, *, repo: str, branch: str) -> OverviewView:
    fleet = Fleet(store)
    devices: dict[str, int] = {"online": 0, "offline": 0, "gone": 0}
    for record in fleet.records.values():
        devices[record.state] = devices.get(record.state, 0) + 1
    deployments: dict[str, int] = dict.fromkeys(reversed(SEVERITY), 0)
    for name in fleet.snapshot.deployments if fleet.snapshot else ():
        view = fleet.deployment(name)
        if view is not None:
            deployments[view.status] = deployments.get(view.status, 0) + 1
    return OverviewView(
        sync=sync_view(store, repo=repo, branch=branch),
        devices=devices,
        deployments=deployments,
        events=[event_view(row) for row in store.events(limit=20)],
    )


def devices_page(
    store: Store, *, offset: int, limit: int, states: tuple[str, ...] = (), search: str = ""
) -> DevicePage:
    """One page of the devices in `states` whose names contain `search`, filtered in SQL."""
    total, records = store.devices_matching(
        states=states, search=search, offset=offset, limit=limit
    )
    fleet = Fleet(store, records)
    return DevicePage(
        total=total, offset=offset, limit=limit, items=[fleet.device(r) for r in records],
        state=list(states), search=search,
    )  # fmt: skip


def device_detail(store: Store, name: str) -> DeviceDetailView | None:
    fleet = Fleet(store)
    record = fleet.records.get(name)
    if record is None:
        return None
    base = fleet.device(record)
    return DeviceDetailView(
        **base.model_dump(),
        incarnation=record.incarnation,
        started_at=timestamp(record.started_at),
        ledger=device_ledger(store, name),
        platform=dict(record.platform),
        health=dict(record.health) if record.health else None,
        health_history=[
            HealthView(
                at=timestamp(c.at),
                ok=c.ok,
                report=dict(c.report) if c.report else None,
                error=c.error,
            )
            for c in store.health_checks(name, limit=20)
        ],
        logs=[
            LogView(at=timestamp(e.at), level=e.level, message=e.message, entry=dict(e.entry))
            for e in store.logs(name, limit=50)
        ],
        events=[event_view(row) for row in store.events(device=name, limit=50)],
    )


def device_ledger(store: Store, name: str) -> list[LedgerView]:
    """Desired and acknowledged bodies of one device, deployment by deployment."""
    statuses = {s.deployment: s for s in store.deploy_statuses(name)}
    applied = {a.deployment: a for a in store.ledger(name)}
    ledger = []
    for deployment in sorted(set(statuses) | set(applied)):
        status, done = statuses.get(deployment), applied.get(deployment)
        ledger.append(
            LedgerView(
                deployment=deployment,
                status=status.status if status else "undeploying",
                desired_digest=status.body_digest if status else None,
                desired_commit=status.commit_sha if status else None,
                applied_digest=done.body_digest if done else None,
                applied_commit=done.commit_sha if done else None,
                applied_at=timestamp(done.applied_at) if done else None,
                pending_since=timestamp(status.pending_since) if status else None,
                error=status.error if status else None,
            )
        )
    return ledger


def modules_page(store: Store, *, offset: int, limit: int) -> ModulePage:
    fleet = Fleet(store)
    names = sorted(fleet.snapshot.modules) if fleet.snapshot else []
    items = [view for n in names[offset : offset + limit] if (view := fleet.module(n))]
    return ModulePage(total=len(names), offset=offset, limit=limit, items=items)


def module_detail(store: Store, name: str) -> ModuleDetailView | None:
    fleet = Fleet(store)
    view = fleet.module(name)
    if view is None or fleet.snapshot is None:
        return None
    description = openapi.module_description(fleet.snapshot.modules[name].spec)
    return ModuleDetailView(**view.model_dump(), description=description)


def deployments_page(store: Store, *, offset: int, limit: int) -> DeploymentPage:
    fleet = Fleet(store)
    names = sorted(fleet.snapshot.deployments) if fleet.snapshot else []
    items = [view for n in names[offset : offset + limit] if (view := fleet.deployment(n))]
    return DeploymentPage(
        total=len(names), offset=offset, limit=limit, items=items,
        head=head_view(store.sync_state()),
    )  # fmt: skip


def deployment_detail(store: Store, name: str) -> DeploymentDetailView | None:
    view = Fleet(store).deployment(name)
    if view is None:
        return None
    return DeploymentDetailView(**dict(view), head=head_view(store.sync_state()))


def commits_page(store: Store, *, offset: int, limit: int) -> CommitPage:
    # One more than shown: the oldest shown commit's changes need the accepted one before it.
    records = store.commits(limit=limit + 50, offset=offset)
    total = store.commit_count()
    items = []
    for index, record in enumerate(records[:limit]):
        view = commit_view(record)
        if view is None:
            continue
        earlier = next((r for r in records[index + 1 :] if r.status == "accepted"), None)
        if record.status == "accepted" and earlier is not None:
            view = view.model_copy(
                update={"changes": commit_changes(store, earlier.sha, record.sha)}
            )
        items.append(view)
    return CommitPage(total=total, offset=offset, limit=limit, items=items)


def commit_changes(store: Store, before: str, after: str) -> list[CommitChange] | None:
    """Modules, deployments and devices.yaml that differ between two kept snapshots."""
    old, new = store.snapshot_rows(before), store.snapshot_rows(after)
    if old is None or new is None:
        return None
    changes = []
    for kind, was, now in (("module", old[0], new[0]), ("deployment", old[1], new[1])):
        for name in sorted(was.keys() | now.keys()):
            if name not in was:
                changes.append(CommitChange(kind=kind, name=name, change="added"))
            elif name not in now:
                changes.append(CommitChange(kind=kind, name=name, change="removed"))
            elif was[name] != now[name]:
                changes.append(CommitChange(kind=kind, name=name, change="changed"))
    if old[2] != new[2]:
        changes.append(CommitChange(kind="devices", name="devices.yaml", change="changed"))
    return changes


# The events a commit's page lists at most: a commit deploys to many devices, and its page
# should stay quick to read (the newest are the ones that say how the rollout ends).
COMMIT_EVENTS = 100


def commit_detail(store: Store, sha: str) -> CommitDetailView | None:
    """One commit: what it changed against the accepted commit before it, problems, events."""
    record = store.commit(sha)
    view = commit_view(record)
    if record is None or view is None:
        return None
    previous = store.previous_accepted(sha)
    changes = None
    if record.status == "accepted" and previous is not None:
        changes = commit_changes(store, previous.sha, sha)
    return CommitDetailView(
        **dict(view.model_copy(update={"changes": changes})),
        previous_accepted=previous.sha if previous else None,
        events=[event_view(row) for row in store.commit_events(sha, limit=COMMIT_EVENTS)],
    )


def events_page(
    store: Store, *, offset: int, limit: int, device: str | None, deployment: str | None
) -> EventPage:
    rows = store.events(limit=limit, offset=offset, device=device, deployment=deployment)
    total = store.event_count(device=device, deployment=deployment)
    return EventPage(
        total=total, offset=offset, limit=limit, items=[event_view(row) for row in rows]
    )
