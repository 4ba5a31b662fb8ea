"""Registration trust (issue 12, item 1), end to end: a real `serve` and simulated devices.

Anyone on the LAN can post a registration; the tests post forged ones as a stranger would
(httpx from this process) and check, through the API and what the devices received, that a
device which still answers never moves, that a pinned address never moves, that a device whose
old address went silent does move, and that a flood of registrations is one redeploy.
"""

from __future__ import annotations

import time
from typing import Any

from conftest import eventually
from test_convergence_e2e import FEW_SECONDS, Rig, listed, make_rig

from gitops_orchestrator.simulator.device import Fault

__all__ = ["make_rig"]  # the fixture, imported for the tests below


def register(rig: Rig, name: str, port: int) -> None:
    registration = {
        "name": name, "port": port, "type": "_webthing._tcp.local.",
        "properties": {"path": "/", "tls": "0", "address": "127.0.0.1"},
        "addresses": ["127.0.0.1"],
    }  # fmt: skip
    answer = rig.client.post("/file/device/discovery/register", json=registration)
    assert answer.status_code == 204, answer.text


def events(rig: Rig, device: str, kind: str) -> list[dict[str, Any]]:
    items = rig.client.get("/api/v1/events", params={"device": device, "limit": 500}).json()
    return [item for item in items["items"] if item["kind"] == kind]


def test_a_stranger_cannot_move_a_device_that_still_answers(make_rig: Any) -> None:
    rig: Rig = make_rig()
    rig.write_repo(["sup1"], listed("sup1"), 1)
    rig.start()
    [sup1] = rig.fleet.add(names=["sup1"], orchestrator_url=rig.url)
    eventually(lambda: rig.answer("on-sup1") == 1, "the rollout")
    [evil] = rig.fleet.add(names=["evil"])  # a real server that would accept the bodies
    for _ in range(30):
        register(rig, "sup1", evil.port)
    conflicts = eventually(lambda: events(rig, "sup1", "conflict"), "the conflict", FEW_SECONDS)
    assert str(evil.port) in conflicts[0]["message"]
    assert str(sup1.port) in conflicts[0]["message"]
    time.sleep(1)  # let the rest of the flood be handled
    assert len(events(rig, "sup1", "conflict")) == 1  # a flood is one event
    assert rig.view("sup1")["url"] == sup1.url
    rig.commit(2)
    eventually(lambda: rig.answer("on-sup1") == 2, "the next commit on the real sup1")
    assert rig.deploys("evil") == 0
    assert "conflict" in rig.client.get("/devices/sup1").text  # shown on the device page


def test_a_device_whose_old_address_went_silent_moves(make_rig: Any) -> None:
    """DHCP gave the device a new address: the old one stopped answering, the new one answers
    with a description of a device with the same interfaces."""
    rig: Rig = make_rig()
    rig.write_repo(["sup1"], listed("sup1"), 1)
    rig.start()
    [sup1] = rig.fleet.add(names=["sup1"], orchestrator_url=rig.url)
    eventually(lambda: rig.answer("on-sup1") == 1, "the rollout")
    rig.fleet.call(lambda: setattr(sup1, "fault", Fault.HANG))  # the old address is silent
    [moved] = rig.fleet.add(names=["moved"])
    register(rig, "sup1", moved.port)
    eventually(lambda: rig.view("sup1")["url"] == moved.url, "the move", 3 * FEW_SECONDS)
    eventually(lambda: "on-sup1" in rig.runs("moved"), "the deployment at the new address")
    assert events(rig, "sup1", "moved")
    rig.fleet.call(lambda: setattr(sup1, "fault", None))


def test_a_pinned_address_never_moves(make_rig: Any) -> None:
    rig: Rig = make_rig()
    [fixed] = rig.fleet.add(names=["fixed"])  # static: no registration, no mDNS
    rig.write_repo(["fixed"], listed("fixed", static={"fixed": fixed.url}), 1)
    rig.start()
    eventually(lambda: rig.answer("on-fixed") == 1, "the rollout to the static device")
    rig.fleet.call(lambda: setattr(fixed, "fault", Fault.HANG))  # silent, and still pinned
    [other] = rig.fleet.add(names=["other"])
    register(rig, "fixed", other.port)
    conflicts = eventually(lambda: events(rig, "fixed", "conflict"), "the conflict", FEW_SECONDS)
    assert "pinned" in conflicts[0]["message"]
    assert rig.view("fixed")["url"] == fixed.url
    assert rig.deploys("other") == 0
    rig.fleet.call(lambda: setattr(fixed, "fault", None))


def test_a_registration_storm_at_the_own_address_is_one_redeploy(make_rig: Any) -> None:
    rig: Rig = make_rig()
    rig.write_repo(["sup1"], listed("sup1"), 1)
    rig.start()
    [sup1] = rig.fleet.add(names=["sup1"], orchestrator_url=rig.url)
    eventually(lambda: rig.answer("on-sup1") == 1, "the rollout")
    eventually(lambda: rig.status("sup1", "on-sup1") == "synced", "synced")
    time.sleep(1)
    deploys, restarts = rig.deploys("sup1"), len(events(rig, "sup1", "restart"))
    reintroduced = len(events(rig, "sup1", "reintroduced"))
    for _ in range(200):
        register(rig, "sup1", sup1.port)
    time.sleep(3)
    assert len(events(rig, "sup1", "restart")) - restarts == 1
    assert len(events(rig, "sup1", "reintroduced")) - reintroduced <= 2
    assert rig.deploys("sup1") - deploys <= 1
    assert rig.answer("on-sup1") == 1
