"""Balancing: which free steps move, and where, so that no device carries far more than others.

This is a purely computational function with no side-effects, used by `placement.place` once
every step has a device: it gets the steps that may move (those without `device` or
`selector`), the load of every device (steps of deployments that run) and a rule, and returns
the moves. `placement` turns them into placements with a reason.

The rule (docs/operations.md, "Placement"): while a movable step's device carries at least
`threshold` more steps than the least loaded device that could take it, the step moves there;
the most loaded device gives first, its steps in name order, the least loaded device takes
first, ties by name; at most `moves` moves a pass. A threshold below 2 would only swap loads
(7 and 6 become 6 and 7), so it is raised to 2. Each move lowers the sum of squared loads, so
passes settle, and the result of an unbounded pass is one a second pass leaves as it is.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from itertools import repeat
from typing import TypeAlias

from ..models import DeviceId

StepKey: TypeAlias = tuple[str, int]
Heap: TypeAlias = list[tuple[int, DeviceId]]

# The smallest difference in steps at which moving one step makes the fleet more even.
LEAST_THRESHOLD = 2


@dataclass(frozen=True)
class Balance:
    """How far loads may drift apart before free steps move (the reconciler's settings)."""

    threshold: int = 2
    """Steps more than the least loaded candidate at which a step moves (at least 2)."""
    moves: int = 100
    """Moves at most in one pass; 0 turns balancing off."""


@dataclass(frozen=True)
class Move:
    key: StepKey
    source: DeviceId
    target: DeviceId
    source_load: int
    """Steps on `source` before the move."""
    target_load: int
    """Steps on `target` before the move."""


def least_loaded_heap(candidates: frozenset[DeviceId]) -> Heap:
    """A lazy heap of `candidates` by load, every entry at 0 (see `top`)."""
    heap = list(zip(repeat(0), candidates))
    heapq.heapify(heap)
    return heap


def top(heap: Heap, load: Mapping[DeviceId, int]) -> tuple[int, DeviceId]:
    """The least loaded device of `heap` and its load, ties by name.

    Entries may be stale: loads that only grew surface too early and are pushed back with
    their current load (a lazy heap, O(log n) per look).
    """
    while True:
        steps, device = heap[0]
        current = load.get(device, 0)
        if current == steps:
            return steps, device
        heapq.heapreplace(heap, (current, device))


def rebalance(
    movable: Mapping[StepKey, DeviceId],
    *,
    candidates: Callable[[StepKey], frozenset[DeviceId]],
    load: MutableMapping[DeviceId, int],
    eligible: frozenset[DeviceId],
    balance: Balance,
) -> list[Move]:
    """The moves that even out `load` (updated in place), in the order they were decided.

    `movable` maps each step that may move to its device; `candidates(key)` gives the eligible
    devices that could take it (called only for steps on devices loaded enough to give).
    Rounds repeat until one moves nothing (or the bound is reached): a step that could not
    move early in a round may be able to once a device it could go to gave steps away.
    """
    threshold = max(LEAST_THRESHOLD, balance.threshold)
    where = dict(movable)
    moves: list[Move] = []
    while len(moves) < balance.moves:
        found = _round(
            where, candidates=candidates, load=load, eligible=eligible, threshold=threshold,
            limit=balance.moves - len(moves),
        )  # fmt: skip
        if not found:
            break
        moves.extend(found)
        where.update((move.key, move.target) for move in found)
    return moves


def _round(
    movable: Mapping[StepKey, DeviceId],
    *,
    candidates: Callable[[StepKey], frozenset[DeviceId]],
    load: MutableMapping[DeviceId, int],
    eligible: frozenset[DeviceId],
    threshold: int,
    limit: int,
) -> list[Move]:
    """One sweep: the most loaded giver first, each of its steps looked at once."""
    # No candidate carries fewer steps than the least loaded eligible device: a device that
    # is not `floor + threshold` loaded has nothing to give, and most fleets stop here.
    floor = min((load.get(device, 0) for device in eligible), default=0)
    pending: dict[DeviceId, list[StepKey]] = {}
    for key in sorted(movable, reverse=True):  # popped from the end: name order
        device = movable[key]
        if load.get(device, 0) - floor >= threshold:
            pending.setdefault(device, []).append(key)
    givers = [(-load.get(device, 0), device) for device in pending]
    heapq.heapify(givers)
    heaps: dict[frozenset[DeviceId], Heap] = {}
    moves: list[Move] = []
    while givers and len(moves) < limit:
        negative, source = givers[0]
        steps = load.get(source, 0)
        if -negative != steps:
            heapq.heapreplace(givers, (-steps, source))
            continue
        if steps - floor < threshold:
            break  # the most loaded giver has nothing to give: neither has any other
        keys = pending[source]
        move = None
        while keys and move is None:
            key = keys.pop()
            group = candidates(key)
            heap = heaps.get(group)
            if heap is None:
                heap = heaps[group] = least_loaded_heap(group)
            low, target = top(heap, load)
            # A giver's entry in these heaps is too large once it gave; it cannot take in
            # this round anyway (it carried the most), and the next round starts afresh.
            if steps - low >= threshold:
                move = Move(key, source, target, steps, low)
        if move is None:
            heapq.heappop(givers)
            continue
        moves.append(move)
        load[source] = steps - 1
        load[move.target] = move.target_load + 1
        heapq.heapreplace(givers, (-(steps - 1), source))
    return moves
