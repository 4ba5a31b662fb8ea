"""The log of a real `serve` process: time and level on every line, state changes once each.

The orchestrator runs as its own process with simulated devices in this one; the test reads
what an operator would read, its stderr.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SERVE_BOUND, copy_sample, eventually, git_init_commit, wat, write_files

from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import FleetThread

# fibo on sup1, double on sup2: the chain of the end-to-end tests.
CHAIN = (
    "name: fibo-chain\nsequence:\n  - {module: fibo, function: fibo, device: sup1}\n"
    "  - {module: double, function: double, device: sup2}\n"
)
DEVICES = "admission: listed\ndevices:\n  sup1: {}\n  sup2: {}\n"
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+: "
)
FAST = ["--health-interval", "0.2", "--health-failures", "1", "--reconcile-interval", "0.3"]


@pytest.fixture
def fleet_repo(tmp_path: Path) -> Path:
    repo = copy_sample(tmp_path / "repo")
    for name in ("banner", "double"):
        (repo / f"deployments/{name}.yaml").unlink()
    write_files(repo, {"deployments/fibo-chain.yaml": CHAIN, "devices.yaml": DEVICES})
    git_init_commit(repo, "the fleet")
    return repo


@pytest.fixture
def fleet() -> Iterator[FleetThread]:
    with FleetThread() as thread:
        yield thread


def stopped_log(orchestrator: Any) -> str:
    orchestrator.process.send_signal(signal.SIGTERM)
    orchestrator.process.communicate(timeout=SERVE_BOUND)
    assert orchestrator.process.returncode == 0, orchestrator.log_text()
    return str(orchestrator.log_text())


def test_text_log_has_time_and_level_and_each_state_change_once(
    serve: Any, fleet_repo: Path, fleet: FleetThread
) -> None:
    orchestrator = serve(str(fleet_repo), *FAST)
    sup1, sup2 = fleet.add(names=["sup1", "sup2"], orchestrator_url=orchestrator.url)
    eventually(lambda: "fibo-chain" in fleet.call(lambda: list(sup2.deployments)), "the rollout")

    # sup2 stops answering: offline once, however many checks fail; then online again.
    fleet.call(lambda: setattr(sup2, "fault", Fault.ERROR))
    eventually(lambda: _state(orchestrator, "sup2") == "offline", "sup2 offline")
    before = orchestrator.log_text().count("sup2")
    eventually(lambda: _checks_after(orchestrator, "sup2") >= 5, "more failed checks")
    fleet.call(lambda: setattr(sup2, "fault", None))
    eventually(lambda: _state(orchestrator, "sup2") == "online", "sup2 online")
    assert before >= 1

    # A deploy that keeps failing is logged once, not once per retry.
    fleet.call(lambda: setattr(sup1, "fault", Fault.FAIL_DOWNLOADS))
    write_files(
        fleet_repo,
        {"modules/fibo/fibo.wasm": wat(
            '(module (func (export "fibo") (param i32) (result i32) (i32.const 7)))'
        )},
    )  # fmt: skip
    git_init_commit(fleet_repo, "fibo is a constant")
    eventually(lambda: _refused_deploys(fleet, sup1) > 3, "deploys retried over passes")
    fleet.call(lambda: setattr(sup1, "fault", None))

    # A restart, and a rejected commit.
    fleet.run(sup1.restart())
    eventually(lambda: "fibo-chain" in fleet.call(lambda: list(sup1.deployments)), "redeploy")
    write_files(fleet_repo, {"modules/fibo/module.yaml": "name: fibo\nwasm: fibo.wasm\n"})
    bad = git_init_commit(fleet_repo, "forget the functions")
    orchestrator.until(lambda s: (s["last_rejected"] or {}).get("sha") == bad, "the rejection")

    log = stopped_log(orchestrator)
    lines = [line for line in log.splitlines() if line.strip()]
    for line in lines:
        assert TEXT_LINE.match(line), f"no time and level: {line!r}"
    # No line per request or per health check (the test polled the API hundreds of times).
    for noise in ("HTTP Request:", "GET /health", "/api/v1/", "HTTP/1.1"):
        assert not [line for line in lines if noise in line], noise

    def once(level: str, *words: str) -> None:
        found = [line for line in lines if all(word in line for word in words)]
        assert len(found) == 1, (words, found)
        assert f" {level} " in found[0], found[0]

    once("WARNING", "sup2", "offline")
    once("INFO", "sup2", "online")
    once("WARNING", "deploy", "fibo-chain", "sup1", "failed")
    once("INFO", "sup1", "restarted")
    once("WARNING", bad[:12], "rejected")
    assert len([line for line in lines if "accepted" in line and " INFO " in line]) == 2


def test_json_log_lines_are_objects_with_time_and_level(serve: Any, fleet_repo: Path) -> None:
    orchestrator = serve(str(fleet_repo), "--log-format", "json", *FAST)
    orchestrator.until(lambda s: s["desired"] is not None, "the first commit")
    lines = [line for line in stopped_log(orchestrator).splitlines() if line.strip()]
    assert len(lines) >= 3
    for line in lines:
        record = json.loads(line)
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", record["time"])
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}
        assert record["logger"]
        assert record["message"]
    assert any("accepted" in json.loads(line)["message"] for line in lines)


def test_debug_level_shows_requests_and_warning_hides_info(
    serve: Any, fleet_repo: Path, tmp_path: Path
) -> None:
    loud = serve(str(fleet_repo), "--log-level", "debug")
    loud.until(lambda s: s["desired"] is not None, "the first commit")
    assert "GET /api/v1/sync" in stopped_log(loud)
    quiet = serve(str(fleet_repo), env={"GITOPS_LOG_LEVEL": "warning"})
    quiet.until(lambda s: s["desired"] is not None, "the first commit")
    assert " INFO " not in stopped_log(quiet)


def _device(orchestrator: Any, name: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = orchestrator.client.get(f"/api/v1/devices/{name}").json()
    except httpx.HTTPError:
        return {}
    return answer


def _state(orchestrator: Any, name: str) -> str | None:
    state: str | None = _device(orchestrator, name).get("state")
    return state


def _checks_after(orchestrator: Any, name: str) -> int:
    history = _device(orchestrator, name).get("health_history", [])
    return sum(1 for check in history if not check["ok"])


def _refused_deploys(fleet: FleetThread, device: Any) -> int:
    return int(fleet.call(lambda: sum(1 for r in device.deploy_requests if not r.accepted)))
