"""The original orchestrator's read routes (`/file/...`) on a real `serve` process.

Simulated devices (real HTTP servers, real wasm) run in this process; the orchestrator is its
own process, as in `test_deploy_e2e`. The answers are checked for the original's field names
and shapes, against the bodies the devices really received, and against the OpenAPI document.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from conftest import CLI, copy_sample, eventually, free_port, git_init_commit, write_files
from test_deploy_e2e import CHAIN, DEVICES

from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import FleetThread

BOUND = 20.0
ROOT = Path(__file__).resolve().parent.parent


class Setup:
    def __init__(self, url: str, client: httpx.Client, fleet: FleetThread) -> None:
        self.url, self.client, self.fleet = url, client, fleet

    def get(self, path: str, schema: str | None = None) -> Any:
        answer = self.client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        document = answer.json()
        if schema is not None:
            errors = list(validator(schema).iter_errors(document))
            assert errors == [], f"{path}: {errors[0].message if errors else ''}"
        return document

    def accepted_bodies(self, device: str) -> list[Any]:
        requests = self.fleet.call(lambda: list(self.fleet.fleet[device].deploy_requests))
        return [r.body for r in requests if r.accepted]


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one schema of the checked-in OpenAPI document."""
    document = json.loads((ROOT / "schema" / "openapi.json").read_text(encoding="utf-8"))
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    repo = copy_sample(tmp_path / "repo")
    write_files(repo, {"deployments/fibo-chain.yaml": CHAIN, "devices.yaml": DEVICES})
    git_init_commit(repo, "the fleet")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--public-url", url, "--reconcile-interval", "0.3",
         "--health-interval", "0.2", "--health-failures", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            eventually(lambda: _answers(client), "the orchestrator to listen")
            with FleetThread(orchestrator_url=url) as fleet:
                fleet.add(names=["sup1", "sup2", "sup3"])
                yield Setup(url, client, fleet)
    finally:
        process.terminate()
        process.wait(BOUND)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _active(setup: Setup, name: str) -> bool:
    answer = setup.client.get(f"/file/manifest/{name}")
    return answer.status_code == 200 and answer.json()["active"]


def test_devices_modules_and_manifests_in_the_originals_shape(setup: Setup) -> None:
    eventually(lambda: _active(setup, "fibo-chain"), "fibo-chain active")

    assert setup.client.get("/file/device").headers["etag"]  # cached by store version
    devices = setup.get("/file/device", "CompatDevices")
    assert [d["_id"] for d in devices] == ["sup1", "sup2", "sup3"]
    for found in devices:
        device = setup.fleet.fleet[found["_id"]]
        assert found["name"] == found["_id"]
        assert found["communication"] == {"addresses": ["127.0.0.1"], "port": device.port}
        assert set(found["description"]) == {"platform", "supervisorInterfaces"}
        assert "fd_write" in found["description"]["supervisorInterfaces"]
        assert found["status"] == "active"
        assert set(found["health"]) == {"report", "timeOfQuery"}

    modules = setup.get("/file/module", "CompatModules")
    assert [m["_id"] for m in modules] == ["banner", "double", "fibo"]
    (fibo,) = setup.get("/file/module/fibo", "CompatModules")  # an array of one
    assert fibo == next(m for m in modules if m["_id"] == "fibo")
    assert fibo["name"] == "fibo"
    assert {"name": "fibo", "parameterCount": 1} in fibo["exports"]
    assert fibo["wasm"]["url"] == f"{setup.url}/file/module/fibo/wasm"
    assert fibo["description"]["openapi"] == "3.0.3"
    binary = setup.client.get(fibo["wasm"]["url"])
    assert binary.headers["content-type"] == "application/wasm"
    assert binary.content.startswith(b"\0asm")
    (banner,) = setup.get("/file/module/banner")
    assert set(banner["dataFiles"]) == {"greeting.txt"}
    assert setup.client.get(banner["dataFiles"]["greeting.txt"]["url"]).status_code == 200
    assert {"fd_write"} <= {r["name"] for r in banner["requirements"]}
    assert {r["kind"] for r in banner["requirements"]} == {"function"}

    manifests = setup.get("/file/manifest", "CompatDeployments")
    assert [m["_id"] for m in manifests] == ["banner", "double", "fibo-chain"]
    chain = setup.get("/file/manifest/fibo-chain", "CompatDeployment")
    assert chain == next(m for m in manifests if m["_id"] == "fibo-chain")
    assert chain["name"] == "fibo-chain"
    assert chain["sequence"] == [
        {"device": "sup1", "module": "fibo", "func": "fibo"},
        {"device": "sup2", "module": "double", "func": "double"},
    ]
    assert chain["active"] is True
    assert set(chain["fullManifest"]) == {"sup1", "sup2"}
    for device, body in chain["fullManifest"].items():
        assert body["deploymentId"] == "fibo-chain"
        # Exactly the body the device accepted (the same public URL built both).
        assert body == setup.accepted_bodies(device)[-1]

    for path in ["/file/module/nothing", "/file/manifest/nothing"]:
        missing = setup.client.get(path)
        assert missing.status_code == 404
        assert missing.json()["error"]["status"] == 404


def test_a_device_that_stops_answering_turns_inactive(setup: Setup) -> None:
    eventually(lambda: _active(setup, "fibo-chain"), "fibo-chain active")

    def sup1() -> dict[str, Any]:
        return next(d for d in setup.get("/file/device") if d["_id"] == "sup1")

    eventually(lambda: sup1()["health"]["report"], "a health report of sup1")
    assert sup1()["health"]["timeOfQuery"].endswith("Z")

    setup.fleet.call(lambda: setattr(setup.fleet.fleet["sup3"], "fault", Fault.ERROR))

    def status() -> dict[str, str]:
        return {d["_id"]: d["status"] for d in setup.get("/file/device")}

    eventually(lambda: status()["sup3"] == "inactive", "sup3 inactive")
    assert status() == {"sup1": "active", "sup2": "active", "sup3": "inactive"}
