"""The simulator against the conformance corpus recorded from the real Python supervisor.

Every case of tests/data/deploy-cases.json is posted to a fresh simulated device, with a real
file server standing in for http://ORCHESTRATOR: same verdict, status, answer and downloads
during the call; for accepted cases, the same execution outcome (history status and result,
output file, chain's next hop).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from simulator_support import CASES, Orchestrator, corpus_files, substitute

from gitops_orchestrator.simulator import FleetThread, SimulatedDevice


@pytest.fixture(scope="module")
def orchestrator() -> Iterator[Orchestrator]:
    with Orchestrator(corpus_files()) as server:
        yield server


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetThread]:
    with FleetThread() as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=15) as opened:
        yield opened


def _post_body(client: httpx.Client, device: SimulatedDevice, case: dict[str, Any], body: Any):
    # body-not-json holds the raw text that was sent; every other body is sent as JSON.
    content = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": case.get("content_type", "application/json")}
    return client.post(f"{device.url}/deploy", content=content.encode(), headers=headers)


def _history(client: httpx.Client, url: str) -> httpx.Response:
    """The history entry at `url`, polled while it is 404 (a queued POST has not run yet)."""
    deadline = time.monotonic() + 10
    while True:
        response = client.get(url)
        if response.status_code != 404 or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_same_outcome_as_the_python_supervisor(
    case: dict[str, Any], orchestrator: Orchestrator, fleet: FleetThread, client: httpx.Client
) -> None:
    [device] = fleet.add(names=[f"case{CASES.index(case) + 1:02d}"])
    real = {"http://ORCHESTRATOR": orchestrator.url, "http://SUPERVISOR": device.url}
    body = substitute(case["body"], real)
    orchestrator.clear()

    answer = _post_body(client, device, case, body)
    downloads = orchestrator.downloads()

    assert answer.status_code == case["status"]
    if case["answer_type"] == "application/json":
        assert answer.json() == json.loads(case["answer"])
    assert downloads == case["fetched_during_deploy"]
    assert bool(device.deployments) == case["accepted"]
    deployment_id = body.get("deploymentId") if isinstance(body, dict) else None
    if not case["accepted"] and deployment_id is not None:
        rejected = client.get(f"{device.url}/{deployment_id}/modules/inc/inc?x=1")
        assert rejected.status_code == 404
        assert rejected.json() == {"result": "deployment does not exist", "status": "error"}
    if "executed" in case:
        _check_execution(client, device, substitute(case["executed"], real))
    assert orchestrator.downloads() == downloads  # nothing fetched after the deploy answered


def _check_execution(client: httpx.Client, device: SimulatedDevice, executed: dict[str, Any]):
    method, target = executed["call"].split(" ", 1)
    # "POST /c06/... (multipart field(s): in.bin)": the recording uploaded 0123456789 as in.bin.
    files = {"in.bin": ("in.bin", b"0123456789")} if "multipart" in target else None
    call = client.request(method, device.url + target.split(" ")[0], files=files)
    assert call.status_code == executed["call_status"]
    assert call.json() == {"resultUrl": executed["resultUrl"]}

    entry = _history(client, executed["resultUrl"])
    assert entry.status_code == executed["status"]
    assert entry.json()["result"] == executed["result"]
    assert entry.json()["success"] is (executed["status"] == 200)
    if "next_hop" in executed:
        hop = _history(client, executed["result"])
        assert hop.status_code == executed["next_hop"]["status"]
        assert hop.json()["result"] == executed["next_hop"]["result"]
    if "output_file" in executed:
        output = client.get(device.url + executed["output_file"]["GET"])
        assert output.status_code == executed["output_file"]["status"]
        assert output.text == executed["output_file"]["content"]
