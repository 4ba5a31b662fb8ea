"""Planning: deploys and undeploys against what devices run, restarts, the prune guard."""

from __future__ import annotations

from typing import Any

import pytest
from test_placement import NOW, OFFLINE, WASI, device, fleet_of, sample_fleet, sample_snapshot

from gitops_orchestrator.core import bodies, placement, planning
from gitops_orchestrator.core.planning import Deploy, DeployReason, Plan, Undeploy
from gitops_orchestrator.models import DeviceView

Desired = dict[str, dict[str, dict[str, Any]]]
Applied = dict[str, dict[str, str]]


def body(name: str, version: int = 1) -> dict[str, Any]:
    """A stand-in body: planning only compares digests, so any JSON value does."""
    return {"deploymentId": name, "version": version}


def digest(name: str, version: int = 1) -> str:
    return bodies.body_digest(body(name, version))


FLEET = fleet_of(
    device("sup1"),
    device("sup2"),
    device("down", state=OFFLINE),
    device("fenced", cordoned=True),
)


def deploy(device: str, name: str, reason: DeployReason, version: int = 1) -> Deploy:
    return Deploy(device, name, body(name, version), reason, digest(name, version))


CASES = [
    pytest.param(
        {"sup1": {"a": body("a")}},
        {},
        frozenset(),
        [deploy("sup1", "a", DeployReason.NEW)],
        [],
        id="new",
    ),
    pytest.param(
        {"sup1": {"a": body("a", 2)}},
        {"sup1": {"a": digest("a")}},
        frozenset(),
        [deploy("sup1", "a", DeployReason.CHANGED, 2)],
        [],
        id="changed",
    ),
    pytest.param(
        {"sup1": {"a": body("a")}},
        {"sup1": {"a": digest("a")}},
        frozenset(),
        [],
        [],
        id="unchanged",
    ),
    pytest.param(
        {"sup1": {"a": body("a")}, "sup2": {"c": body("c")}},
        {"sup1": {"a": digest("a"), "b": digest("b")}, "sup2": {"c": digest("c")}},
        frozenset(),
        [
            Undeploy(
                "sup1",
                "b",
                "desired on no device (removed from the repository, or not fully placed)",
            )
        ],
        [],
        id="removed-deployment",
    ),
    pytest.param(
        {"sup2": {"a": body("a")}, "sup1": {"b": body("b")}},
        {"sup1": {"a": digest("a"), "b": digest("b")}},
        frozenset(),
        [
            deploy("sup2", "a", DeployReason.NEW),
            Undeploy("sup1", "a", "no longer placed here; runs on sup2"),
        ],
        [],
        id="moved-to-another-device",
    ),
    pytest.param(
        {"sup1": {"a": body("a"), "b": body("b")}},
        {"sup1": {"a": digest("a"), "b": digest("b"), "gone": digest("gone")}},
        frozenset({"sup1"}),
        [
            deploy("sup1", "a", DeployReason.RESTARTED),
            deploy("sup1", "b", DeployReason.RESTARTED),
            Undeploy(
                "sup1",
                "gone",
                "desired on no device (removed from the repository, or not fully placed)",
            ),
        ],
        [],
        id="restarted",
    ),
    pytest.param(
        {"down": {"a": body("a")}, "fenced": {"b": body("b")}, "nobody": {"c": body("c")}},
        {"down": {"x": digest("x")}, "sup1": {"a": digest("a")}},
        frozenset(),
        [Undeploy("sup1", "a", "no longer placed here; runs on down")],
        [
            "not deploying a (new) to down: down is offline",
            "not deploying b (new) to fenced: fenced is cordoned",
            "not deploying c (new) to nobody: nobody is unknown",
            "not undeploying x from down: down is offline",
        ],
        id="ineligible-devices-are-noted",
    ),
    pytest.param(
        {"sup1": {"a": body("a")}},
        {"fenced": {"a": digest("a")}},
        frozenset(),
        [
            deploy("sup1", "a", DeployReason.NEW),
            Undeploy("fenced", "a", "no longer placed here; runs on sup1"),
        ],
        [],
        id="cordoned-but-online-device-is-undeployed",
    ),
]


@pytest.mark.parametrize(("desired", "applied", "restarted", "actions", "notes"), CASES)
def test_plan(
    desired: Desired,
    applied: Applied,
    restarted: frozenset[str],
    actions: list[planning.Action],
    notes: list[str],
) -> None:
    # A limit of 1.0 keeps the prune guard out of these cases; it has its own below.
    result = planning.plan(
        desired, applied=applied, fleet=FLEET, restarted=restarted, prune_limit=1.0
    )
    assert result == Plan(actions=tuple(actions), notes=tuple(notes), hold=None)


def test_undeploy_reasons_with_the_repository_names() -> None:
    result = planning.plan(
        {},
        applied={"sup1": {"kept": digest("kept"), "dropped": digest("dropped")}},
        fleet=FLEET,
        prune_limit=1.0,
        deployments=frozenset({"kept"}),
    )
    assert result.actions == (
        Undeploy("sup1", "dropped", "removed from the repository"),
        Undeploy(
            "sup1", "kept", "not fully placed: deployed nowhere until every step has a device"
        ),
    )


def running(count: int) -> Applied:
    """`count` deployments running, spread over sup1 and sup2."""
    applied: Applied = {}
    for number in range(count):
        applied.setdefault(f"sup{number % 2 + 1}", {})[f"d{number}"] = digest(f"d{number}")
    return applied


def keeping(applied: Applied, count: int) -> Desired:
    """The desired state that keeps the first `count` deployments of `applied` and adds one."""
    kept = sorted((name for names in applied.values() for name in names), key=lambda n: int(n[1:]))
    desired: Desired = {"sup1": {"new": body("new")}}
    for name in kept[:count]:
        device = next(d for d, names in applied.items() if name in names)
        desired.setdefault(device, {})[name] = body(name)
    return desired


def test_prune_guard_holds_a_plan_that_removes_too_much() -> None:
    applied = running(10)
    result = planning.plan(
        keeping(applied, 4), applied=applied, fleet=FLEET, restarted=frozenset({"sup2"})
    )
    assert result.hold == planning.Hold(
        "would undeploy 6 of 10 running deployments (60% > 50% prune limit); held until a later "
        "commit keeps them or the prune limit is raised",
        removed=6,
        running=10,
    )
    # Held: nothing but giving the restarted sup2 back what it ran (d1 and d3 are kept).
    assert result.actions == (
        deploy("sup2", "d1", DeployReason.RESTARTED),
        deploy("sup2", "d3", DeployReason.RESTARTED),
    )
    assert result.notes[-1] == "held: 7 actions wait for the hold to be released"


def test_a_hold_gives_a_device_that_restarted_back_what_it_ran() -> None:
    """Seen case 5: what a device acknowledged before its restart is only `recorded`."""
    recorded = running(10)
    applied = {device: names for device, names in recorded.items() if device != "sup2"}
    result = planning.plan(keeping(recorded, 4), applied=applied, recorded=recorded, fleet=FLEET)
    assert result.hold is not None
    assert result.hold.removed == 6
    # Redeploys of what sup2 ran (d1 and d3 are kept); no undeploy, no new deployment.
    assert result.actions == (
        deploy("sup2", "d1", DeployReason.RESTARTED),
        deploy("sup2", "d3", DeployReason.RESTARTED),
    )


def test_what_a_device_may_still_run_is_undeployed_and_lost_bodies_redeployed() -> None:
    recorded = {"sup1": {"old": digest("old"), "kept": digest("kept")}}
    result = planning.plan(
        {"sup1": {"kept": body("kept")}}, applied={}, recorded=recorded, fleet=FLEET,
        prune_limit=1.0,
    )  # fmt: skip
    assert result.actions == (
        deploy("sup1", "kept", DeployReason.RESTARTED),
        Undeploy("sup1", "old", "desired on no device (removed from the repository, or not "
                 "fully placed)"),
    )  # fmt: skip


def test_prune_guard_allows_up_to_the_limit() -> None:
    applied = running(10)
    result = planning.plan(keeping(applied, 5), applied=applied, fleet=FLEET)
    assert result.hold is None
    assert sum(isinstance(action, Undeploy) for action in result.actions) == 5


def test_prune_limit_one_allows_removing_everything() -> None:
    applied = running(10)
    result = planning.plan({}, applied=applied, fleet=FLEET, prune_limit=1.0)
    assert result.hold is None
    assert len(result.actions) == 10


def test_moves_and_waiting_deployments_never_trip_the_guard() -> None:
    # An outage: everything moves or waits for a device; nothing left the repository.
    applied = running(10)
    desired = {"sup1": {f"d{n}": body(f"d{n}") for n in (0, 1, 4, 8)}}
    result = planning.plan(
        desired,
        applied=applied,
        fleet=FLEET,
        deployments=frozenset(f"d{n}" for n in range(10)),
        prune_limit=0.0,
    )
    assert result.hold is None
    undeploys = {
        (a.device, a.deployment): a.reason for a in result.actions if isinstance(a, Undeploy)
    }
    assert len(undeploys) == 7
    assert undeploys["sup2", "d1"] == "no longer placed here; runs on sup1"


def test_empty_fleet_and_nothing_running_is_an_empty_plan() -> None:
    assert planning.plan({}, applied={}, fleet={}) == Plan(actions=())


def pipeline(fleet: dict[str, DeviceView], applied: Applied) -> Plan:
    snapshot = sample_snapshot()
    result = placement.place(snapshot, fleet=fleet, previous={}, now=NOW)
    desired = bodies.deploy_bodies(
        snapshot, placement=result, fleet=fleet, base_url="http://orchestrator.test:3000"
    )
    return planning.plan(desired, applied=applied, fleet=fleet)


def applied_after(plan: Plan, applied: Applied) -> Applied:
    """What devices run once every action of `plan` succeeded."""
    after = {device: dict(names) for device, names in applied.items()}
    for action in plan.actions:
        if isinstance(action, Deploy):
            after.setdefault(action.device, {})[action.deployment] = action.digest
        else:
            del after[action.device][action.deployment]
    return {device: names for device, names in after.items() if names}


def test_sample_repository_converges() -> None:
    first = pipeline(sample_fleet(), {})
    assert [(a.device, a.deployment) for a in first.actions] == [
        ("sup1", "double"),
        ("sup1", "fibo-chain"),
        ("sup2", "banner"),
        ("sup2", "fibo-chain"),
    ]
    applied = applied_after(first, {})
    assert pipeline(sample_fleet(), applied) == Plan(actions=())
    # sup2 lost: banner and the second step of fibo-chain move to sup1; the first step's
    # `to` changes, so sup1's fibo-chain body changes too.
    fleet = sample_fleet()
    fleet["sup2"] = device("sup2", interfaces=WASI, state=OFFLINE)
    second = pipeline(fleet, applied)
    assert second.actions == tuple(
        action for action in second.actions if isinstance(action, Deploy)
    )
    assert [(a.device, a.deployment, a.reason) for a in second.actions] == [
        ("sup1", "banner", DeployReason.NEW),
        ("sup1", "fibo-chain", DeployReason.CHANGED),
    ]
    assert second.notes == (
        "not undeploying banner from sup2: sup2 is offline",
        "not undeploying fibo-chain from sup2: sup2 is offline",
    )
