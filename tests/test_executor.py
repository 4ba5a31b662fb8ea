"""The per-device workers, with a fake of our own `Supervisor` protocol and an injected clock.

No HTTP here (that is `test_supervisor.py` and the end-to-end tests): the fake decides per
device whether a call succeeds, fails, hangs or raises, and records what it was asked.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from gitops_orchestrator.core.planning import Action, Deploy, DeployReason, Undeploy
from gitops_orchestrator.errors import SupervisorRejected, SupervisorUnreachable
from gitops_orchestrator.executor import Outcome, Work, Workers
from gitops_orchestrator.settings import ReconcileSettings

Behaviour = Callable[[str], Awaitable[None]]


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no asyncio plugin here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeSupervisor:
    """Devices by URL: each call runs the device's behaviour (default: success)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.behaviour: dict[str, Behaviour] = {}
        self.in_flight = 0
        self.most_in_flight = 0

    async def _call(self, url: str, verb: str, deployment: str) -> None:
        self.calls.append((url, verb, deployment))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            behaviour = self.behaviour.get(url)
            if behaviour is not None:
                await behaviour(deployment)
        finally:
            self.in_flight -= 1

    async def deploy(self, base_url: str, body: dict[str, Any]) -> None:
        await self._call(base_url, "deploy", body["deploymentId"])

    async def undeploy(self, base_url: str, deployment: str) -> None:
        await self._call(base_url, "undeploy", deployment)


class Clock:
    """Time that only moves when a worker sleeps (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def deploy(device: str, name: str, digest: str = "d1") -> Deploy:
    return Deploy(device, name, {"deploymentId": name}, DeployReason.NEW, digest)


def work(device: str, *actions: Action, incarnation: int = 1) -> Work:
    return Work(device, f"http://{device}", incarnation, "c" * 40, tuple(actions))


class Harness:
    def __init__(self, **settings: Any) -> None:
        self.supervisor = FakeSupervisor()
        self.clock = Clock()
        self.recorded: list[tuple[Work, list[Outcome]]] = []
        self.workers = Workers(
            self.supervisor, self.record, settings=ReconcileSettings(**settings),
            clock=self.clock, sleep=self.clock.sleep, jitter=lambda: 1.0,
        )  # fmt: skip

    async def record(self, done: Work, outcomes: list[Outcome]) -> None:
        self.recorded.append((done, outcomes))

    async def settle(self) -> None:
        """Until no worker has anything left to do (bounded: a stuck test fails)."""
        for _ in range(2000):
            if not self.workers.busy():
                return
            await asyncio.sleep(0)
        raise AssertionError("workers still busy")


@in_loop
async def test_a_failing_action_is_retried_with_growing_waits() -> None:
    h = Harness(attempts=3, retry_backoff=0.5)
    tries = iter([SupervisorRejected("deploy refused: 500"), SupervisorRejected("again"), None])

    async def flaky(deployment: str) -> None:
        error = next(tries)
        if error is not None:
            raise error

    h.supervisor.behaviour["http://sup1"] = flaky
    h.workers.submit(work("sup1", deploy("sup1", "a")))
    await h.settle()
    [(_, [outcome])] = h.recorded
    assert outcome.ok
    assert outcome.attempts == 3
    assert h.clock.sleeps[:2] == [0.5, 1.0]  # retry_backoff, doubled (jitter fixed at 1)


@in_loop
async def test_a_failed_device_backs_off_alone_and_is_retried() -> None:
    h = Harness(attempts=1, retry_backoff=0.5, failed_retry_max=3.0)
    failing = True

    async def refuse(deployment: str) -> None:
        if failing:
            raise SupervisorRejected("deploy refused: 500")

    h.supervisor.behaviour["http://bad"] = refuse
    h.workers.submit(work("bad", deploy("bad", "a")))
    h.workers.submit(work("good", deploy("good", "a")))
    for _ in range(1000):
        await asyncio.sleep(0)
        if len(h.recorded) >= 4:
            break
    good = [o for w, o in h.recorded if w.device == "good"]
    bad = [o for w, o in h.recorded if w.device == "bad"]
    assert [o.ok for [o] in good] == [True]
    assert len(bad) >= 3
    assert not any(o.ok for [o] in bad)
    # One backoff per failed batch: 1, 2, then capped at failed_retry_max.
    assert h.clock.sleeps[:3] == [1.0, 2.0, 3.0]
    assert h.workers.error("bad", "a", "d1") == ("deploy refused: 500", 1)
    failing = False
    await h.settle()
    assert h.recorded[-1][1][0].ok
    assert h.workers.error("bad", "a", "d1") is None


@in_loop
async def test_new_work_replaces_pending_work_and_work_in_flight_is_not_repeated() -> None:
    h = Harness()
    release = asyncio.Event()

    async def slow(deployment: str) -> None:
        await release.wait()

    h.supervisor.behaviour["http://sup1"] = slow
    first = work("sup1", deploy("sup1", "a", "d1"))
    h.workers.submit(first)
    await asyncio.sleep(0)
    h.workers.submit(first)  # the next pass asks again while it is in flight: dropped
    h.workers.submit(work("sup1", deploy("sup1", "a", "d2")))  # a commit: pending
    latest = work("sup1", deploy("sup1", "a", "d3"))
    h.workers.submit(latest)  # another commit: replaces the pending one
    release.set()
    await h.settle()
    assert [w for w, _ in h.recorded] == [first, latest]
    h.workers.submit(latest)  # done; a pass that read the store before the record: dropped
    await h.settle()
    assert len(h.supervisor.calls) == 2


@in_loop
async def test_a_hanging_device_holds_only_its_own_slot() -> None:
    h = Harness(concurrency=2)
    never = asyncio.Event()

    async def hang(deployment: str) -> None:
        await never.wait()

    h.supervisor.behaviour["http://stuck"] = hang
    h.workers.submit(work("stuck", deploy("stuck", "a")))
    for n in range(5):
        h.workers.submit(work(f"sup{n}", deploy(f"sup{n}", "a")))
    for _ in range(200):
        await asyncio.sleep(0)
    assert sorted(w.device for w, _ in h.recorded) == [f"sup{n}" for n in range(5)]
    assert h.supervisor.most_in_flight == 2  # the bound holds, hanging device included
    assert h.workers.busy() == 1
    await h.workers.close()


@in_loop
async def test_an_unexpected_exception_stays_in_its_worker() -> None:
    h = Harness(attempts=1)

    async def broken(deployment: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    h.supervisor.behaviour["http://odd"] = broken
    h.workers.submit(work("odd", deploy("odd", "a")))
    h.workers.submit(work("sup1", deploy("sup1", "a")))
    for _ in range(20):
        await asyncio.sleep(0)
    outcomes = {w.device: o[0] for w, o in h.recorded}
    assert outcomes["sup1"].ok
    assert not outcomes["odd"].ok
    assert "unexpected error: RecursionError" in (outcomes["odd"].error or "")
    await h.workers.close()


@in_loop
async def test_an_unreachable_device_fails_its_other_actions_at_once() -> None:
    h = Harness(attempts=2)

    async def down(deployment: str) -> None:
        raise SupervisorUnreachable("connection refused")

    h.supervisor.behaviour["http://sup1"] = down
    h.workers.submit(work("sup1", Undeploy("sup1", "old", "gone"), deploy("sup1", "a")))
    for _ in range(20):
        await asyncio.sleep(0)
    [(_, outcomes)] = h.recorded[:1]
    assert [(o.action.deployment, o.ok, o.attempts) for o in outcomes] == [
        ("old", False, 2),  # undeploys first
        ("a", False, 0),  # not tried
    ]
    await h.workers.close()


@pytest.mark.parametrize("empty_first", [True, False])
@in_loop
async def test_empty_work_clears_what_is_pending(empty_first: bool) -> None:
    h = Harness()
    release = asyncio.Event()

    async def slow(deployment: str) -> None:
        await release.wait()

    h.supervisor.behaviour["http://sup1"] = slow
    h.workers.submit(work("sup1", deploy("sup1", "a", "d1")))
    await asyncio.sleep(0)
    if empty_first:
        h.workers.submit(work("sup1"))
    h.workers.submit(work("sup1", deploy("sup1", "b")))
    if not empty_first:
        h.workers.submit(work("sup1"))  # the desired state needs nothing more there
    release.set()
    await h.settle()
    names = [call[2] for call in h.supervisor.calls]
    assert names == (["a", "b"] if empty_first else ["a"])
