"""`POST /execute/<deployment>` against a real `serve` process and simulated supervisors.

The orchestrator deploys the sample modules to three simulated devices (which register
themselves), then runs deployments as the original's `/execute` did: arguments as a JSON list or
object, form fields or the query string, input files as multipart parts; it follows the chain of
`resultUrl`s and answers the last step's result. One orchestrator and one fleet serve the whole
module; a test that breaks a device mends it before it ends.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest
from conftest import copy_sample, git_init_commit, wat, write_files
from test_device_routes import Served, eventually, serving

from gitops_orchestrator.simulator.device import Fault
from gitops_orchestrator.simulator.fleet import FleetThread

INC = """name: inc
wasm: inc.wasm
functions:
  inc:
    method: post
    params: [integer]
    output: integer
"""
FILES: dict[str, str | bytes] = {
    "devices.yaml": "admission: listed\ndevices:\n  sup1: {}\n  sup2: {}\n  sup3: {}\n",
    # fibo on sup1, then double on sup2: fibo-chain(13) = double(fibo(13)) = 466.
    "deployments/fibo-chain.yaml": """name: fibo-chain
sequence:
  - {module: fibo, function: fibo, device: sup1}
  - {module: double, function: double, device: sup2}
""",
    # POST functions are queued by the device, which answers the call at once.
    "modules/inc/module.yaml": INC,
    "modules/inc/inc.wasm": wat(
        '(module (func (export "inc") (param i32) (result i32)'
        " (i32.add (local.get 0) (i32.const 1))))"
    ),
    "deployments/inc-chain.yaml": """name: inc-chain
sequence:
  - {module: inc, function: inc, device: sup3}
  - {module: double, function: double, device: sup2}
""",
    # banner.count returns the size of its input file, a multipart part named in.bin.
    "deployments/count.yaml": """name: count
sequence:
  - {module: banner, function: count, device: sup3}
""",
}
DEPLOYED = {
    ("sup1", "fibo-chain"),
    ("sup2", "fibo-chain"),
    ("sup3", "inc-chain"),
    ("sup2", "inc-chain"),
    ("sup3", "count"),
}


class Setup:
    def __init__(self, served: Served, fleet: FleetThread) -> None:
        self.served, self.fleet = served, fleet

    def execute(self, deployment: str, *, timeout: float = 15.0, **options: Any) -> httpx.Response:
        return self.served.client.post(f"/execute/{deployment}", timeout=timeout, **options)

    def statuses(self) -> dict[tuple[str, str], str]:
        uri = f"file:{self.served.data}/orchestrator.sqlite3?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            rows = db.execute("SELECT device, deployment, status FROM deploy_statuses")
            return {(device, deployment): status for device, deployment, status in rows}

    def set_fault(self, name: str, fault: Fault | None) -> None:
        self.fleet.call(setattr, self.fleet.fleet[name], "fault", fault)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("execute")
    repo = copy_sample(root / "repo")
    write_files(repo, FILES)
    git_init_commit(repo, "the fleet")
    with (
        serving(repo, root / "data") as served,
        FleetThread(orchestrator_url=served.url) as fleet,
    ):
        fleet.add(names=["sup1", "sup2", "sup3"])
        ready = Setup(served, fleet)

        def synced() -> bool:
            statuses = ready.statuses()
            return all(statuses.get(key) == "synced" for key in DEPLOYED)

        eventually(synced, "the deployments to be synced", bound=20)
        yield ready


def test_an_unknown_deployment_is_a_404(setup: Setup) -> None:
    answer = setup.execute("nope", json=[1])
    assert answer.status_code == 404
    assert answer.json() == {
        "error": {"status": 404, "message": "no deployment 'nope' in the desired commit"}
    }


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"json": {"param1": 1}}, id="param1-without-param0"),
        pytest.param({"json": {"param0": 1, "param2": 2}}, id="gap"),
        pytest.param({"json": {"param0": {"a": 1}}}, id="nested-object"),
        pytest.param({"json": [[13]]}, id="nested-list"),
        pytest.param({"json": [True]}, id="boolean"),
        pytest.param({"json": [None]}, id="null"),
        pytest.param({"json": [1.5]}, id="fraction"),
        pytest.param({"json": {"param0": 13, "extra": 1}}, id="unknown-key"),
        pytest.param({"json": "13"}, id="json-string"),
        pytest.param({"json": 13}, id="json-number"),
        pytest.param(
            {"content": b"[13", "headers": {"Content-Type": "application/json"}}, id="bad"
        ),
        pytest.param({"content": b"\xff\xfe"}, id="not-utf8"),
        pytest.param({"params": {"param1": "13"}}, id="query-param1"),
        pytest.param({"params": {"wait": "soon"}, "json": [13]}, id="wait-not-a-number"),
    ],
)
def test_bad_arguments_are_a_400(setup: Setup, options: dict[str, Any]) -> None:
    answer = setup.execute("fibo-chain", **options)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["status"] == 400
    assert error["message"].startswith("invalid arguments: ")


@pytest.mark.parametrize(
    "options",
    [{"json": ["x"]}, {"json": {"param0": "13x"}}, {"params": {"param0": ""}}],
    ids=["list", "object", "query-empty"],
)
def test_an_argument_that_is_not_an_integer_is_a_400(setup: Setup, options: dict[str, Any]) -> None:
    answer = setup.execute("fibo-chain", **options)
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"json": [13]}, id="json-list"),
        pytest.param({"json": ["13"]}, id="json-list-of-string"),
        pytest.param({"json": {"param0": 13}}, id="json-object"),
        pytest.param({"data": {"param0": "13"}}, id="form-fields"),
        pytest.param({"params": {"param0": "13"}}, id="query-string"),
        pytest.param({"params": {"param0": "13", "wait": "20"}}, id="query-with-wait"),
        # A part without a file name is a field.
        pytest.param({"files": {"param0": (None, b"13")}}, id="multipart-field"),
    ],
)
def test_arguments_in_every_form_run_the_chain(setup: Setup, options: dict[str, Any]) -> None:
    answer = setup.execute("fibo-chain", **options)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["result"] == 466
    sup2 = setup.fleet.fleet["sup2"].url
    assert document["resultUrl"].startswith(f"{sup2}/request-history/fibo-chain:double:double:")


def test_a_queued_post_function_runs(setup: Setup) -> None:
    answer = setup.execute("inc-chain", json=[20])
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == 42
    assert answer.json()["resultUrl"].startswith(setup.fleet.fleet["sup2"].url)
    # The first step ran from the device's queue, as POST functions do.
    sup3 = setup.fleet.fleet["sup3"].url
    history = httpx.get(f"{sup3}/request-history", trust_env=False).json()
    entry = [e for e in history if e["deployment_id"] == "inc-chain"][-1]
    assert (entry["method"], entry["request_args"]) == ("POST", {"param0": "20"})


@pytest.mark.parametrize("size", [0, 4097, 100_000])
def test_a_queued_post_function_gets_its_input_file(setup: Setup, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    answer = setup.execute("count", files={"in.bin": ("in.bin", data, "application/octet-stream")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == size
    entry = httpx.get(answer.json()["resultUrl"], trust_env=False).json()
    assert entry["method"] == "POST"
    assert entry["request_files"].keys() == {"in.bin"}


def test_a_result_not_ready_within_the_wait_is_a_504_with_its_url(setup: Setup) -> None:
    answer = setup.execute("fibo-chain", json=[13], params={"wait": "0"})
    assert answer.status_code == 504
    document = answer.json()
    assert document["error"]["status"] == 504
    # The result is there later, at the URL given.
    entry = httpx.get(document["resultUrl"], trust_env=False)
    assert entry.status_code == 200
    assert entry.json()["result"].startswith(setup.fleet.fleet["sup2"].url)


def test_a_hanging_second_step_is_a_504_after_the_wait(setup: Setup) -> None:
    # inc is queued on sup3, which then calls double on sup2: the first call answers at
    # once, the result stays pending while sup2 hangs.
    setup.set_fault("sup2", Fault.HANG)
    try:
        started = time.monotonic()
        answer = setup.execute("inc-chain", json=[4], params={"wait": "1"})
        elapsed = time.monotonic() - started
        assert answer.status_code == 504, answer.text
        assert 1.0 <= elapsed < 4.0
        document = answer.json()
        assert document["error"] == {"status": 504, "message": "the result is not ready yet"}
        result_url = document["resultUrl"]
        assert result_url.startswith(setup.fleet.fleet["sup3"].url + "/request-history/")
        assert httpx.get(result_url, trust_env=False).status_code == 404  # still pending
    finally:
        setup.set_fault("sup2", None)

    def finished() -> Any:
        entry = httpx.get(result_url, trust_env=False)
        return entry.status_code == 200 and entry.json()["result"]

    next_hop = eventually(finished, "the chain to go on once sup2 answers")
    assert httpx.get(next_hop, trust_env=False).json()["result"] == ["10", None]


def test_a_hanging_first_device_is_a_504_after_the_wait(setup: Setup) -> None:
    # With sup1 hanging, the very first call gets no answer, so there is no resultUrl to give:
    # the gateway timed out, which is a 504 within about the wait.
    setup.set_fault("sup1", Fault.HANG)
    try:
        started = time.monotonic()
        answer = setup.execute("fibo-chain", json=[13], params={"wait": "1"}, timeout=3.0)
        assert time.monotonic() - started < 3.0
        assert answer.status_code == 504, answer.text
        assert answer.json()["error"]["status"] == 504
    finally:
        setup.set_fault("sup1", None)


def test_a_wait_that_is_not_a_number_of_seconds_is_a_400(setup: Setup) -> None:
    answer = setup.execute("fibo-chain", json=[13], params={"wait": "nan"})
    assert answer.status_code == 400, answer.text


def test_the_orchestrator_survives_it_all(setup: Setup) -> None:
    assert setup.served.is_healthy()
    assert setup.execute("fibo-chain", json=[10]).json()["result"] == 110
