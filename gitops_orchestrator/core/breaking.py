"""Breaking changes: a new version of a module that breaks a deployment still calling it.

Pure: the facts of both commits (`modulediff`), base's and head's placement and the inventory go
in; the breaking changes come out, each with both versions' facts: an export removed or with a
new parameter count while a step calls it, and a new import that the devices running the module
lack (where its steps go instead). Consumed by `review.review`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..models import DeviceId, DeviceView
from . import wording
from .modulediff import CommitFacts, ModuleFacts, binary
from .placement import Placement, StepKey, StepStatus


class BreakingKind(StrEnum):
    EXPORT_REMOVED = "export-removed"
    PARAMS_CHANGED = "params-changed"
    NEW_IMPORT = "new-import"


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


def breaking(
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
            had = wording.count(old.exports[function], "parameter")
            before = f"{binary(old)} exports {function} with {had}"
            if count is None:
                exports = ", ".join(f"{n}({c})" for n, c in sorted(new.exports.items()))
                after = f"{binary(new)} exports {exports or 'nothing'}"
                message = (
                    f"{name}.{function} is no longer exported, but {wording.join(who)} calls it"
                )
                kind = BreakingKind.EXPORT_REMOVED
            else:
                after = f"{binary(new)} exports {function} with {wording.count(count, 'parameter')}"
                message = (
                    f"{name}.{function} takes {wording.count(count, 'parameter')} instead of "
                    f"{old.exports[function]}, and {wording.join(who)} still calls it"
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
        was = f"{binary(old)} needs {', '.join(old.requirements) or 'no host function'}"
        now = f"needs {', '.join(sorted(needs))} too; {device} offers none of {lacks}"
        callers = tuple(caller for caller, _ in entries)
        found.append(Breaking(BreakingKind.NEW_IMPORT, old.name, None, message, callers, was, now))
    return found
