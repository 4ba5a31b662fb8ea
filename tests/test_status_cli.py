"""`status` and `call` against a real `serve` process with simulated devices on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, copy_sample, eventually, git_init_commit, wat, write_files

from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import FleetThread

CHAIN = (
    "name: fibo-chain\nsequence:\n  - {module: fibo, function: fibo, device: sup1}\n"
    "  - {module: double, function: double, device: sup2}\n"
)
DEVICES = "admission: listed\ndevices:\n  sup1: {labels: {room: kitchen}}\n  sup2: {}\n  sup3: {}\n"
TOKEN = "st4tus-t0ken"


class Site:
    def __init__(self, repo: Path, orchestrator: Any, fleet: FleetThread, sha: str) -> None:
        self.repo, self.orchestrator, self.fleet, self.sha = repo, orchestrator, fleet, sha

    def cli(self, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_")}
        env["GITOPS_ORCHESTRATOR_URL"] = self.orchestrator.url
        if token:
            env["GITOPS_API_TOKEN"] = token
        return subprocess.run(
            [str(CLI), *args], capture_output=True, text=True, timeout=60, check=False, env=env
        )

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "--format", "json")
        assert done.returncode in (0, 1), done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    def synced(self) -> bool:
        page = self.orchestrator.client.get("/api/v1/deployments").json()
        return {d["status"] for d in page["items"]} == {"synced"}


@pytest.fixture
def site(serve: Any, tmp_path: Path) -> Iterator[Site]:
    repo = copy_sample(tmp_path / "repo")
    write_files(repo, {"deployments/fibo-chain.yaml": CHAIN, "devices.yaml": DEVICES})
    sha = git_init_commit(repo, "the fleet")
    orchestrator = serve(str(repo), "--reconcile-interval", "0.3", env={"GITOPS_API_TOKEN": TOKEN})
    orchestrator.client.headers["Authorization"] = f"Bearer {TOKEN}"
    with FleetThread(orchestrator_url=orchestrator.url) as fleet:
        fleet.add(names=["sup1", "sup2", "sup3"])
        found = Site(repo, orchestrator, fleet, sha)
        eventually(found.synced, "every deployment synced", bound=60)
        yield found


def test_status_shows_the_desired_commit_and_every_step(site: Site) -> None:
    text = site.cli("status")
    assert text.returncode == 0, text.stderr
    assert site.sha[:12] in text.stdout
    assert "'the fleet'" in text.stdout
    assert "fibo-chain  synced" in text.stdout
    assert "0. fibo.fibo on sup1: synced (on sup1 as named)" in text.stdout, text.stdout
    assert "last rejected none" in text.stdout
    document = site.status()
    assert document["ok"] is True
    assert document["desired"]["sha"] == site.sha
    assert document["last_rejected"] is None
    chain = next(d for d in document["deployments"] if d["name"] == "fibo-chain")
    assert [(s["device"], s["device_status"]) for s in chain["steps"]] == [
        ("sup1", "synced"),
        ("sup2", "synced"),
    ]
    assert {d["name"] for d in document["deployments"]} == {"banner", "double", "fibo-chain"}


def test_status_exits_1_on_a_failed_deploy_and_shows_the_rejected_commit(site: Site) -> None:
    sup2 = site.fleet.fleet["sup2"]
    site.fleet.call(lambda: setattr(sup2, "fault", Fault.FAIL_DOWNLOADS))
    write_files(site.repo, {"modules/double/double.wasm": wat(
        '(module (func (export "double") (param i32) (result i32)'
        " (i32.mul (local.get 0) (i32.const 3))))"
    )})  # fmt: skip
    git_init_commit(site.repo, "double triples")
    eventually(lambda: site.status()["ok"] is False, "a failed deploy", bound=60)
    write_files(site.repo, {"modules/fibo/module.yaml": "name: fibo\nwasm: fibo.wasm\n"})
    bad = git_init_commit(site.repo, "forget the functions")
    eventually(
        lambda: (site.status()["last_rejected"] or {}).get("sha") == bad, "rejected", bound=60
    )

    text = site.cli("status")
    assert text.returncode == 1
    assert f"last rejected {bad[:12]} 'forget the functions'" in text.stdout
    assert "modules/fibo/module.yaml:1: functions: is required" in text.stdout
    assert "1. double.double on sup2: failed (deploy refused: 500" in text.stdout, text.stdout
    document = site.status()
    assert any(
        line.startswith("fibo-chain: step 1 on sup2: failed") for line in document["problems"]
    )


def test_status_exits_1_on_an_unplaceable_step(site: Site) -> None:
    write_files(site.repo, {"deployments/nowhere.yaml": (
        "name: nowhere\nsequence:\n  - {module: fibo, function: fibo, device: sup9}\n"
    )})  # fmt: skip
    git_init_commit(site.repo, "a step no device can take")
    eventually(lambda: site.status()["ok"] is False, "the unplaceable step", bound=60)
    text = site.cli("status")
    assert text.returncode == 1
    assert "nowhere     unplaceable" in text.stdout
    assert "0. fibo.fibo on -: unplaceable (sup9 is unknown" in text.stdout, text.stdout


def test_status_needs_the_token_and_says_so(site: Site) -> None:
    done = site.cli("status", token=None)
    assert done.returncode == 1
    assert "GITOPS_API_TOKEN" in done.stderr
    nobody = site.cli("status", "--orchestrator", "http://127.0.0.1:9")
    assert nobody.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in nobody.stderr


def test_call_formats_output_files_and_arguments_after_dashes(site: Site, tmp_path: Path) -> None:
    plain = site.cli("call", "fibo-chain", "13")
    assert (plain.returncode, plain.stdout.strip()) == (0, "466"), plain.stderr
    document = json.loads(site.cli("call", "fibo-chain", "13", "--format", "json").stdout)
    assert document["result"] == 466
    assert document["resultUrl"].startswith("http://127.0.0.1:")
    negative = site.cli("call", "fibo-chain", "--", "-1")
    assert negative.returncode == 0, negative.stderr
    int(negative.stdout.strip())
    assert "after '--'" in site.cli("call", "--help").stdout

    target = tmp_path / "banner.txt"
    saved = site.cli("call", "banner", "2", "--output", str(target))
    assert saved.returncode == 0, saved.stderr
    assert target.read_bytes() == b"Hello from the Wasm-IoT fleet!\n" * 2
    number = site.cli("call", "fibo-chain", "3", "--output", str(tmp_path / "x"))
    assert number.returncode == 1
    assert "not a file" in number.stderr
