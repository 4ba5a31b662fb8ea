"""Health checks: the state rules (pure) and sweeps against simulated devices."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from gitops_orchestrator.devices import Introducer
from gitops_orchestrator.fleetdb import DeviceRecord, PassRecord
from gitops_orchestrator.health import HealthChecker, judge
from gitops_orchestrator.settings import DeviceSettings
from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import Fleet
from gitops_orchestrator.store import Store
from gitops_orchestrator.supervisor import SupervisorClient

RECORD = DeviceRecord(
    device="sup1", url="http://127.0.0.1:1", addresses=("127.0.0.1",), port=1, interfaces=(),
    platform={}, origin="registered", state="online", introduced_at=0.0, online_since=0.0,
    last_seen=0.0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("state", "failures", "ok", "before", "known", "after_state", "event", "restarted", "register"),
    [
        ("online", 0, True, True, True, "online", None, False, False),
        ("online", 0, False, True, None, "online", None, False, False),
        ("online", 2, False, True, None, "offline", "offline", False, False),
        ("offline", 7, False, True, None, "offline", None, False, False),
        ("offline", 7, True, True, True, "online", "online", False, False),
        ("online", 0, True, True, False, "online", "restart", True, True),
        ("online", 0, True, None, False, "online", None, False, True),
        ("online", 0, True, False, False, "online", None, False, True),
    ],
    ids=[
        "healthy", "first-failure", "third-failure-offline", "still-offline", "back-online",
        "header-true-to-false-restart", "header-false-first-time", "header-stays-false",
    ],
)  # fmt: skip
def test_judge(
    state: str,
    failures: int,
    ok: bool,
    before: bool | None,
    known: bool | None,
    after_state: str,
    event: str | None,
    restarted: bool,
    register: bool,
) -> None:
    record = RECORD.__class__(**{**RECORD.__dict__, "state": state, "failures": failures,
                                 "orchestrator_set": before})  # fmt: skip
    result = judge(
        record, ok=ok, report={"cpuUsage": 1} if ok else None, known=known,
        error=None if ok else "refused", now=50.0, failures_to_offline=3,
    )  # fmt: skip
    assert result.record.state == after_state
    assert (result.event.kind if result.event else None) == event
    assert result.restarted is restarted
    assert result.register is register
    assert result.record.failures == (0 if ok else failures + 1)
    if ok and state != "online":
        assert result.record.online_since == 50.0


def test_sweeps_follow_a_device_down_back_and_restarted(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store.open(None)
        async with httpx.AsyncClient() as client, Fleet(data_dir=tmp_path) as fleet:
            # Started without an orchestrator URL: it answers Custom-Orchestrator-Set: false
            # until we POST /register to it.
            [device] = await fleet.add(names=["sup1"])
            supervisor = SupervisorClient(client)
            woken: list[float] = []
            introducer = Introducer(store, supervisor, "http://127.0.0.1:9")
            await introducer.introduce(
                "sup1", addresses=["127.0.0.1"], port=device.port, tls=False, origin="mdns"
            )
            assert device.orchestrator_url == "http://127.0.0.1:9"  # introduced: registered
            store.record_pass(PassRecord(now=1.0, commit_sha=None, applied=(("sup1", "d", "x"),)))
            checker = HealthChecker(
                store, supervisor, "http://127.0.0.1:9",
                settings=DeviceSettings(health_failures=2, health_timeout=1.0),
                wake=lambda: woken.append(time.time()),
            )  # fmt: skip
            await checker.sweep()
            assert store.device("sup1").orchestrator_set is True  # type: ignore[union-attr]

            device.fault = Fault.ERROR
            await checker.sweep()
            assert store.device("sup1").state == "online"  # type: ignore[union-attr]
            await checker.sweep()
            assert store.device("sup1").state == "offline"  # type: ignore[union-attr]
            assert woken
            device.fault = None
            await checker.sweep()
            record = store.device("sup1")
            assert record is not None
            assert record.state == "online"
            assert record.failures == 0
            assert record.health is not None
            assert "cpuUsage" in record.health

            # A restart forgets the orchestrator: the header turns false, a restart sign.
            await device.restart()
            assert device.orchestrator_url is None
            await checker.sweep()
            assert store.applied() == {}
            assert device.orchestrator_url == "http://127.0.0.1:9"  # registered again
            kinds = [event[2] for event in store.events(device="sup1")]
            assert kinds[:4] == ["restart", "online", "offline", "introduced"][: len(kinds[:4])]
            checks = store.health_checks("sup1", limit=10)
            assert [c.ok for c in checks][:4] == [True, True, False, False]
        store.close()

    asyncio.run(scenario())


def test_health_history_is_a_ring_per_device(tmp_path: Path) -> None:
    store = Store.open(None)
    try:
        store.upsert_device(RECORD)
        for number in range(30):
            check = judge(RECORD, ok=True, report={"n": number}, known=True, error=None,
                          now=float(number), failures_to_offline=3)  # fmt: skip
            store.record_health([check.check], [check.record], keep=5)
        checks = store.health_checks("sup1", limit=100)
        assert [c.report for c in checks] == [{"n": n} for n in range(29, 24, -1)]
    finally:
        store.close()


class BrokenFor(SupervisorClient):
    """Real HTTP, except that checking `broken_url` raises what no device call should."""

    def __init__(self, client: httpx.AsyncClient, broken_url: str) -> None:
        super().__init__(client)
        self.broken_url = broken_url

    async def health(
        self, base_url: str, *, forwarded_for: str, timeout: float
    ) -> tuple[dict[str, object], bool | None]:
        if base_url == self.broken_url:
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        return await super().health(base_url, forwarded_for=forwarded_for, timeout=timeout)


def test_one_unexpected_exception_does_not_abort_the_sweep(tmp_path: Path) -> None:
    """Issue 11, seen case 8: one exception in the sweep's gather failed every sweep."""

    async def scenario() -> None:
        store = Store.open(None)
        async with httpx.AsyncClient() as client, Fleet(data_dir=tmp_path) as fleet:
            devices = await fleet.add(6)
            now = time.time()
            for device in devices:
                record = DeviceRecord(
                    device=device.name, url=device.url, addresses=(device.host,),
                    port=device.port, interfaces=(), platform={}, origin="registered",
                    state="online", introduced_at=now, online_since=now, last_seen=now,
                    orchestrator_set=True,
                )  # fmt: skip
                store.upsert_device(record)
            devices[1].fault = Fault.ERROR  # an honest failure, to go offline as it should
            settings = DeviceSettings(health_failures=2)
            checker = HealthChecker(
                store, BrokenFor(client, devices[0].url), "http://127.0.0.1:9", settings=settings
            )
            for _ in range(2):
                results = await checker.sweep()
                assert len(results) == len(devices)
            states = {r.device: (r.state, r.failures) for r in store.devices()}
            assert states[devices[0].name] == ("offline", 2)  # its check failed, twice
            assert states[devices[1].name] == ("offline", 2)
            assert all(states[d.name] == ("online", 0) for d in devices[2:])
            [last, *_] = store.health_checks(devices[0].name, limit=5)
            assert last.ok is False
            assert last.error is not None
            assert "RecursionError" in last.error
        store.close()

    asyncio.run(scenario())
