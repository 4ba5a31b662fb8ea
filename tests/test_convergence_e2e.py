"""Convergence you can trust (issue 11, seen cases 1-3 and 5-7), end to end on loopback.

A real `serve` process and simulated supervisors (real HTTP servers, real wasm) in this process,
so a test can hang, restart and break them. Everything is asserted through the HTTP API and
`/execute`, as an operator sees it: `synced` must only ever be said of a body the device runs.

Each deployment `on-<device>` runs `fibo` pinned to that device; a commit sets what `fibo`
answers, so `/execute/on-<device>` tells which commit the device runs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CLI, copy_sample, eventually, free_port, git, git_init_commit, wat, write_files

from gitops_orchestrator.simulator.device import Fault, SimulatedDevice
from gitops_orchestrator.simulator.fleet import FleetThread

# The deploy timeout of a real `serve` (orchestrator.DEVICE_TIMEOUT): a hanging device costs
# 30 s per attempt, so anything that waits for it shows as tens of seconds.
FEW_SECONDS = 10.0


def fibo_answering(value: int) -> bytes:
    return wat(f'(module (func (export "fibo") (param i32) (result i32) (i32.const {value})))')


def pinned(device: str) -> str:
    return f"name: on-{device}\nsequence:\n  - {{module: fibo, function: fibo, device: {device}}}\n"


class Rig:
    """A fleet repository, a `serve` process over it and the simulated devices."""

    def __init__(self, tmp_path: Path, fleet: FleetThread) -> None:
        self.tmp_path, self.fleet = tmp_path, fleet
        self.repo = tmp_path / "repo"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10.0)
        self.logs: list[Path] = []

    def write_repo(self, devices: list[str], devices_yaml: str, value: int) -> None:
        copy_sample(self.repo)
        for name in ("banner", "double", "fibo-chain"):
            (self.repo / f"deployments/{name}.yaml").unlink()
        files: dict[str, str | bytes] = {f"deployments/on-{d}.yaml": pinned(d) for d in devices}
        files["devices.yaml"] = devices_yaml
        files["modules/fibo/fibo.wasm"] = fibo_answering(value)
        write_files(self.repo, files)
        git_init_commit(self.repo, "the fleet")

    def commit(self, value: int, *, remove: tuple[str, ...] = ()) -> None:
        write_files(self.repo, {"modules/fibo/fibo.wasm": fibo_answering(value)})
        for name in remove:
            git(self.repo, "rm", "--quiet", f"deployments/{name}.yaml")
        git_init_commit(self.repo, f"fibo answers {value}")

    def start(self, *extra: str) -> None:
        log = self.tmp_path / f"serve{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [str(CLI), "serve", "--repo", str(self.repo), "--host", "127.0.0.1",
                 "--port", str(self.port), "--data-dir", str(self.tmp_path / "data"),
                 "--public-url", self.url, "--reconcile-interval", "0.5", *extra],
                stdout=subprocess.DEVNULL, stderr=output, text=True,
            )  # fmt: skip
        eventually(self._answers, "the orchestrator to listen")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        self.process.communicate(timeout=30)
        stderr = self.logs[-1].read_text()
        assert self.process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
        self.process = None

    def _answers(self) -> bool:
        try:
            return self.client.get("/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def device(self, name: str) -> SimulatedDevice:
        return self.fleet.fleet[name]

    def view(self, name: str) -> dict[str, Any]:
        answer = self.client.get(f"/api/v1/devices/{name}")
        if answer.status_code == 404:  # not introduced yet
            return {"runs": [], "ledger": []}
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view

    def status(self, device: str, deployment: str) -> str | None:
        runs = {r["deployment"]: r["status"] for r in self.view(device)["runs"]}
        return runs.get(deployment)

    def answer(self, deployment: str) -> int | None:
        """What `/execute/<deployment>` answers for 13, None when it does not run."""
        try:
            done = self.client.post(f"/execute/{deployment}?wait=5", json=[13], timeout=10)
        except httpx.TimeoutException:
            return None
        if done.status_code != 200:
            return None
        result: int = done.json()["result"]
        return result

    def runs(self, device: str) -> set[str]:
        return set(self.fleet.call(lambda: [str(k) for k in self.device(device).deployments]))

    def deploys(self, device: str) -> int:
        return self.fleet.call(lambda: sum(r.accepted for r in self.device(device).deploy_requests))

    def incarnation(self, device: str) -> int:
        value: int = self.view(device).get("incarnation", 0)
        return value

    def restart_seen(self, device: str, before: int) -> None:
        """Until the orchestrator saw the restart sign (it cannot know before)."""
        eventually(lambda: self.incarnation(device) > before, "the restart seen", FEW_SECONDS)

    def converge_truthfully(self, device: str, deployment: str, value: int) -> None:
        """Until `/execute` gets `value`; meanwhile, what the API says `synced`, the device runs."""
        started = time.monotonic()
        while self.answer(deployment) != value:
            view = self.view(device)
            runs = self.runs(device)
            for run in view["runs"]:
                if run["status"] == "synced":
                    assert run["deployment"] in runs, (
                        f"{device}: {run['deployment']} is shown synced, the device runs {runs}"
                    )
            assert time.monotonic() - started < FEW_SECONDS, f"{device} never got {deployment}"
            time.sleep(0.1)
        eventually(lambda: self.status(device, deployment) == "synced", "synced", FEW_SECONDS)


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []
    with FleetThread() as fleet:

        def make() -> Rig:
            rigs.append(Rig(tmp_path, fleet))
            return rigs[-1]

        try:
            yield make
        finally:
            for device in fleet.fleet:  # release hanging requests before the orchestrator stops
                fleet.call(lambda d=device: setattr(d, "fault", None))
            for rig in rigs:
                rig.stop()
                rig.client.close()


def listed(*names: str, static: dict[str, str] | None = None) -> str:
    lines = ["admission: listed", "devices:"]
    for name in names:
        address = (static or {}).get(name)
        lines.append(f"  {name}:" + (f"\n    address: {address}" if address else " {}"))
    return "\n".join(lines) + "\n"


def test_a_restart_while_another_device_hangs_is_redeployed(make_rig: Any) -> None:
    """Case 1: outcomes of a pass in flight never overwrite a restart seen meanwhile."""
    rig: Rig = make_rig()
    rig.write_repo(["sup1", "stuck"], listed("sup1", "stuck"), 1)
    rig.start()
    rig.fleet.add(names=["sup1", "stuck"], orchestrator_url=rig.url)
    eventually(lambda: rig.answer("on-sup1") == 1 and rig.answer("on-stuck") == 1, "the rollout")
    rig.fleet.call(lambda: setattr(rig.device("stuck"), "fault", Fault.HANG))
    rig.commit(2)
    eventually(lambda: rig.answer("on-sup1") == 2, "the new body on sup1", FEW_SECONDS)
    before = rig.incarnation("sup1")
    rig.fleet.run(rig.device("sup1").restart())  # registers again: a restart sign
    rig.restart_seen("sup1", before)
    rig.converge_truthfully("sup1", "on-sup1", 2)
    ledger = {e["deployment"]: e for e in rig.view("sup1")["ledger"]}
    assert ledger["on-sup1"]["applied_digest"] == ledger["on-sup1"]["desired_digest"]
    assert rig.status("stuck", "on-stuck") != "synced"


def test_a_restart_before_any_health_check_saw_true_is_redeployed(make_rig: Any) -> None:
    """Case 2: our successful `/register` is the moment the header turned `true`."""
    rig: Rig = make_rig()
    [quiet] = rig.fleet.add(names=["quiet"])  # started without an orchestrator URL
    rig.write_repo(["quiet"], listed("quiet", static={"quiet": quiet.url}), 1)
    rig.start("--health-interval", "2")
    eventually(lambda: "on-quiet" in rig.runs("quiet"), "the first deploy")
    before = rig.incarnation("quiet")
    rig.fleet.run(quiet.restart())  # header `false` again, before a check saw `true`
    rig.restart_seen("quiet", before)
    rig.converge_truthfully("quiet", "on-quiet", 1)
    kinds = [e["kind"] for e in rig.client.get("/api/v1/events?device=quiet").json()["items"]]
    assert "restart" in kinds


def test_a_restart_while_the_orchestrator_is_down_is_redeployed(make_rig: Any) -> None:
    """Case 3: first contact after our own start is an unknown incarnation: re-posted once."""
    rig: Rig = make_rig()
    rig.write_repo(["sup1", "sup2"], listed("sup1", "sup2"), 1)
    rig.start()
    rig.fleet.add(names=["sup1", "sup2"], orchestrator_url=rig.url)
    eventually(lambda: rig.status("sup1", "on-sup1") == "synced", "the rollout")
    eventually(lambda: rig.status("sup2", "on-sup2") == "synced", "the rollout")
    rig.stop()
    rig.fleet.run(rig.device("sup1").restart())  # its one registration POST fails
    assert rig.runs("sup1") == set()
    before = rig.deploys("sup2")
    rig.start()
    rig.converge_truthfully("sup1", "on-sup1", 1)
    eventually(lambda: rig.status("sup2", "on-sup2") == "synced", "synced", FEW_SECONDS)
    time.sleep(1.5)  # a few passes: the unknown incarnation is re-posted once, not every pass
    assert rig.deploys("sup2") == before + 1


def test_a_restart_during_a_prune_hold_gets_back_what_it_ran(make_rig: Any) -> None:
    """Case 5: the hold stops undeploys, never the redeploy of a restarted device."""
    rig: Rig = make_rig()
    names = ["sup1", "sup2", "sup3"]
    rig.write_repo(names, listed(*names), 1)
    rig.start()
    rig.fleet.add(names=names, orchestrator_url=rig.url)
    for name in names:
        eventually(lambda n=name: rig.status(n, f"on-{n}") == "synced", f"on-{name}")
    rig.commit(1, remove=("on-sup2", "on-sup3"))  # 2 of 3 undeployed: held
    eventually(
        lambda: any(e["kind"] == "held" for e in rig.client.get("/api/v1/events").json()["items"]),
        "the hold",
    )
    before = rig.incarnation("sup1")
    rig.fleet.run(rig.device("sup1").restart())
    rig.restart_seen("sup1", before)
    rig.converge_truthfully("sup1", "on-sup1", 1)
    assert "on-sup2" in rig.runs("sup2")  # still held: nothing undeployed


def test_a_hanging_device_does_not_delay_commits_for_the_others(make_rig: Any) -> None:
    """Case 6: each device has its own worker; the pass never waits for one."""
    rig: Rig = make_rig()
    healthy = [f"sup{n}" for n in range(1, 7)]
    rig.write_repo([*healthy, "stuck"], listed(*healthy, "stuck"), 1)
    rig.start()
    rig.fleet.add(names=[*healthy, "stuck"], orchestrator_url=rig.url)
    for name in [*healthy, "stuck"]:
        eventually(lambda n=name: rig.status(n, f"on-{n}") == "synced", f"on-{name}")
    rig.fleet.call(lambda: setattr(rig.device("stuck"), "fault", Fault.HANG))
    for value in (2, 3):  # the second commit comes while the first still hangs on `stuck`
        committed = time.monotonic()
        rig.commit(value)
        for name in healthy:
            eventually(lambda n=name, v=value: rig.answer(f"on-{n}") == v, f"{value} on {name}", 30)
        took = time.monotonic() - committed
        print(f"\ncommit {value} reached {len(healthy)} healthy devices in {took:.2f} s")
        assert took < FEW_SECONDS
        assert all(rig.status(n, f"on-{n}") == "synced" for n in healthy)
        assert rig.status("stuck", "on-stuck") == "progressing"


def test_a_static_device_that_never_answers_delays_nobody(make_rig: Any) -> None:
    """Case 7: static devices are introduced outside the pass, in the background."""
    rig: Rig = make_rig()
    [mute] = rig.fleet.add(names=["mute"])
    rig.fleet.call(lambda: setattr(mute, "fault", Fault.HANG))  # accepts, never answers
    rig.write_repo(["sup1", "mute"], listed("sup1", "mute", static={"mute": mute.url}), 1)
    rig.start()
    started = time.monotonic()
    rig.fleet.add(names=["sup1"], orchestrator_url=rig.url)
    eventually(lambda: rig.answer("on-sup1") == 1, "the first deploy", 30)
    first = time.monotonic() - started
    committed = time.monotonic()
    rig.commit(2)
    eventually(lambda: rig.answer("on-sup1") == 2, "the second commit", 30)
    second = time.monotonic() - committed
    print(f"\nfirst deploy after {first:.2f} s, next commit after {second:.2f} s")
    assert first < FEW_SECONDS
    assert second < FEW_SECONDS
    rig.fleet.call(lambda: setattr(mute, "fault", None))
    eventually(lambda: rig.answer("on-mute") == 2, "the static device, once it answers", 40)
