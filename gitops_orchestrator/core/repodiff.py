"""Repository diffs: what a change does to the deployments and devices.yaml files themselves.

Pure: two snapshots go in; the deployments added, changed (steps, the devices they name,
selectors, failovers) and removed, and the changes to devices.yaml (admission, and per device
its labels, address and cordon) come out, one fact per line, for people. Unlike the device
diffs, nothing here depends on placement, so a plan lists what changes even when no device is
known to be online (a plan without an inventory, where devices.yaml gives no addresses).
Consumed by `review.review`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..models import Deployment, DeviceEntry, Devices, Snapshot, Step
from .modulediff import Change, split_keys


@dataclass(frozen=True)
class DeploymentDiff:
    deployment: str
    change: Change
    details: tuple[str, ...]
    """Added or removed: each step (`fibo.fibo on sup1, failovers sup2`); changed: what differs."""


@dataclass(frozen=True)
class DeviceEntryDiff:
    """One device of devices.yaml added, changed or removed."""

    device: str
    change: Change
    details: tuple[str, ...]


@dataclass(frozen=True)
class DevicesFileDiff:
    admission: tuple[str, str] | None = None
    """(base's, head's) admission policy when it changed."""
    devices: tuple[DeviceEntryDiff, ...] = ()

    def __bool__(self) -> bool:
        return self.admission is not None or bool(self.devices)


def deployment_diffs(base: Snapshot | None, head: Snapshot) -> tuple[DeploymentDiff, ...]:
    """Deployments added, changed and removed, by name."""
    old = base.deployments if base else {}
    added, removed, kept = split_keys(old, head.deployments)
    found = [
        *(DeploymentDiff(name, Change.ADDED, _steps(head.deployments[name])) for name in added),
        *(DeploymentDiff(name, Change.REMOVED, _steps(old[name])) for name in removed),
    ]
    for name in kept:
        details = _deployment_details(old[name], head.deployments[name])
        if details:
            found.append(DeploymentDiff(name, Change.CHANGED, details))
    return tuple(sorted(found, key=lambda diff: diff.deployment))


def devices_file_diff(base: Snapshot | None, head: Snapshot) -> DevicesFileDiff:
    """What head's devices.yaml changes from base's (an invalid base counts as none)."""
    old = base.devices if base else Devices()
    new = head.devices
    admission = (old.admission.value, new.admission.value)
    added, removed, kept = split_keys(old.devices, new.devices)
    found = [
        *(DeviceEntryDiff(n, Change.ADDED, _entry(new.devices[n])) for n in added),
        *(DeviceEntryDiff(n, Change.REMOVED, _entry(old.devices[n], "was ")) for n in removed),
    ]
    for name in kept:
        details = _entry_details(old.devices[name], new.devices[name])
        if details:
            found.append(DeviceEntryDiff(name, Change.CHANGED, details))
    return DevicesFileDiff(
        admission=admission if admission[0] != admission[1] else None,
        devices=tuple(sorted(found, key=lambda diff: diff.device)),
    )


def step_text(step: Step) -> str:
    """`fibo.fibo on sup1, failovers sup2`, `double.double where room=kitchen`."""
    text = f"{step.module}.{step.function}"
    if step.device:
        text += f" on {step.device}"
    if step.selector:
        text += f" where {_labels(step.selector)}"
    if step.failovers:
        text += f", failovers {', '.join(step.failovers)}"
    return text


def _steps(deployment: Deployment) -> tuple[str, ...]:
    return tuple(step_text(step) for step in deployment.sequence)


def _deployment_details(old: Deployment, new: Deployment) -> tuple[str, ...]:
    details = []
    for number, (was, now) in enumerate(zip(old.sequence, new.sequence, strict=False), 1):
        if (was.module, was.function) != (now.module, now.function):
            details.append(f"step {number}: {step_text(was)} → {step_text(now)}")
            continue
        for label, before, after in (
            ("device", was.device or "none", now.device or "none"),
            ("selector", _labels(was.selector or {}), _labels(now.selector or {})),
            ("failovers", ", ".join(was.failovers) or "none", ", ".join(now.failovers) or "none"),
        ):
            if before != after:
                details.append(f"step {number} {label}: {before} → {after}")
    shorter = min(len(old.sequence), len(new.sequence))
    for number, step in enumerate(new.sequence[shorter:], shorter + 1):
        details.append(f"step {number} added: {step_text(step)}")
    for number, step in enumerate(old.sequence[shorter:], shorter + 1):
        details.append(f"step {number} removed: {step_text(step)}")
    return tuple(details)


def _entry(entry: DeviceEntry, prefix: str = "") -> tuple[str, ...]:
    facts = []
    if entry.address:
        facts.append(f"address {entry.address}")
    facts.append(f"labels {_labels(entry.labels)}" if entry.labels else "no labels")
    if entry.cordoned:
        facts.append("cordoned")
    return (prefix + ", ".join(facts),)


def _entry_details(old: DeviceEntry, new: DeviceEntry) -> tuple[str, ...]:
    details = []
    if old.labels != new.labels:
        details.append(f"labels: {_labels(old.labels)} → {_labels(new.labels)}")
    if old.address != new.address:
        details.append(f"address: {old.address or 'none'} → {new.address or 'none'}")
    if old.cordoned != new.cordoned:
        details.append("cordoned" if new.cordoned else "no longer cordoned")
    return tuple(details)


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items())) or "none"
