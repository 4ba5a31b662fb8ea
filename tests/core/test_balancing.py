"""Balancing and the settle window (design §2, "sticky, with bounded rebalancing").

The rule is in docs/operations.md ("Placement"): a step without `device` or `selector` moves
when its device carries at least `threshold` more steps than the least loaded device that
could take it, at most `moves` a pass; before the settle window ends such a step is placed only
where it already is.
"""

from __future__ import annotations

from typing import Any

from test_placement import NOW, PLACED, WAITING, device, fleet_of, one, snapshot_of

from gitops_orchestrator.core import placement
from gitops_orchestrator.core.balancing import Balance
from gitops_orchestrator.core.placement import StepPlacement


def frees(count: int, **step: Any) -> list[dict[str, Any]]:
    """`count` deployments of one `plain` step each, named f00, f01, ..."""
    return [one({"module": "plain", "function": "plain", **step}, f"f{n:02}") for n in range(count)]


def loads(result: placement.Placement) -> dict[str, int]:
    counted: dict[str, int] = {}
    for step in result.steps.values():
        if step.device is not None:
            counted[step.device] = counted.get(step.device, 0) + 1
    return counted


def test_a_device_that_joins_takes_steps_from_the_most_loaded_with_the_reason() -> None:
    snapshot = snapshot_of(frees(12))
    previous = {(f"f{n:02}", 0): "sup1" for n in range(12)}
    result = placement.place(
        snapshot, fleet=fleet_of(device("sup1"), device("sup40")), previous=previous, now=NOW
    )
    assert result.steps[("f00", 0)] == StepPlacement(
        "sup40", PLACED, "moved from sup1 (12 steps) to sup40 (0 steps) to balance"
    )
    assert result.steps[("f01", 0)] == StepPlacement(
        "sup40", PLACED, "moved from sup1 (11 steps) to sup40 (1 step) to balance"
    )
    assert result.steps[("f11", 0)] == StepPlacement("sup1", PLACED, "sticky on sup1")
    assert loads(result) == {"sup1": 6, "sup40": 6}


def test_loads_within_the_threshold_stay() -> None:
    snapshot = snapshot_of(frees(3))
    previous = {("f00", 0): "sup1", ("f01", 0): "sup1", ("f02", 0): "sup2"}
    fleet = fleet_of(device("sup1"), device("sup2"))
    assert loads(placement.place(snapshot, fleet=fleet, previous=previous, now=NOW)) == {
        "sup1": 2,
        "sup2": 1,
    }
    # 3 against 0 passes a threshold of 3; 2 against 1 afterwards does not.
    previous = {("f00", 0): "sup1", ("f01", 0): "sup1", ("f02", 0): "sup1"}
    for threshold, expected in ((3, {"sup1": 2, "sup2": 1}), (4, {"sup1": 3})):
        result = placement.place(
            snapshot, fleet=fleet, previous=previous, now=NOW, balance=Balance(threshold=threshold)
        )
        assert loads(result) == expected


def test_a_threshold_below_two_would_swap_and_is_raised_to_two() -> None:
    snapshot = snapshot_of(frees(3))
    previous = {("f00", 0): "sup1", ("f01", 0): "sup1", ("f02", 0): "sup2"}
    result = placement.place(
        snapshot,
        fleet=fleet_of(device("sup1"), device("sup2")),
        previous=previous,
        now=NOW,
        balance=Balance(threshold=1),
    )
    assert loads(result) == {"sup1": 2, "sup2": 1}


def test_moves_per_pass_are_bounded_and_zero_turns_balancing_off() -> None:
    snapshot = snapshot_of(frees(10))
    previous = {(f"f{n:02}", 0): "sup1" for n in range(10)}
    fleet = fleet_of(device("sup1"), device("sup2"), device("sup3"))
    result = placement.place(
        snapshot, fleet=fleet, previous=previous, now=NOW, balance=Balance(moves=3)
    )
    assert loads(result) == {"sup1": 7, "sup2": 2, "sup3": 1}
    off = placement.place(snapshot, fleet=fleet, previous=previous, now=NOW, balance=Balance(0, 0))
    assert loads(off) == {"sup1": 10}


def test_named_and_selector_steps_never_move_but_count_in_the_load() -> None:
    kitchen = {"room": "kitchen"}
    snapshot = snapshot_of(
        [
            *frees(4, device="sup1"),
            *[
                one({"module": "plain", "function": "plain", "selector": kitchen}, f"s{n}")
                for n in range(4)
            ],
            one({"module": "plain", "function": "plain"}, "z-free"),
        ]
    )
    previous = {**{(f"s{n}", 0): "sup1" for n in range(4)}, ("z-free", 0): "sup1"}
    fleet = fleet_of(device("sup1", labels=kitchen), device("sup2", labels=kitchen))
    result = placement.place(snapshot, fleet=fleet, previous=previous, now=NOW)
    assert {key: step.device for key, step in result.steps.items() if key[0] != "z-free"} == {
        key: "sup1" for key in result.steps if key[0] != "z-free"
    }
    assert result.steps[("z-free", 0)] == StepPlacement(
        "sup2", PLACED, "moved from sup1 (9 steps) to sup2 (0 steps) to balance"
    )


def test_steps_move_only_to_devices_that_offer_their_imports() -> None:
    snapshot = snapshot_of([one({"module": "cam", "function": "cam"}, f"c{n}") for n in range(4)])
    previous = {(f"c{n}", 0): "sup1" for n in range(4)}
    fleet = fleet_of(
        device("sup1", interfaces=["takeImageStaticSize"]),
        device("sup2"),
        device("sup3", interfaces=["takeImageStaticSize"]),
    )
    assert loads(placement.place(snapshot, fleet=fleet, previous=previous, now=NOW)) == {
        "sup1": 2,
        "sup3": 2,
    }


def test_steps_of_deployments_that_do_not_run_neither_move_nor_count() -> None:
    stuck = {
        "name": "a-stuck",
        "sequence": [
            {"module": "plain", "function": "plain"},
            {"module": "plain", "function": "plain", "device": "ghost"},
        ],
    }
    snapshot = snapshot_of([stuck, *frees(1)])
    previous = {("a-stuck", 0): "sup1", ("f00", 0): "sup1"}
    result = placement.place(
        snapshot, fleet=fleet_of(device("sup1"), device("sup2")), previous=previous, now=NOW
    )
    # sup1 runs 1 step (a-stuck does not run), sup2 none: within the threshold.
    assert {key: step.device for key, step in result.steps.items()} == {
        ("a-stuck", 0): "sup1",
        ("a-stuck", 1): None,
        ("f00", 0): "sup1",
    }


def test_before_the_settle_window_ends_free_steps_wait_and_the_rest_is_placed() -> None:
    snapshot = snapshot_of(
        [
            *frees(3),
            one({"module": "plain", "function": "plain", "device": "sup1"}, "named"),
            one({"module": "plain", "function": "plain", "selector": {"room": "hall"}}, "sel"),
        ]
    )
    fleet = fleet_of(device("sup1", labels={"room": "hall"}), device("sup2"))
    previous = {("f01", 0): "sup2", ("f02", 0): "sup1"}
    settling = placement.place(
        snapshot, fleet=fleet, previous=previous, now=NOW, settle_until=NOW + 4.2
    )
    assert settling.steps[("f00", 0)] == StepPlacement(
        None, WAITING, "waiting 4 s more for the fleet to settle before placing it"
    )
    assert settling.steps[("f01", 0)] == StepPlacement("sup2", PLACED, "sticky on sup2")
    assert settling.steps[("named", 0)] == StepPlacement("sup1", PLACED, "on sup1 as named")
    assert settling.steps[("sel", 0)] == StepPlacement("sup1", PLACED, "only candidate: sup1")
    assert "f00" not in settling.complete
    assert settling.settling == {("f00", 0)}
    settled = placement.place(
        snapshot, fleet=fleet, previous=settling.devices(), now=NOW + 4.2, settle_until=NOW + 4.2
    )
    assert settled.steps[("f00", 0)] == StepPlacement(
        "sup2", PLACED, "least loaded of sup1, sup2 (sup2: 1 step)"
    )


def test_no_balancing_while_the_fleet_settles() -> None:
    snapshot = snapshot_of(frees(6))
    previous = {(f"f{n:02}", 0): "sup1" for n in range(6)}
    fleet = fleet_of(device("sup1"), device("sup2"))
    result = placement.place(
        snapshot, fleet=fleet, previous=previous, now=NOW, settle_until=NOW + 1
    )
    assert loads(result) == {"sup1": 6}


def test_a_lost_free_step_waits_for_its_failover_or_the_settle() -> None:
    snapshot = snapshot_of([one({"module": "plain", "function": "plain", "failovers": ["sup3"]})])
    fleet = fleet_of(device("sup1", state=placement.DeviceState.OFFLINE), device("sup2"))
    result = placement.place(
        snapshot, fleet=fleet, previous={("d", 0): "sup1"}, now=NOW, settle_until=NOW + 2
    )
    assert result.steps[("d", 0)] == StepPlacement(
        None,
        WAITING,
        "sup1 is offline; sup3 is unknown; "
        "waiting 2 s more for the fleet to settle before placing it",
    )
