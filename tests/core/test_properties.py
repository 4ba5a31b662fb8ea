"""Properties of the planner on random fleets and deployments (hypothesis).

Placement never puts a step where design §2 forbids it, is deterministic and sticky; bodies keep
the corpus shape; a plan applied in full leaves nothing to do.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_bodies import assert_corpus_shape
from test_placement import CAMERA, MODULES, NOW, WASI, device, sample_snapshot, snapshot_of
from test_planning import applied_after

from gitops_orchestrator.core import bodies, placement, planning
from gitops_orchestrator.core.balancing import Balance
from gitops_orchestrator.core.placement import Placement, StepStatus
from gitops_orchestrator.models import DeviceState, DeviceView, Snapshot

# No example database: tests leave no files behind in the working tree.
PROPERTIES = settings(max_examples=100, deadline=None, database=None)
# Balancing examples are larger: fewer of them keep the file under a minute.
BALANCING = settings(max_examples=60, deadline=None, database=None)
BASE = "http://orchestrator.test:3000"

NAMES = [f"dev{number:02}" for number in range(30)]
ROOMS = ["kitchen", "hall", "garage"]
INTERFACES = sorted({CAMERA, "millis", *WASI})
FUNCTIONS = [(module.name, module.name) for module in MODULES]


@st.composite
def devices(draw: st.DrawFn, name: str) -> DeviceView:
    room = draw(st.sampled_from([None, *ROOMS]))
    # Weighted towards usable devices, so that most examples place something.
    state = draw(st.sampled_from([DeviceState.ONLINE] * 4 + list(DeviceState)))
    everything = draw(st.booleans())
    return device(
        name,
        state=state,
        interfaces=INTERFACES if everything else draw(st.sets(st.sampled_from(INTERFACES))),
        labels={} if room is None else {"room": room},
        admitted=draw(st.integers(0, 5)) > 0,
        cordoned=draw(st.integers(0, 5)) == 0,
        online_since=draw(st.one_of(st.none(), st.floats(NOW - 100, NOW))),
    )


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, DeviceView]:
    # A prefix of NAMES, so that the devices steps name are usually known.
    names = NAMES[: draw(st.integers(0, len(NAMES)))]
    return {name: draw(devices(name)) for name in names}


# Device names a step may use: fleet devices, and one no fleet has.
targets = st.sampled_from([*NAMES[:8], "ghost"])


@st.composite
def steps(draw: st.DrawFn, function: tuple[str, str]) -> dict[str, Any]:
    step: dict[str, Any] = {"module": function[0], "function": function[1]}
    kind = draw(st.sampled_from(["device", "selector", "free"]))
    if kind == "device":
        step["device"] = draw(targets)
    elif kind == "selector":
        step["selector"] = {"room": draw(st.sampled_from(ROOMS))}
    step["failovers"] = draw(st.lists(targets, max_size=3, unique=True))
    return step


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    if draw(st.booleans()):
        return sample_snapshot()
    count = draw(st.integers(1, 8))
    deployments = []
    for number in range(count):
        # A deployment calls each module function at most once (the wire cannot say more).
        functions = draw(st.lists(st.sampled_from(FUNCTIONS), min_size=1, max_size=3, unique=True))
        sequence = [draw(steps(function)) for function in functions]
        deployments.append({"name": f"d{number}", "sequence": sequence})
    return snapshot_of(deployments)


@st.composite
def previous(draw: st.DrawFn, snapshot: Snapshot) -> dict[tuple[str, int], str]:
    keys = [
        (name, index)
        for name, deployment in snapshot.deployments.items()
        for index in range(len(deployment.sequence))
    ]
    chosen = draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []
    return {key: draw(st.sampled_from(NAMES[:10])) for key in chosen}


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Snapshot, dict[str, DeviceView], dict[tuple[str, int], str]]:
    snapshot = draw(snapshots())
    return snapshot, draw(fleets()), draw(previous(snapshot))


World = tuple[Snapshot, dict[str, DeviceView], dict[tuple[str, int], str]]


def place(world: World) -> Placement:
    snapshot, fleet, before = world
    return placement.place(snapshot, fleet=fleet, previous=before, now=NOW)


@PROPERTIES
@given(worlds())
def test_steps_go_only_where_design_allows(world: World) -> None:
    snapshot, fleet, _ = world
    result = place(world)
    for name, deployment in snapshot.deployments.items():
        for index, step in enumerate(deployment.sequence):
            outcome = result.steps[(name, index)]
            assert (outcome.device is not None) is (outcome.status is StepStatus.PLACED)
            assert outcome.reason
            if outcome.device is None:
                continue
            view = fleet[outcome.device]
            assert view.is_eligible
            assert set(snapshot.modules[step.module].requirements) <= view.interfaces
            for key, value in (step.selector or {}).items():
                assert view.labels.get(key) == value
            if step.device is not None:
                assert outcome.device in {step.device, *step.failovers}
        placed = all(
            result.steps[(name, i)].status is StepStatus.PLACED
            for i in range(len(deployment.sequence))
        )
        assert (name in result.complete) is placed


@PROPERTIES
@given(worlds())
def test_placement_is_deterministic_and_order_independent(world: World) -> None:
    assert place(reversed_world(world)) == place(world)


def reversed_world(world: World) -> World:
    """The same world with every mapping in the opposite order."""
    snapshot, fleet, before = world
    shuffled = type(snapshot)(
        commit_sha=snapshot.commit_sha,
        modules=dict(reversed(list(snapshot.modules.items()))),
        deployments=dict(reversed(list(snapshot.deployments.items()))),
        devices=snapshot.devices,
    )
    return shuffled, dict(reversed(fleet.items())), dict(reversed(before.items()))


@PROPERTIES
@given(worlds())
def test_placement_is_sticky(world: World) -> None:
    snapshot, fleet, _ = world
    first = place(world)
    second = placement.place(snapshot, fleet=fleet, previous=first.devices(), now=NOW)
    assert second.devices() == first.devices()
    assert second.complete == first.complete


@PROPERTIES
@given(worlds())
def test_bodies_keep_the_corpus_shape(world: World) -> None:
    snapshot, fleet, _ = world
    result = place(world)
    desired = bodies.deploy_bodies(snapshot, placement=result, fleet=fleet, base_url=BASE)
    deployed = {name for names in desired.values() for name in names}
    assert deployed == result.complete
    for device_name, names in desired.items():
        assert fleet[device_name].is_eligible
        for body in names.values():
            assert_corpus_shape(body)


@PROPERTIES
@given(worlds(), st.data())
def test_a_plan_applied_in_full_leaves_nothing_to_do(world: World, data: st.DataObject) -> None:
    snapshot, fleet, _ = world
    desired = bodies.deploy_bodies(snapshot, placement=place(world), fleet=fleet, base_url=BASE)
    # What devices ran before: some of the desired bodies, old versions, stale deployments.
    applied: dict[str, dict[str, str]] = {}
    for device_name in data.draw(st.lists(st.sampled_from(NAMES[:10]), unique=True)):
        ran = data.draw(st.lists(st.sampled_from(["d0", "d1", "banner", "old"]), unique=True))
        applied[device_name] = {name: data.draw(st.sampled_from(["x", "y"])) for name in ran}
    restarted = frozenset(data.draw(st.lists(st.sampled_from(NAMES[:10]), unique=True)))
    first = planning.plan(
        desired, applied=applied, fleet=fleet, restarted=restarted, prune_limit=1.0
    )
    assert first == planning.plan(
        dict(reversed(desired.items())),
        applied=dict(reversed(applied.items())),
        fleet=dict(reversed(fleet.items())),
        restarted=restarted,
        prune_limit=1.0,
    )
    for action in first.actions:
        view = fleet[action.device]
        if isinstance(action, planning.Deploy):
            assert view.is_eligible
        else:
            assert view.state is DeviceState.ONLINE
    after = applied_after(first, applied)
    second = planning.plan(desired, applied=after, fleet=fleet, prune_limit=1.0)
    assert second.actions == ()
    # Converged: every eligible device runs exactly its desired bodies.
    for device_name, names in desired.items():
        assert after.get(device_name) == {
            name: bodies.body_digest(body) for name, body in names.items()
        }


# Balancing (design §2, "sticky, with bounded rebalancing"): fleets whose steps were piled on
# a few devices, as sticky placement left them after a cold start.


@st.composite
def piled_worlds(draw: st.DrawFn) -> World:
    count = draw(st.integers(2, 20))
    fleet = {name: draw(devices(name)) for name in NAMES[:count]}
    deployments = []
    for number in range(draw(st.integers(1, 30))):
        functions = draw(st.lists(st.sampled_from(FUNCTIONS), min_size=1, max_size=3, unique=True))
        # Mostly free steps: the ones balancing may move.
        sequence = [
            draw(steps(function)) if draw(st.integers(0, 4)) == 0 else dict(zip(
                ("module", "function"), function, strict=True
            ))
            for function in functions
        ]  # fmt: skip
        deployments.append({"name": f"p{number:02}", "sequence": sequence})
    snapshot = snapshot_of(deployments)
    crowded = NAMES[: draw(st.integers(1, 3))]
    before = {
        (name, index): draw(st.sampled_from(crowded))
        for name, deployment in snapshot.deployments.items()
        for index in range(len(deployment.sequence))
    }
    return snapshot, fleet, before


balances = st.builds(Balance, threshold=st.integers(0, 5), moves=st.integers(0, 12))


def moved(result: Placement) -> list[tuple[str, int]]:
    return [key for key, step in result.steps.items() if step.reason.startswith("moved from ")]


@BALANCING
@given(piled_worlds(), balances)
def test_balancing_moves_at_most_its_bound_and_only_free_steps(
    world: World, balance: Balance
) -> None:
    snapshot, fleet, before = world
    unbalanced = placement.place(
        snapshot, fleet=fleet, previous=before, now=NOW, balance=Balance(moves=0)
    )
    result = placement.place(snapshot, fleet=fleet, previous=before, now=NOW, balance=balance)
    moves = moved(result)
    assert len(moves) <= balance.moves
    assert result.complete == unbalanced.complete
    for key, step in result.steps.items():
        if key not in moves:
            assert step == unbalanced.steps[key]
            continue
        spec = snapshot.deployments[key[0]].sequence[key[1]]
        assert spec.device is None
        assert spec.selector is None
        assert key[0] in result.complete
        assert step.device != unbalanced.steps[key].device
        # The reason names both devices and their loads before the move.
        assert f"from {unbalanced.steps[key].device} (" in step.reason
        assert f"to {step.device} (" in step.reason


@BALANCING
@given(piled_worlds(), balances)
def test_a_second_pass_moves_nothing_unless_the_first_hit_its_bound(
    world: World, balance: Balance
) -> None:
    snapshot, fleet, before = world
    first = placement.place(snapshot, fleet=fleet, previous=before, now=NOW, balance=balance)
    second = placement.place(
        snapshot, fleet=fleet, previous=first.devices(), now=NOW, balance=balance
    )
    if len(moved(first)) < balance.moves:
        assert moved(second) == []
        assert second.devices() == first.devices()


@BALANCING
@given(piled_worlds(), balances)
def test_passes_settle_and_leave_loads_within_the_threshold(world: World, balance: Balance) -> None:
    snapshot, fleet, before = world
    steps_count = sum(len(d.sequence) for d in snapshot.deployments.values())
    result = placement.place(snapshot, fleet=fleet, previous=before, now=NOW, balance=balance)
    passes = 1
    # Each move lowers the sum of squared loads by 2 at least: passes cannot go on for long.
    while moved(result):
        assert passes <= steps_count * steps_count
        result = placement.place(
            snapshot, fleet=fleet, previous=result.devices(), now=NOW, balance=balance
        )
        passes += 1
    if balance.moves == 0:
        return
    load: dict[str, int] = {}
    for key, step in result.steps.items():
        if step.device is not None and key[0] in result.complete:
            load[step.device] = load.get(step.device, 0) + 1
    threshold = max(2, balance.threshold)
    for key, step in result.steps.items():
        spec = snapshot.deployments[key[0]].sequence[key[1]]
        if step.device is None or key[0] not in result.complete or spec.device or spec.selector:
            continue
        needs = set(snapshot.modules[spec.module].requirements)
        could = [
            name for name, view in fleet.items() if view.is_eligible and needs <= view.interfaces
        ]
        assert load[step.device] - min(load.get(name, 0) for name in could) < threshold


@BALANCING
@given(piled_worlds(), balances)
def test_balancing_is_deterministic_and_order_independent(world: World, balance: Balance) -> None:
    snapshot, fleet, before = reversed_world(world)
    again = placement.place(snapshot, fleet=fleet, previous=before, now=NOW, balance=balance)
    snapshot, fleet, before = world
    assert again == placement.place(
        snapshot, fleet=fleet, previous=before, now=NOW, balance=balance
    )


@PROPERTIES
@given(worlds(), st.floats(0.1, 30))
def test_while_the_fleet_settles_nothing_moves_and_only_free_steps_wait(
    world: World, left: float
) -> None:
    snapshot, fleet, before = world
    settled = placement.place(
        snapshot, fleet=fleet, previous=before, now=NOW, balance=Balance(moves=0)
    )
    settling = placement.place(
        snapshot, fleet=fleet, previous=before, now=NOW, settle_until=NOW + left
    )
    for key, step in settling.steps.items():
        if step == settled.steps[key]:
            continue
        spec = snapshot.deployments[key[0]].sequence[key[1]]
        assert spec.device is None  # named steps are placed as ever
        if spec.selector is None:
            # A free step that needed a new device waits instead.
            assert step.status is StepStatus.WAITING
            assert step.reason.endswith("for the fleet to settle before placing it")
            assert settled.steps[key].device != before.get(key)
        else:
            # A selector step is placed as ever, among loads that the waiting steps changed.
            assert step.status is StepStatus.PLACED
            assert "least loaded of" in step.reason
