"""Which introductions and registrations are one start of a device (protocol §2).

A real simulated device on loopback answers the description and `/register`; the clock is
injected, so the registration window is tested without waiting for it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gitops_orchestrator.devices import Introducer
from gitops_orchestrator.health import HealthChecker
from gitops_orchestrator.settings import DeviceSettings
from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import Fleet
from gitops_orchestrator.store import Store
from gitops_orchestrator.supervisor import SupervisorClient

ORCHESTRATOR = "http://127.0.0.1:9"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_registration_soon_after_an_introduction_is_the_same_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, clock = Store.open(None), Clock()
        async with httpx.AsyncClient() as client, Fleet(data_dir=tmp_path) as fleet:
            [device] = await fleet.add(names=["sup1"])
            introducer = Introducer(
                store, SupervisorClient(client), ORCHESTRATOR, clock=clock,
                registration_window=5.0,
            )  # fmt: skip

            async def introduce(origin: str, at: float) -> int:
                clock.now = at
                registered = at if origin == "registered" else None
                await introducer.introduce(
                    "sup1", addresses=["127.0.0.1"], port=device.port, tls=False,
                    origin=origin, registered_at=registered,
                )  # fmt: skip
                record = store.device("sup1")
                assert record is not None
                return record.incarnation

            assert await introduce("mdns", 100.0) == 1  # announced
            assert store.device("sup1").orchestrator_set is True  # type: ignore[union-attr]
            assert await introduce("registered", 100.4) == 1  # its registration, 0.4 s later
            assert await introduce("registered", 200.0) == 2  # registering again: a restart
            assert await introduce("mdns", 300.0) == 2
            assert await introduce("registered", 306.0) == 3  # outside the window
            kinds = [event[2] for event in store.events(device="sup1")]
            assert kinds.count("restart") == 2
        store.close()

    asyncio.run(scenario())


def test_back_from_offline_is_an_unknown_incarnation(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store.open(None)
        async with httpx.AsyncClient() as client, Fleet(data_dir=tmp_path) as fleet:
            [device] = await fleet.add(names=["sup1"])
            supervisor = SupervisorClient(client)
            await Introducer(store, supervisor, ORCHESTRATOR).introduce(
                "sup1", addresses=["127.0.0.1"], port=device.port, tls=False, origin="mdns"
            )
            checker = HealthChecker(
                store, supervisor, ORCHESTRATOR,
                settings=DeviceSettings(health_failures=1, health_timeout=1.0),
            )  # fmt: skip
            await checker.sweep()
            assert store.device("sup1").incarnation == 1  # type: ignore[union-attr]
            device.fault = Fault.ERROR
            await checker.sweep()
            assert store.device("sup1").state == "offline"  # type: ignore[union-attr]
            device.fault = None
            await checker.sweep()
            record = store.device("sup1")
            assert record is not None
            assert record.state == "online"
            assert record.incarnation == 2
            assert record.started_at is None  # when it started is unknown
        store.close()

    asyncio.run(scenario())
