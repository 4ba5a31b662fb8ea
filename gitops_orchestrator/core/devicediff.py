"""Device diffs: what one device runs in base and in head, deployment by deployment, and why.

Pure: both commits' snapshots, placements and deploy bodies go in; per device, the deployments it
gains, changes and loses (a new deployment, a step moving from or to another device with the
placement's reason, a changed module, an endpoint or chain target that changed, removed from
the repository, no longer fully placed) and the modules it gains, changes and loses come out.
Bodies are compared, not files: this is what the orchestrator would deploy. Consumed by
`review.review`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..models import DeviceId, DeviceView, Snapshot
from . import bodies, wording
from .modulediff import ModuleChange
from .placement import Placement, StepStatus


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


class Differ:
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
        return f"{wording.count(old, 'parameter')} → {new}"
    return "input files changed"


def _first_unplaced(placed: Placement, snapshot: Snapshot, name: str) -> str:
    for number in range(len(snapshot.deployments[name].sequence)):
        step = placed.steps.get((name, number))
        if step is None or step.status is not StepStatus.PLACED:
            status, why = (step.status.value, step.reason) if step else ("missing", "not planned")
            return f"step {number + 1} {status}: {why}"
    return "not planned"
