"""Seen case 9 of the convergence issue, end to end: a fleet that comes up over time is spread.

Before, placement was sticky and nothing else: the first devices introduced took every step
(599 bodies on 64 of 1,000 devices). Here a real `serve` process places 60 one-step
deployments while 5 devices are known, then 35 more devices register a few at a time; the
steps must end up spread over the whole fleet (read through the API), each move with its
reason and since when the step has been on its device. Same shape as 1,000 devices, smaller.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from conftest import CLI, copy_sample, eventually, free_port, git_init_commit, write_files
from test_deploy_e2e import _answers

from gitops_orchestrator.simulator.fleet import FleetThread

DEPLOYMENTS = 60
FIRST, LATER, BATCH = 5, 35, 5
STEP = "  - {module: fibo, function: fibo}\n"


def deployments(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = httpx.get(
        url + "/api/v1/deployments?limit=500", timeout=10
    ).json()["items"]
    return items


def loads(items: list[dict[str, Any]]) -> Counter[str]:
    return Counter(step["device"] for item in items for step in item["steps"] if step["device"])


def test_a_fleet_that_comes_up_over_time_gets_the_steps_spread(tmp_path: Path) -> None:
    repo = copy_sample(tmp_path / "repo")
    for old in (repo / "deployments").glob("*.yaml"):
        old.unlink()
    files = {
        f"deployments/d{n:02}.yaml": f"name: d{n:02}\nsequence:\n{STEP}" for n in range(DEPLOYMENTS)
    }
    write_files(repo, {**files, "devices.yaml": "admission: open\n"})
    git_init_commit(repo, "sixty free steps")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")  # a pipe nobody reads would fill up
    process = subprocess.Popen(
        [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--public-url", url, "--mdns-interfaces", "none",
         "--reconcile-interval", "0.3", "--settle-window", "1"],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: _answers(url), "the orchestrator to listen")
        with FleetThread(orchestrator_url=url) as fleet:
            first = [f"sup{n:02}" for n in range(FIRST)]
            fleet.add(names=first)
            eventually(
                lambda: all(i["status"] == "synced" for i in deployments(url)),
                "every deployment synced on the first devices",
                bound=60,
            )
            assert set(loads(deployments(url))) == set(first)
            later = [f"sup{n:02}" for n in range(FIRST, FIRST + LATER)]
            for start in range(0, LATER, BATCH):
                fleet.add(names=later[start : start + BATCH])
                time.sleep(0.3)

            def spread() -> list[dict[str, Any]] | None:
                items = deployments(url)
                counted = loads(items)
                synced = all(i["status"] == "synced" for i in items)
                # 60 steps on 40 devices: 1 or 2 each once the threshold (2) is kept.
                even = len(counted) == FIRST + LATER and max(counted.values()) <= 2
                return items if synced and even else None

            items = eventually(spread, "the steps to spread over the whole fleet", bound=90)
            counted = loads(items)
            assert min(counted.values()) >= 1
            assert statistics.median(counted.values()) <= 2
            steps = [step for item in items for step in item["steps"]]
            moved = [s for s in steps if (s["placed_reason"] or "").startswith("moved from ")]
            assert moved, "no step records why it moved"
            for step in moved:
                assert step["placed_reason"].endswith(" to balance")
                assert f"to {step['device']} (" in step["placed_reason"]
            assert all(step["placed_at"] for step in steps)
            # What the devices run agrees: each holds the deployments placed on it.
            for name, count in counted.items():
                held = fleet.call(lambda name=name: len(fleet.fleet[name].deployments))
                assert held == count, name
    finally:
        process.terminate()
        process.communicate(timeout=30)
        log.close()
        stderr = (tmp_path / "serve.log").read_text()
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
