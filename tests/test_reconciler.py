"""The reconcile loop with a fake of our `Supervisor` protocol and a real in-memory store.

The sample repository is the desired commit; sup1 and sup2 are known devices. The fake
supervisor can hold a device's calls (a hanging device, or one that restarts while we deploy).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import git_init_commit
from test_executor import FakeSupervisor, in_loop
from test_store import record_head

from gitops_orchestrator.fleetdb import DeviceRecord
from gitops_orchestrator.reconciler import Reconciler
from gitops_orchestrator.settings import ReconcileSettings
from gitops_orchestrator.simulator import DEFAULT_INTERFACES
from gitops_orchestrator.store import Store


class NoIntroductions:
    """The sample repository lists no addresses: nothing static to introduce."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def submit_static(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None:
        self.asked.append(name)


def online(name: str) -> DeviceRecord:
    return DeviceRecord(
        device=name, url=f"http://{name}", addresses=("127.0.0.1",), port=80,
        interfaces=DEFAULT_INTERFACES, platform={}, origin="registered", state="online",
        introduced_at=1.0, online_since=1.0, last_seen=1.0,
    )  # fmt: skip


@pytest.fixture
def store(sample_copy: Path) -> Store:
    opened = Store.open(None)
    git_init_commit(sample_copy)
    record_head(opened, sample_copy, now=1.0)
    for name in ("sup1", "sup2"):
        opened.upsert_device(online(name))
    yield opened  # type: ignore[misc]
    opened.close()


def reconciler(store: Store, supervisor: FakeSupervisor) -> Reconciler:
    return Reconciler(
        store, supervisor, NoIntroductions(), "http://orchestrator:3000",
        # No settle window: these tests place on the devices they made, at once.
        settings=ReconcileSettings(attempts=1, retry_backoff=0.01, settle_window=0),
    )  # fmt: skip


def statuses(store: Store, device: str) -> dict[str, str]:
    return {s.deployment: s.status for s in store.deploy_statuses(device)}


async def until(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@in_loop
async def test_a_pass_never_waits_for_a_hanging_device(store: Store) -> None:
    supervisor, never = FakeSupervisor(), asyncio.Event()

    async def hang(deployment: str) -> None:
        await never.wait()

    supervisor.behaviour["http://sup2"] = hang
    loop = reconciler(store, supervisor)
    result = await asyncio.wait_for(loop.reconcile_once(), 5)
    assert result.plan is not None
    assert {a.device for a in result.plan.actions} == {"sup1", "sup2"}
    await until(lambda: statuses(store, "sup1") and set(statuses(store, "sup1").values())
                == {"synced"}, "sup1 synced")  # fmt: skip
    await loop.reconcile_once()  # passes go on while sup2 hangs
    assert set(statuses(store, "sup2").values()) == {"progressing"}
    assert loop.workers.busy() == 1
    await loop.workers.close()


@in_loop
async def test_outcomes_of_an_older_incarnation_are_discarded(store: Store) -> None:
    supervisor, release = FakeSupervisor(), asyncio.Event()

    async def slow(deployment: str) -> None:
        await release.wait()

    supervisor.behaviour["http://sup1"] = slow
    loop = reconciler(store, supervisor)
    await loop.reconcile_once()
    await until(lambda: supervisor.in_flight, "a deploy to sup1 in flight")
    store.forget_applied("sup1", now=2.0, why="registered again: restarted")
    release.set()
    await until(lambda: not loop.workers.busy(), "the workers done")
    assert "sup1" not in store.applied()  # the acknowledgement came from the old start
    assert set(statuses(store, "sup1").values()) == {"progressing"}
    deploys_before = len([c for c in supervisor.calls if c[0] == "http://sup1"])
    await loop.reconcile_once()  # the next pass redeploys under the new incarnation
    await until(lambda: not loop.workers.busy(), "the redeploy")
    await loop.reconcile_once()
    assert set(statuses(store, "sup1").values()) == {"synced"}
    assert store.ledger("sup1")[0].incarnation == 2
    assert len([c for c in supervisor.calls if c[0] == "http://sup1"]) > deploys_before
    await loop.workers.close()


@in_loop
async def test_synced_only_under_the_current_incarnation(store: Store) -> None:
    supervisor = FakeSupervisor()
    loop = reconciler(store, supervisor)
    await loop.reconcile_once()
    await until(lambda: not loop.workers.busy(), "the rollout")
    await loop.reconcile_once()
    assert set(statuses(store, "sup2").values()) == {"synced"}
    # Back from offline: it may have restarted unseen. No pass has run since, yet nothing
    # reads `synced` any more.
    store.new_incarnation("sup2", now=3.0, started_at=None, why="back online", kind="online")
    assert set(statuses(store, "sup2").values()) == {"progressing"}
    assert store.applied().get("sup2") is None
    calls = len(supervisor.calls)
    await loop.reconcile_once()
    await until(lambda: not loop.workers.busy(), "the re-post")
    await loop.reconcile_once()
    assert set(statuses(store, "sup2").values()) == {"synced"}
    reposted = supervisor.calls[calls:]
    assert {c[0] for c in reposted} == {"http://sup2"}  # once, and only there
    assert len(reposted) == len(statuses(store, "sup2"))
    await loop.workers.close()
