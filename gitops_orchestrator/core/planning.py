"""Planning: the actions that take the fleet from what it runs to what it should run.

This is a purely computational function with no side-effects: the desired bodies (from
`bodies.deploy_bodies`), the digests of the bodies each device is known to run and the fleet go
in, a `Plan` of sorted, frozen actions comes out. It is consumed by the executor, which performs
the deploys and undeploys (the side-effects) and records their outcomes, and by the `plan`
command, which shows them. Same input, same plan; once every action of a plan has succeeded,
the next plan is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from ..models import DeviceId, DeviceState, DeviceView
from .bodies import body_digest
from .placement import ineligibility


class DeployReason(StrEnum):
    NEW = "new"
    """The device does not run this deployment yet."""
    CHANGED = "changed"
    """The device runs another body of this deployment."""
    RESTARTED = "restarted"
    """The device restarted and lost its deployments (design §2, Restart)."""


@dataclass(frozen=True)
class Deploy:
    """`POST /deploy` of `body` to `device` (re-posting a deployment replaces it)."""

    device: DeviceId
    deployment: str
    body: Mapping[str, Any] = field(compare=False, repr=False)
    """Compared and hashed through `digest`, which is its `body_digest`."""
    reason: DeployReason
    digest: str


@dataclass(frozen=True)
class Undeploy:
    """`DELETE /deploy/<deployment>` on `device` (a 404 means it is already gone)."""

    device: DeviceId
    deployment: str
    reason: str


Action: TypeAlias = Deploy | Undeploy


@dataclass(frozen=True)
class Hold:
    """The prune guard tripped: the plan removes too much of the fleet to apply it unasked."""

    reason: str
    removed: int
    running: int


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    notes: tuple[str, ...] = ()
    """What the plan cannot do now and why (an offline device), for people."""
    hold: Hold | None = None


def plan(
    desired: Mapping[DeviceId, Mapping[str, Mapping[str, Any]]],
    *,
    applied: Mapping[DeviceId, Mapping[str, str]],
    fleet: Mapping[DeviceId, DeviceView],
    prune_limit: float = 0.5,
    restarted: Set[DeviceId] = frozenset(),
    deployments: Set[str] | None = None,
    recorded: Mapping[DeviceId, Mapping[str, str]] | None = None,
) -> Plan:
    """The deploys and undeploys that make every device run its `desired` bodies.

    `applied` holds the digests of the bodies each device is known to run (acknowledged since
    its last start); `recorded`, when given, the last body each device acknowledged in any of
    its incarnations (a superset of `applied`): what a device lost in a restart is redeployed
    as `restarted`, and what it may still run is undeployed when no longer wanted (a 404 is
    fine). `restarted` names devices that lost everything; `deployments`, when given, the
    names in the desired snapshot (see the prune guard). Deploys go to eligible
    devices only and undeploys to online ones; the rest is noted, not acted on, and planned
    again on a later pass.

    Prune guard (design §2): when more than `prune_limit` (0..1) of the running (device,
    deployment) pairs would be removed from the fleet, the plan is held: it has no actions but
    the redeploys of unchanged bodies to restarted devices, which only restore what they ran:
    the hold stops undeploys and the held commit's changes, never a redeploy. Holding the rest,
    deploys too, is what "the commit is held, not applied" means: a
    force-push to an unrelated history changes nothing until a later commit or a higher limit
    releases it. Only pairs whose deployment runs on no device afterwards count as removed: a
    step that moves to another device is not a prune, and with `deployments` given neither is
    a deployment of the repository that waits for a device, so an outage never trips the guard.
    """
    recorded = applied if recorded is None else recorded
    notes: list[str] = []
    deploys: list[Deploy] = []
    for device in sorted(desired):
        view, known = fleet.get(device), applied.get(device, {})
        ran = recorded.get(device, {})
        for name in sorted(desired[device]):
            body = desired[device][name]
            digest = body_digest(body)
            why: DeployReason
            if device in restarted or (name not in known and name in ran):
                why = DeployReason.RESTARTED
            elif name not in known:
                why = DeployReason.NEW
            elif known[name] != digest:
                why = DeployReason.CHANGED
            else:
                continue
            if view is None or not view.is_eligible:
                notes.append(f"not deploying {name} ({why}) to {device}: {_why(device, view)}")
                continue
            deploys.append(Deploy(device, name, body, why, digest))
    placed_on: dict[str, list[DeviceId]] = {}
    for device in sorted(desired):
        for name in desired[device]:
            placed_on.setdefault(name, []).append(device)
    undeploys: list[Undeploy] = []
    removed = 0
    for device in sorted(recorded):
        view, wanted = fleet.get(device), desired.get(device, {})
        for name in sorted(set(recorded[device]) - set(wanted)):
            elsewhere = placed_on.get(name)
            reason: str
            if elsewhere:
                reason = f"no longer placed here; runs on {', '.join(elsewhere)}"
            elif deployments is None:
                reason = "desired on no device (removed from the repository, or not fully placed)"
                removed += 1
            elif name in deployments:
                reason = "not fully placed: deployed nowhere until every step has a device"
            else:
                reason = "removed from the repository"
                removed += 1
            if view is None or view.state is not DeviceState.ONLINE:
                notes.append(f"not undeploying {name} from {device}: {_why(device, view)}")
                continue
            undeploys.append(Undeploy(device, name, reason))
    running = sum(len(names) for names in recorded.values())
    if running and removed / running > prune_limit:
        return _held(
            deploys,
            undeploys=undeploys,
            applied=recorded,
            notes=notes,
            removed=removed,
            running=running,
            limit=prune_limit,
        )
    return Plan(actions=_sorted([*deploys, *undeploys]), notes=tuple(notes))


def _held(
    deploys: list[Deploy],
    *,
    undeploys: list[Undeploy],
    applied: Mapping[DeviceId, Mapping[str, str]],
    notes: list[str],
    removed: int,
    running: int,
    limit: float,
) -> Plan:
    reason = (
        f"would undeploy {removed} of {running} running deployments "
        f"({removed / running:.0%} > {limit:.0%} prune limit); held until a later commit keeps "
        "them or the prune limit is raised"
    )
    # A restarted device lost what it ran; giving it back the same body changes nothing the
    # guard protects. A changed body would apply the held commit, so it waits like the rest.
    restore = [
        deploy
        for deploy in deploys
        if deploy.reason is DeployReason.RESTARTED
        and applied.get(deploy.device, {}).get(deploy.deployment) == deploy.digest
    ]
    held = len(deploys) - len(restore) + len(undeploys)
    notes = [*notes, f"held: {held} actions wait for the hold to be released"]
    return Plan(actions=_sorted(restore), notes=tuple(notes), hold=Hold(reason, removed, running))


def _sorted(actions: Sequence[Action]) -> tuple[Action, ...]:
    # Deploys first: a step moving to another device starts there before it leaves the old
    # one (make before break), as far as the executor keeps the order.
    return tuple(sorted(actions, key=lambda a: (isinstance(a, Undeploy), a.device, a.deployment)))


def _why(device: DeviceId, view: DeviceView | None) -> str:
    return f"{device} is {ineligibility(view) if view else 'unknown'}"
