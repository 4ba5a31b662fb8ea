"""The bodies we build are accepted by supervisors, which then run the deployments.

The sample repository is placed on simulated supervisors (real HTTP servers running real wasm),
its bodies are built with `deploy_bodies` and posted with `SupervisorClient.deploy`. The module
files come from the orchestrator's own Starlette app (a store holding the committed sample),
served by uvicorn on loopback: the devices download them while our deploy request waits, as a
real supervisor does. Then the deployments run on the devices themselves, with no orchestrator
in between: fibo-chain(13) = double(fibo(13)) = 466.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import SAMPLE_REPO, copy_sample, git_init_commit
from test_store import record_head

from gitops_orchestrator import manifests, repo
from gitops_orchestrator.core import bodies, placement
from gitops_orchestrator.models import DeviceState, DeviceView, Snapshot
from gitops_orchestrator.simulator.device import DEFAULT_INTERFACES
from gitops_orchestrator.simulator.fleet import FleetThread
from gitops_orchestrator.store import Store
from gitops_orchestrator.supervisor import SupervisorClient
from gitops_orchestrator.web.app import Services, create_app

NOW = 1_000_000.0
GREETING = b"Hello from the Wasm-IoT fleet!\n"


class Unused:
    """The app's other collaborators (webhook, registration, /execute, logs): unused here."""

    def trigger(self) -> None:
        raise AssertionError("no webhook in this test")

    def submit(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None:
        raise AssertionError("no registration in this test")

    async def run(self, deployment: str, **options: Any) -> Any:
        raise AssertionError("no /execute in this test")

    def accept(self, raw: str | None, *, peer: str | None) -> None:
        pass  # the devices here know no orchestrator, so they ship no logs

    @property
    def counts(self) -> dict[str, int]:
        return {}


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test process keeps its own signal handlers


@contextlib.contextmanager
def file_server(store: Store) -> Iterator[str]:
    """The orchestrator's web app on a free loopback port, in a thread; yields its URL."""
    # Every collaborator but the store is one the file routes never use.
    others = {
        field.name: Unused()
        for field in dataclasses.fields(Services)
        if field.name not in ("store", "repo", "branch", "background")
    }
    services = Services(store=store, repo="sample", branch="main", **others)
    config = uvicorn.Config(
        create_app(services), log_config=None, access_log=False, timeout_graceful_shutdown=1
    )
    server = _ThreadServer(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="files")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the file server did not start"
            assert time.monotonic() < deadline, "the file server did not start in time"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def files(tmp_path: Path) -> Iterator[str]:
    """A store holding the committed sample repository, its files served over HTTP."""
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path, "the sample fleet")
    store = Store.open(None)
    try:
        record_head(store, path, now=NOW)
        with file_server(store) as url:
            yield url
    finally:
        store.close()


@pytest.fixture
def fleet() -> Iterator[FleetThread]:
    with FleetThread() as running:
        running.add(names=["sup1", "sup2", "sup3"])
        yield running


def sample() -> Snapshot:
    snapshot = manifests.load(repo.FolderTree(SAMPLE_REPO)).snapshot
    assert snapshot is not None
    return snapshot


def views(
    snapshot: Snapshot, fleet: FleetThread, *, cordoned: Sequence[str] = ()
) -> dict[str, DeviceView]:
    """The simulated devices as placement sees them: online, labels from devices.yaml."""
    listed = snapshot.devices.devices
    return {
        device.name: DeviceView(
            name=device.name,
            url=device.url,
            state=DeviceState.ONLINE,
            interfaces=frozenset(DEFAULT_INTERFACES),
            labels=dict(listed[device.name].labels),
            cordoned=listed[device.name].cordoned or device.name in cordoned,
            online_since=0.0,
        )
        for device in fleet.fleet
    }


def deploy_all(built: bodies.Bodies, fleet: Mapping[str, DeviceView]) -> None:
    """POST every body to its device, all at once: every download overlaps a deploy."""

    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            supervisor = SupervisorClient(client)
            await asyncio.gather(
                *(
                    supervisor.deploy(fleet[device].url, body)
                    for device, by_deployment in built.items()
                    for body in by_deployment.values()
                )
            )

    asyncio.run(main())


def run(url: str, *, method: str = "GET", **options: Any) -> tuple[Any, str]:
    """Call a deployment's first step and follow resultUrls to the end: (result, its URL)."""
    with httpx.Client(trust_env=False, timeout=15) as client:
        answer = client.request(method, url, **options)
        assert answer.status_code == 200, answer.text
        result_url = answer.json()["resultUrl"]
        deadline = time.monotonic() + 15
        while True:
            entry = client.get(result_url)
            if entry.status_code == 404:  # queued, or still running
                assert time.monotonic() < deadline, f"{result_url} stays pending"
                time.sleep(0.02)
                continue
            assert entry.status_code == 200, entry.text
            result = entry.json()["result"]
            if isinstance(result, str) and result.startswith("http://"):
                result_url = result  # a chained step: the next hop's resultUrl
                continue
            return result, result_url


def deployed(fleet: FleetThread, name: str) -> set[str]:
    return fleet.call(lambda: {str(key) for key in fleet.fleet[name].deployments})


def test_the_sample_bodies_are_accepted_and_run(files: str, fleet: FleetThread) -> None:
    snapshot = sample()
    devices = views(snapshot, fleet)
    placed = placement.place(snapshot, fleet=devices, previous={}, now=NOW)
    assert placed.complete == {"banner", "double", "fibo-chain"}
    chain = [placed.steps["fibo-chain", number].device for number in (0, 1)]
    assert chain == ["sup1", "sup2"], "the chain should cross devices"
    built = bodies.deploy_bodies(snapshot, placement=placed, fleet=devices, base_url=files)
    assert sorted(built) == ["sup1", "sup2"]  # sup3 is cordoned

    deploy_all(built, devices)

    for device, by_deployment in built.items():
        assert deployed(fleet, device) == set(by_deployment)
        received = fleet.call(lambda d=device: list(fleet.fleet[d].deploy_requests))
        assert [r.accepted for r in received] == [True] * len(by_deployment)
        assert all(r.content_type == "application/json" for r in received)
    # The devices downloaded exactly the committed bytes, by module name.
    sup1, sup2 = fleet.fleet["sup1"], fleet.fleet["sup2"]
    for name in ("fibo", "double"):
        wasm = (SAMPLE_REPO / "modules" / name / f"{name}.wasm").read_bytes()
        assert (sup1.folder / "modules" / name).read_bytes() == wasm
    assert (sup2.folder / "params" / "banner" / "greeting.txt").read_bytes() == GREETING

    result, last = run(f"{sup1.url}/fibo-chain/modules/fibo/fibo?param0=13")
    assert result == ["466", None]
    assert last.startswith(f"{sup2.url}/request-history/fibo-chain:double:double:")

    assert run(f"{sup1.url}/double/modules/double/double?param0=21")[0] == ["42", None]

    banner, where = run(f"{sup2.url}/banner/modules/banner/render?param0=3")
    assert banner == [None, ["out.bin"]]
    with httpx.Client(trust_env=False) as client:
        output = client.get(f"{sup2.url}/module_results/banner/out.bin")
    assert where.startswith(sup2.url)
    assert output.content == GREETING * 3


def test_a_chain_on_one_device_is_one_body_and_runs(files: str, fleet: FleetThread) -> None:
    snapshot = sample()
    devices = views(snapshot, fleet, cordoned=["sup2"])
    placed = placement.place(snapshot, fleet=devices, previous={}, now=NOW)
    assert [placed.steps["fibo-chain", number].device for number in (0, 1)] == ["sup1", "sup1"]
    built = bodies.deploy_bodies(snapshot, placement=placed, fleet=devices, base_url=files)
    assert sorted(built) == ["sup1"]
    body = built["sup1"]["fibo-chain"]
    assert [module["name"] for module in body["modules"]] == ["fibo", "double"]
    step = body["instructions"]["modules"]["fibo"]["fibo"]
    assert step["to"]["url"] == fleet.fleet["sup1"].url
    assert body["instructions"]["modules"]["double"]["double"]["to"] is None

    deploy_all(built, devices)

    assert deployed(fleet, "sup1") == {"banner", "double", "fibo-chain"}
    assert deployed(fleet, "sup2") == set()
    url = fleet.fleet["sup1"].url
    result, last = run(f"{url}/fibo-chain/modules/fibo/fibo?param0=13")
    assert result == ["466", None]
    assert last.startswith(f"{url}/request-history/fibo-chain:double:double:")
    # Re-posting the same bodies replaces the deployments and they still run.
    deploy_all(built, devices)
    assert run(f"{url}/fibo-chain/modules/fibo/fibo?param0=10")[0] == ["110", None]
