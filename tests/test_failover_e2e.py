"""Failover end to end: a device goes offline, its step moves, and comes back after a while.

A real `serve` process with fast health checks, simulated devices in this process.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI, copy_sample, eventually, free_port, git_init_commit, write_files
from test_deploy_e2e import Setup, _answers

from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import FleetThread

DEVICES = "admission: listed\ndevices:\n  sup1: {}\n  sup2: {}\n"
CHAIN = """name: fibo-chain
sequence:
  - module: fibo
    function: fibo
    device: sup1
    failovers: [sup2]
  - module: double
    function: double
    device: sup2
"""


def placement(setup: Setup, deployment: str, step: int) -> tuple[str | None, str, str]:
    with sqlite3.connect(f"file:{setup.data}/orchestrator.sqlite3?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT device, status, reason FROM step_placements WHERE deployment = ? AND step = ?",
            (deployment, step),
        ).fetchone()
    db.close()
    return tuple(row) if row else (None, "", "")  # type: ignore[return-value]


def state(setup: Setup, device: str) -> str | None:
    with sqlite3.connect(f"file:{setup.data}/orchestrator.sqlite3?mode=ro", uri=True) as db:
        row = db.execute("SELECT state FROM devices WHERE device = ?", (device,)).fetchone()
    db.close()
    return row[0] if row else None


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    repo = copy_sample(tmp_path / "repo")
    write_files(repo, {"deployments/fibo-chain.yaml": CHAIN, "devices.yaml": DEVICES})
    for name in ("banner", "double"):
        (repo / f"deployments/{name}.yaml").unlink()
    git_init_commit(repo, "a chain with a failover")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    log = (tmp_path / "serve.log").open("w")  # a pipe nobody reads would fill up
    process = subprocess.Popen(
        [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data), "--public-url", url, "--reconcile-interval", "0.3",
         "--health-interval", "0.2", "--health-failures", "2", "--return-after", "1.5"],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: _answers(url), "the orchestrator to listen")
        with FleetThread(orchestrator_url=url) as fleet:
            fleet.add(names=["sup1", "sup2"])
            yield Setup(repo, data, url, fleet)
    finally:
        process.terminate()
        process.communicate(timeout=20)
        log.close()
        stderr = (tmp_path / "serve.log").read_text()
        assert process.returncode == 0, stderr


def test_a_step_fails_over_and_returns_after_return_after(setup: Setup) -> None:
    eventually(lambda: setup.call("fibo-chain", "13").stdout.strip() == "466", "first run")
    assert placement(setup, "fibo-chain", 0)[0] == "sup1"

    setup.fleet.call(lambda: setattr(setup.device("sup1"), "fault", Fault.ERROR))
    eventually(lambda: state(setup, "sup1") == "offline", "sup1 offline")
    _, status, reason = eventually(
        lambda: (
            placement(setup, "fibo-chain", 0)[0] == "sup2" and placement(setup, "fibo-chain", 0)
        ),
        "the failover",
    )
    assert status == "placed"
    assert "sup1" in reason
    eventually(lambda: setup.call("fibo-chain", "13").stdout.strip() == "466", "run on sup2")
    assert "fibo-chain" in setup.deployments_on("sup2")

    setup.fleet.call(lambda: setattr(setup.device("sup1"), "fault", None))
    eventually(lambda: state(setup, "sup1") == "online", "sup1 back")
    # Not at once: only after sup1 has been back for return_after.
    assert placement(setup, "fibo-chain", 0)[0] == "sup2"
    eventually(lambda: placement(setup, "fibo-chain", 0)[0] == "sup1", "the return")
    eventually(lambda: setup.call("fibo-chain", "13").stdout.strip() == "466", "run on sup1")
    requests = setup.fleet.call(lambda: list(setup.device("sup1").deploy_requests))
    assert requests[-1].body["deploymentId"] == "fibo-chain"
