"""End to end on loopback: a real `serve` process, simulated devices, commits, `call`.

The orchestrator runs as its own process; the devices are simulated supervisors (real HTTP
servers, real wasm) in this process, so the test can stop, break and restart them. The
orchestrator's state is read from its SQLite file, as an operator could.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import copy_sample, eventually, git, git_init_commit, wat, write_files
from test_serve import CLI, free_port

from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import FleetThread

BOUND = 20.0

# fibo on sup1, double on sup2: a chain across two devices.
CHAIN = """name: fibo-chain
sequence:
  - module: fibo
    function: fibo
    device: sup1
  - module: double
    function: double
    device: sup2
"""
DEVICES = "admission: listed\ndevices:\n  sup1: {}\n  sup2: {}\n  sup3: {}\n"


class Setup:
    def __init__(self, repo: Path, data: Path, url: str, fleet: FleetThread) -> None:
        self.repo, self.data, self.url, self.fleet = repo, data, url, fleet

    def device(self, name: str) -> Any:
        return self.fleet.fleet[name]

    def deployments_on(self, name: str) -> set[str]:
        return {str(key) for key in self.fleet.call(lambda: list(self.device(name).deployments))}

    def deploys_received(self, name: str) -> list[str]:
        requests = self.fleet.call(lambda: list(self.device(name).deploy_requests))
        return [r.body["deploymentId"] for r in requests if r.accepted]

    def statuses(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        with sqlite3.connect(f"file:{self.data}/orchestrator.sqlite3?mode=ro", uri=True) as db:
            rows = db.execute("SELECT device, deployment, status, error FROM deploy_statuses")
            result = {(d, n): (s, e) for d, n, s, e in rows}
        db.close()
        return result

    def call(self, deployment: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "call", deployment, *args, "--orchestrator", self.url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    repo = copy_sample(tmp_path / "repo")
    write_files(repo, {"deployments/fibo-chain.yaml": CHAIN, "devices.yaml": DEVICES})
    git_init_commit(repo, "the fleet")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    log = (tmp_path / "serve.log").open("w")  # a pipe nobody reads would fill up
    process = subprocess.Popen(
        [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data), "--public-url", url, "--reconcile-interval", "0.5"],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: _answers(url), "the orchestrator to listen")
        with FleetThread(orchestrator_url=url) as fleet:
            fleet.add(names=["sup1", "sup2", "sup3"])
            yield Setup(repo, data, url, fleet)
    finally:
        process.terminate()
        process.communicate(timeout=BOUND)
        log.close()
        stderr = (tmp_path / "serve.log").read_text()
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_commit_reaches_the_devices_and_a_chain_runs(setup: Setup) -> None:
    eventually(lambda: "fibo-chain" in setup.deployments_on("sup1"), "fibo-chain on sup1")
    eventually(lambda: "fibo-chain" in setup.deployments_on("sup2"), "fibo-chain on sup2")
    eventually(lambda: setup.statuses().get(("sup2", "fibo-chain"), ("",))[0] == "synced", "synced")
    done = setup.call("fibo-chain", "13")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "466"  # double(fibo(13)) = 2 * 233

    # banner writes a file: the result is its URL on the device that ran it.
    eventually(lambda: setup.statuses().get(("sup3", "banner"), ("",))[0] == "synced", "banner")
    banner = setup.call("banner", "2")
    assert banner.returncode == 0, banner.stderr
    assert banner.stdout.strip().endswith("/module_results/banner/out.bin")
    content = httpx.get(banner.stdout.strip()).content
    assert content == b"Hello from the Wasm-IoT fleet!\n" * 2


def test_changes_redeploy_only_what_changed_and_prune(setup: Setup) -> None:
    eventually(
        lambda: all(s == "synced" for s, _ in setup.statuses().values()) and setup.statuses(),
        "the first rollout",
    )
    before = {name: len(setup.deploys_received(name)) for name in ("sup1", "sup2", "sup3")}
    # A new binary for fibo: only the device running fibo is redeployed.
    write_files(
        setup.repo,
        {"modules/fibo/fibo.wasm": wat(
            '(module (func (export "fibo") (param i32) (result i32) (i32.const 7)))'
        )},
    )  # fmt: skip
    git_init_commit(setup.repo, "fibo is a constant now")
    eventually(lambda: setup.call("fibo-chain", "13").stdout.strip() == "14", "the new fibo")
    after = {name: len(setup.deploys_received(name)) for name in ("sup1", "sup2", "sup3")}
    assert after["sup1"] == before["sup1"] + 1
    assert after["sup3"] == before["sup3"]

    # Removing a deployment undeploys it.
    git(setup.repo, "rm", "--quiet", "deployments/banner.yaml")
    git_init_commit(setup.repo, "no banner")
    eventually(lambda: "banner" not in setup.deployments_on("sup3"), "banner undeployed")
    assert "fibo-chain" in setup.deployments_on("sup1")


def test_a_broken_device_fails_then_converges_and_a_restart_is_redeployed(
    setup: Setup,
) -> None:
    eventually(lambda: "fibo-chain" in setup.deployments_on("sup2"), "the first rollout")
    setup.fleet.call(lambda: setattr(setup.device("sup2"), "fault", Fault.ERROR))
    write_files(setup.repo, {"modules/double/double.wasm": wat(
        '(module (func (export "double") (param i32) (result i32)'
        " (i32.mul (local.get 0) (i32.const 3))))"
    )})  # fmt: skip
    git_init_commit(setup.repo, "double triples")
    failed = eventually(
        lambda: (
            setup.statuses().get(("sup2", "fibo-chain"), ("", None))[0] == "failed"
            and setup.statuses()[("sup2", "fibo-chain")]
        ),
        "a failed status",
    )
    assert "deploy refused: 500" in (failed[1] or "")
    setup.fleet.call(lambda: setattr(setup.device("sup2"), "fault", None))
    eventually(lambda: setup.call("fibo-chain", "13").stdout.strip() == "699", "convergence")

    # A restart loses the deployments; the re-registration brings them back.
    setup.fleet.run(setup.device("sup1").restart())
    assert "fibo-chain" not in setup.deployments_on("sup1")
    eventually(lambda: "fibo-chain" in setup.deployments_on("sup1"), "the redeploy")
    eventually(lambda: setup.call("fibo-chain", "13").stdout.strip() == "699", "runs again")


def test_static_devices_need_no_registration_and_admission_is_shown(tmp_path: Path) -> None:
    """A device listed with an address in devices.yaml is introduced by the orchestrator."""
    with FleetThread() as fleet:  # no orchestrator URL: these devices never register
        quiet, stranger = fleet.add(names=["quiet", "stranger"])
        repo = copy_sample(tmp_path / "repo")
        write_files(repo, {
            "devices.yaml": f"admission: listed\ndevices:\n  quiet:\n    address: {quiet.url}\n",
            "deployments/fibo-chain.yaml": "name: fibo-chain\nsequence:\n"
            "  - {module: fibo, function: fibo}\n  - {module: double, function: double}\n",
        })  # fmt: skip
        for name in ("banner", "double"):
            (repo / f"deployments/{name}.yaml").unlink()
        git_init_commit(repo, "a static device")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with (tmp_path / "serve.log").open("w") as log:
            process = subprocess.Popen(
                [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port",
                 str(port), "--data-dir", str(tmp_path / "data"), "--public-url", url,
                 "--reconcile-interval", "0.5"],
                stdout=subprocess.DEVNULL, stderr=log, text=True,
            )  # fmt: skip
        try:
            eventually(lambda: _answers(url), "the orchestrator to listen")
            eventually(
                lambda: "fibo-chain" in fleet.call(lambda: list(quiet.deployments)),
                "fibo-chain on the static device",
            )
            assert fleet.call(lambda: quiet.orchestrator_url) == url  # told where we are
            # A device that registers but is not listed is known, not admitted, and told why.
            httpx.post(url + "/file/device/discovery/register", json={
                "name": "stranger", "port": stranger.port, "addresses": ["127.0.0.1"],
            })  # fmt: skip
            view = eventually(
                lambda: (
                    (answer := httpx.get(url + "/api/v1/devices/stranger")).status_code == 200
                    and answer.json()
                ),
                "the stranger to be known",
            )
            assert view["admitted"] is False
            assert "not listed" in view["admission"]
            assert fleet.call(lambda: list(stranger.deployments)) == []
        finally:
            process.terminate()
            process.communicate(timeout=BOUND)
        assert process.returncode == 0, (tmp_path / "serve.log").read_text()
