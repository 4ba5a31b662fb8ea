"""A hostile device among good ones, end to end (issue 11, seen case 8).

A real `serve` process with fast health checks and 20 simulated devices that register
themselves. One of them, once introduced, answers every request with JSON nested 60,000
levels deep (`"["*60000`). That used to raise `RecursionError` out of the supervisor client:
every health sweep and every reconcile pass failed, so a device answering 500 stayed online and
the good devices got the same body again on every pass. Here everything goes through the HTTP
API, as a user sees it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CLI, copy_sample, eventually, free_port, git, git_init_commit, write_files
from test_deploy_e2e import _answers

from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import FleetThread

GOOD = [f"good{number:02}" for number in range(1, 20)]
HOSTILE = "hostile"
LISTED = "admission: listed\ndevices:\n" + "".join(f"  {n}: {{}}\n" for n in [*GOOD, HOSTILE])


def one_step(device: str, module: str) -> str:
    step = f"{{module: {module}, function: {module}, device: {device}}}"
    return f"name: on-{device}\nsequence:\n  - {step}\n"


def deployments(module: str) -> dict[str, str]:
    return {f"deployments/on-{d}.yaml": one_step(d, module) for d in [*GOOD, HOSTILE]}


@dataclass
class Site:
    repo: Path
    url: str
    fleet: FleetThread
    log: Path

    def api(self, path: str) -> Any:
        return httpx.get(self.url + "/api/v1" + path, timeout=5).json()

    def state(self, device: str) -> str:
        return str(self.api(f"/devices/{device}")["state"])

    def synced(self, device: str) -> bool:
        return bool(self.api(f"/deployments/on-{device}")["status"] == "synced")

    def bodies(self, device: str) -> list[str]:
        """The module of each accepted deploy `device` received, in order."""
        requests = self.fleet.call(lambda: list(self.fleet.fleet[device].deploy_requests))
        return [r.body["modules"][0]["name"] for r in requests if r.accepted]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    repo = copy_sample(tmp_path / "repo")
    for name in ("banner", "double", "fibo-chain"):
        (repo / f"deployments/{name}.yaml").unlink()
    write_files(repo, {"devices.yaml": LISTED, **deployments("double")})
    git_init_commit(repo, "one step on each device")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(tmp_path / "data"), "--public-url", url,
             "--mdns-interfaces", "none", "--reconcile-interval", "0.5",
             "--health-interval", "0.3", "--health-failures", "2"],
            stdout=subprocess.DEVNULL, stderr=output, text=True,
        )  # fmt: skip
    try:
        eventually(lambda: _answers(url), "the orchestrator to listen")
        with FleetThread(orchestrator_url=url) as fleet:
            fleet.add(names=[*GOOD, HOSTILE])
            yield Site(repo, url, fleet, log)
    finally:
        process.terminate()
        process.communicate(timeout=20)
        assert process.returncode == 0, log.read_text()


def test_a_device_answering_deep_json_breaks_neither_sweeps_nor_passes(site: Site) -> None:
    eventually(lambda: all(site.synced(d) for d in GOOD), "every good device synced", 40)
    eventually(lambda: site.state(HOSTILE) == "online", "the hostile device introduced")
    site.fleet.call(lambda: setattr(site.fleet.fleet[HOSTILE], "fault", Fault.NESTED))

    # A new commit changes the body of every device, the hostile one's too.
    write_files(site.repo, deployments("fibo"))
    git(site.repo, "commit", "-qam", "fibo everywhere")
    committed = time.monotonic()
    eventually(lambda: all(site.bodies(d)[-1:] == ["fibo"] for d in GOOD), "the new bodies", 30)
    reached = time.monotonic() - committed
    assert reached < 15  # an order of magnitude: it took no pass failing and retried

    # Health sweeps still work: a device answering 500 goes offline, and so does the hostile one.
    site.fleet.call(lambda: setattr(site.fleet.fleet[GOOD[-1]], "fault", Fault.ERROR))
    eventually(lambda: site.state(GOOD[-1]) == "offline", "the failing device offline")
    eventually(lambda: site.state(HOSTILE) == "offline", "the hostile device offline")
    assert site.state(GOOD[0]) == "online"

    # Each good device got each body once, however many passes ran meanwhile.
    time.sleep(2.0)  # a few passes and sweeps more
    for device in GOOD:
        assert site.bodies(device) == ["double", "fibo"], device
    assert site.api(f"/deployments/on-{HOSTILE}")["status"] != "synced"
    [last_check, *_] = site.api(f"/devices/{HOSTILE}")["health_history"]
    assert last_check["ok"] is False
    assert "nested deeper than" in last_check["error"]
    # Nothing raised out of a loop.
    log = site.log.read_text()
    assert "RecursionError" not in log
    assert "Traceback" not in log
