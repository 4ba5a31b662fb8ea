"""Placement (design §2): one table of rules with the exact reasons, then the sample repository.

The builders at the top (`loaded`, `snapshot_of`, `device`) are shared with the other tests of
`tests/core/`, which import them from here.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_REPO

from gitops_orchestrator import manifests, repo
from gitops_orchestrator.core import placement
from gitops_orchestrator.core.placement import Placement, StepKey, StepPlacement, StepStatus
from gitops_orchestrator.models import (
    Deployment,
    Devices,
    DeviceState,
    DeviceView,
    FileFacts,
    Inspection,
    LoadedModule,
    Module,
    Snapshot,
    WasmImport,
)

CAMERA = "takeImageStaticSize"
WASI = frozenset({"fd_close", "fd_read", "fd_write", "path_open"})
ONLINE, OFFLINE, GONE = DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.GONE
PLACED, WAITING, UNPLACEABLE = StepStatus.PLACED, StepStatus.WAITING, StepStatus.UNPLACEABLE


def loaded(
    name: str,
    *,
    imports: Iterable[str] = (),
    functions: Mapping[str, Any] | None = None,
    data: Iterable[str] = (),
) -> LoadedModule:
    """A loaded module as `manifests` would make it, without a wasm file."""
    functions = functions or {name: {"params": ["integer"], "output": "integer"}}
    spec = Module.model_validate(
        {"name": name, "wasm": f"{name}.wasm", "functions": functions, "data": {f: f for f in data}}
    )

    def facts(path: str) -> FileFacts:
        return FileFacts(path, hashlib.sha256(path.encode()).hexdigest(), 1)

    return LoadedModule(
        spec=spec,
        binary=facts(f"modules/{name}/{name}.wasm"),
        inspection=Inspection(
            functions={f: len(spec.functions[f].params) for f in spec.functions},
            imports=tuple(WasmImport("env", item, "func") for item in imports),
        ),
        data={f: facts(f"modules/{name}/{f}") for f in data},
    )


MODULES = (loaded("plain"), loaded("cam", imports=[CAMERA]), loaded("wasi", imports=WASI))


def snapshot_of(
    deployments: Iterable[Mapping[str, Any]], modules: Iterable[LoadedModule] = MODULES
) -> Snapshot:
    """A valid snapshot of `deployments` (dicts as in deployments/<name>.yaml)."""
    parsed = [Deployment.model_validate(item) for item in deployments]
    return Snapshot(
        commit_sha=None,
        modules={module.name: module for module in modules},
        deployments={item.name: item for item in parsed},
        devices=Devices(),
    )


def device(
    name: str,
    *,
    state: DeviceState = ONLINE,
    interfaces: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    admitted: bool = True,
    cordoned: bool = False,
    online_since: float | None = 0.0,
) -> DeviceView:
    return DeviceView(
        name=name,
        url=f"http://{name}.test:5000",
        state=state,
        interfaces=frozenset(interfaces),
        labels=dict(labels or {}),
        admitted=admitted,
        cordoned=cordoned,
        online_since=online_since,
    )


def fleet_of(*views: DeviceView) -> dict[str, DeviceView]:
    return {view.name: view for view in views}


@functools.cache
def sample_snapshot() -> Snapshot:
    """The sample repository, loaded once (snapshots are immutable)."""
    snapshot = manifests.load(repo.FolderTree(Path(SAMPLE_REPO))).snapshot
    assert snapshot is not None
    return snapshot


def one(step: Mapping[str, Any], name: str = "d") -> dict[str, Any]:
    """A deployment of one step."""
    return {"name": name, "sequence": [step]}


NOW = 1000.0
CAM = [CAMERA]

RULES = [
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1"})],
        [device("sup1"), device("sup2")],
        {},
        StepPlacement("sup1", PLACED, "on sup1 as named"),
        id="named-device",
    ),
    pytest.param(
        [one({"module": "cam", "function": "cam", "device": "sup1", "failovers": ["sup2"]})],
        [device("sup1"), device("sup2", interfaces=CAM)],
        {},
        StepPlacement("sup2", PLACED, f"sup1: lacks interface {CAMERA}; on failover sup2"),
        id="named-device-lacks-interface-uses-failover",
    ),
    pytest.param(
        [one({"module": "cam", "function": "cam", "device": "sup1"})],
        [device("sup1"), device("sup2", interfaces=CAM)],
        {},
        StepPlacement(
            None, UNPLACEABLE, f"sup1: lacks interface {CAMERA}; no known device can take it"
        ),
        id="named-device-lacks-interface-unplaceable",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "selector": {"room": "kitchen"}})],
        [device("sup1", labels={"room": "kitchen"}), device("sup2", labels={"room": "hall"})],
        {},
        StepPlacement("sup1", PLACED, "only candidate: sup1"),
        id="selector",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "selector": {"room": "kitchen"}})],
        [
            device("sup1", labels={"room": "kitchen"}, state=OFFLINE),
            device("sup2", labels={"room": "hall"}),
        ],
        {},
        StepPlacement(
            None, WAITING, "no eligible device matches room=kitchen (sup1 is offline); waiting"
        ),
        id="selector-never-on-a-mismatch",
    ),
    pytest.param(
        [one({"module": "cam", "function": "cam", "selector": {"room": "kitchen"}})],
        [device("sup1", labels={"room": "kitchen"}), device("sup2", interfaces=CAM)],
        {},
        StepPlacement(
            None,
            WAITING,
            f"no eligible device matches room=kitchen (sup1: lacks interface {CAMERA}); waiting",
        ),
        id="selector-match-lacks-interface",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "selector": {"room": "attic"}})],
        [device("sup1", labels={"room": "kitchen"})],
        {},
        StepPlacement(None, WAITING, "no known device matches room=attic; waiting"),
        id="selector-no-known-match",
    ),
    pytest.param(
        [one({"module": "cam", "function": "cam"})],
        [device("sup1"), device("sup2", interfaces=CAM)],
        {},
        StepPlacement("sup2", PLACED, "only candidate: sup2"),
        id="interfaces",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain"})],
        [device("sup2"), device("sup1")],
        {},
        StepPlacement("sup1", PLACED, "least loaded of sup1, sup2 (0 steps each); first by name"),
        id="tie-by-name",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain"})],
        [device("sup1"), device("sup2")],
        {("d", 0): "sup2"},
        StepPlacement("sup2", PLACED, "sticky on sup2"),
        id="sticky",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain"})],
        [device("sup1"), device("sup2"), device("sup3", state=OFFLINE)],
        {("d", 0): "sup3"},
        StepPlacement(
            "sup1",
            PLACED,
            "sup3 is offline; least loaded of sup1, sup2 (0 steps each); first by name",
        ),
        id="sticky-device-lost",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "selector": {"room": "kitchen"}})],
        [device("sup1", labels={"room": "kitchen"}), device("sup2", labels={"room": "hall"})],
        {("d", 0): "sup2"},
        StepPlacement("sup1", PLACED, "sup2 does not match room=kitchen; only candidate: sup1"),
        id="sticky-device-no-longer-matches",
    ),
    pytest.param(
        [
            one(
                {
                    "module": "plain",
                    "function": "plain",
                    "device": "sup1",
                    "failovers": ["sup2", "sup3", "sup4"],
                }
            )
        ],
        [
            device("sup1", state=OFFLINE),
            device("sup2", state=OFFLINE),
            device("sup4"),
            device("sup3"),
        ],
        {},
        StepPlacement("sup3", PLACED, "sup1 is offline; sup2 is offline; on failover sup3"),
        id="failover-order",
    ),
    pytest.param(
        [
            one(
                {
                    "module": "cam",
                    "function": "cam",
                    "device": "sup1",
                    "failovers": ["sup2", "sup3"],
                }
            )
        ],
        [
            device("sup1", state=OFFLINE, interfaces=CAM),
            device("sup2"),
            device("sup3", interfaces=CAM),
        ],
        {},
        StepPlacement(
            "sup3",
            PLACED,
            f"sup1 is offline; sup2: lacks interface {CAMERA}; on failover sup3",
        ),
        id="failover-lacking-requirements-skipped",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "failovers": ["sup3"]})],
        [device("sup1"), device("sup2", state=GONE), device("sup3")],
        {("d", 0): "sup2"},
        StepPlacement("sup3", PLACED, "sup2 is gone; on failover sup3"),
        id="free-step-failover-before-least-loaded",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1"})],
        [device("sup1", state=OFFLINE), device("sup2")],
        {},
        StepPlacement(None, WAITING, "sup1 is offline; waiting for sup1"),
        id="named-offline-waits",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1"})],
        [device("sup1", cordoned=True), device("sup2")],
        {},
        StepPlacement(None, WAITING, "sup1 is cordoned; waiting for sup1"),
        id="named-cordoned-waits",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1"})],
        [device("sup1", admitted=False), device("sup2")],
        {},
        StepPlacement(None, WAITING, "sup1 is not admitted; waiting for sup1"),
        id="named-not-admitted-waits",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1"})],
        [device("sup1", state=OFFLINE, cordoned=True)],
        {},
        StepPlacement(None, WAITING, "sup1 is offline and cordoned; waiting for sup1"),
        id="named-offline-and-cordoned-waits",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup9"})],
        [device("sup1")],
        {},
        StepPlacement(None, UNPLACEABLE, "sup9 is unknown; no known device can take it"),
        id="named-unknown-unplaceable",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup9", "failovers": ["sup2"]})],
        [device("sup1"), device("sup2", state=OFFLINE)],
        {},
        StepPlacement(None, WAITING, "sup9 is unknown; sup2 is offline; waiting for sup2"),
        id="named-unknown-failover-offline-waits",
    ),
    pytest.param(
        [one({"module": "cam", "function": "cam"})],
        [device("sup1"), device("sup2", state=OFFLINE)],
        {},
        StepPlacement(None, UNPLACEABLE, f"no known device offers every import of cam: {CAMERA}"),
        id="no-device-with-imports-unplaceable",
    ),
    pytest.param(
        [one({"module": "cam", "function": "cam"})],
        [device("sup1"), device("sup2", state=OFFLINE, interfaces=CAM)],
        {},
        StepPlacement(None, WAITING, f"no eligible device offering {CAMERA}; waiting"),
        id="capable-device-offline-waits",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain"})],
        [],
        {},
        StepPlacement(None, UNPLACEABLE, "no device is known"),
        id="empty-fleet",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1", "failovers": ["sup2"]})],
        [device("sup1", online_since=NOW - 10), device("sup2")],
        {("d", 0): "sup2"},
        StepPlacement("sup2", PLACED, "sticky on failover sup2: sup1 online for only 10 s of 30 s"),
        id="return-after-not-yet",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1", "failovers": ["sup2"]})],
        [device("sup1", online_since=NOW - 45), device("sup2")],
        {("d", 0): "sup2"},
        StepPlacement("sup1", PLACED, "sup1 back online for 45 s; returned from failover sup2"),
        id="return-after-elapsed",
    ),
    pytest.param(
        [one({"module": "plain", "function": "plain", "device": "sup1", "failovers": ["sup2"]})],
        [device("sup1", online_since=NOW - 30), device("sup2")],
        {("d", 0): "sup2"},
        StepPlacement("sup1", PLACED, "sup1 back online for 30 s; returned from failover sup2"),
        id="return-after-exactly",
    ),
    pytest.param(
        [
            one(
                {
                    "module": "plain",
                    "function": "plain",
                    "device": "sup1",
                    "failovers": ["sup2", "sup3"],
                }
            )
        ],
        [device("sup1", state=OFFLINE), device("sup2"), device("sup3")],
        {("d", 0): "sup3"},
        StepPlacement("sup3", PLACED, "sup1 is offline; sticky on failover sup3"),
        id="sticky-on-later-failover",
    ),
]


@pytest.mark.parametrize(("deployments", "devices", "previous", "expected"), RULES)
def test_rule(
    deployments: list[dict[str, Any]],
    devices: list[DeviceView],
    previous: dict[StepKey, str],
    expected: StepPlacement,
) -> None:
    result = placement.place(
        snapshot_of(deployments), fleet=fleet_of(*devices), previous=previous, now=NOW
    )
    assert result.steps[("d", 0)] == expected
    assert ("d" in result.complete) is (expected.status is PLACED)


def test_least_loaded_counts_steps_of_every_deployment() -> None:
    snapshot = snapshot_of(
        [
            one({"module": "plain", "function": "plain", "device": "sup1"}, name="a"),
            one({"module": "plain", "function": "plain", "device": "sup1"}, name="b"),
            one({"module": "plain", "function": "plain"}, name="c"),
            one({"module": "plain", "function": "plain"}, name="d"),
            one({"module": "plain", "function": "plain"}, name="e"),
        ]
    )
    result = placement.place(
        snapshot, fleet=fleet_of(device("sup1"), device("sup2")), previous={}, now=NOW
    )
    assert {key[0]: step.device for key, step in result.steps.items()} == {
        "a": "sup1",
        "b": "sup1",
        "c": "sup2",
        "d": "sup2",
        "e": "sup1",
    }
    assert result.steps[("c", 0)].reason == "least loaded of sup1, sup2 (sup2: 0 steps)"
    assert result.steps[("e", 0)].reason == (
        "least loaded of sup1, sup2 (2 steps each); first by name"
    )


def test_long_candidate_lists_are_summarised() -> None:
    devices = [device(f"sup{number:02}") for number in range(12)]
    result = placement.place(
        snapshot_of([one({"module": "plain", "function": "plain"})]),
        fleet=fleet_of(*devices),
        previous={},
        now=NOW,
    )
    assert result.steps[("d", 0)].reason == (
        "least loaded of 12 devices (sup00: 0 steps); first by name"
    )


def test_an_incomplete_deployment_affects_only_itself() -> None:
    others = [
        {"name": f"free{n}", "sequence": [{"module": "plain", "function": "plain"}]}
        for n in range(4)
    ]
    stuck = {
        "name": "a-stuck",
        "sequence": [
            {"module": "plain", "function": "plain"},
            {"module": "cam", "function": "cam", "device": "sup1"},
        ],
    }
    fleet = fleet_of(device("sup1"), device("sup2"))
    alone = placement.place(snapshot_of(others), fleet=fleet, previous={}, now=NOW)
    together = placement.place(snapshot_of([stuck, *others]), fleet=fleet, previous={}, now=NOW)
    assert {k: v for k, v in together.steps.items() if k[0] != "a-stuck"} == alone.steps
    assert together.complete == alone.complete == {f"free{n}" for n in range(4)}
    assert together.steps[("a-stuck", 0)].status is PLACED
    assert together.steps[("a-stuck", 1)].status is UNPLACEABLE
    complete, reasons = placement.deployment_status(
        together, snapshot_of([stuck]).deployments["a-stuck"]
    )
    assert not complete
    assert reasons == (
        f"step 2 (cam.cam) unplaceable: sup1: lacks interface {CAMERA}; "
        "no known device can take it",
    )


def test_sticky_steps_are_counted_before_free_choices() -> None:
    # "a" would take sup1 by name if the sticky steps of "b" and "c" were not counted first.
    snapshot = snapshot_of(
        [one({"module": "plain", "function": "plain"}, name=name) for name in ("a", "b", "c")]
    )
    result = placement.place(
        snapshot,
        fleet=fleet_of(device("sup1"), device("sup2")),
        previous={("b", 0): "sup1", ("c", 0): "sup1"},
        now=NOW,
    )
    assert result.steps[("a", 0)] == StepPlacement(
        "sup2", PLACED, "least loaded of sup1, sup2 (sup2: 0 steps)"
    )


def test_unknown_online_since_counts_as_long_ago() -> None:
    result = placement.place(
        snapshot_of(
            [one({"module": "plain", "function": "plain", "device": "sup1", "failovers": ["sup2"]})]
        ),
        fleet=fleet_of(device("sup1", online_since=None), device("sup2")),
        previous={("d", 0): "sup2"},
        now=NOW,
    )
    assert result.steps[("d", 0)] == StepPlacement(
        "sup1", PLACED, "sup1 back online; returned from failover sup2"
    )


def sample_fleet() -> dict[str, DeviceView]:
    return fleet_of(
        device("sup1", interfaces=WASI, labels={"room": "kitchen"}),
        device("sup2", interfaces=WASI, labels={"room": "hallway"}),
        device("sup3", interfaces=WASI, labels={"room": "garage"}, cordoned=True),
    )


def test_sample_repository() -> None:
    result = placement.place(sample_snapshot(), fleet=sample_fleet(), previous={}, now=NOW)
    assert result.steps == {
        ("banner", 0): StepPlacement("sup2", PLACED, "least loaded of sup1, sup2 (sup2: 0 steps)"),
        ("double", 0): StepPlacement("sup1", PLACED, "only candidate: sup1"),
        ("fibo-chain", 0): StepPlacement("sup1", PLACED, "on sup1 as named"),
        ("fibo-chain", 1): StepPlacement(
            "sup2", PLACED, "least loaded of sup1, sup2 (sup2: 1 step)"
        ),
    }
    assert result.complete == {"banner", "double", "fibo-chain"}
    assert result.devices() == {key: step.device for key, step in result.steps.items()}


def test_sample_repository_with_sup1_offline() -> None:
    fleet = sample_fleet()
    fleet["sup1"] = device("sup1", interfaces=WASI, labels={"room": "kitchen"}, state=OFFLINE)
    before = placement.place(sample_snapshot(), fleet=sample_fleet(), previous={}, now=NOW)
    result: Placement = placement.place(
        sample_snapshot(), fleet=fleet, previous=before.devices(), now=NOW
    )
    assert result.steps[("fibo-chain", 0)] == StepPlacement(
        "sup2", PLACED, "sup1 is offline; on failover sup2"
    )
    assert result.steps[("double", 0)] == StepPlacement(
        None,
        WAITING,
        "sup1 is offline; no eligible device matches room=kitchen (sup1 is offline); waiting",
    )
    assert result.complete == {"banner", "fibo-chain"}
