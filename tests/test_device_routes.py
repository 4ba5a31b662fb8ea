"""Routes devices call, against a real `serve` process: self-registration and module files.

Registration is the one write route that needs no token, so it must stay fast and unbreakable
under hostile input: every malformed body gets a 400 with a reason, an oversized one 413, a
burst of thousands is answered while the server keeps serving. A valid registration makes the
orchestrator introduce the device (a simulated supervisor listening on loopback): it shows up
in the orchestrator's SQLite file, read here read-only as an operator could, and the device is
told where the orchestrator is (`POST /register`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLE_REPO, copy_sample, eventually, git_init_commit, write_files
from test_serve import CLI, free_port

from gitops_orchestrator.simulator.device import DEFAULT_INTERFACES
from gitops_orchestrator.simulator.fleet import FleetThread

BOUND = 15.0
REGISTER = "/file/device/discovery/register"
GREETING = b"Hello from the Wasm-IoT fleet!\n"


class Served:
    """A `serve` process: its URL, data folder and a client for it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, data: Path, log: Path) -> None:
        self.process, self.url, self.data, self.log = process, url, data, log
        self.client = httpx.Client(base_url=url, timeout=10.0, trust_env=False)

    def sync(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get("/api/v1/sync").json()
        return answer

    def is_healthy(self) -> bool:
        return self.client.get("/healthz").json() == {"status": "ok"}

    def devices(self) -> dict[str, dict[str, Any]]:
        """The `devices` table, read-only."""
        with contextlib.closing(
            sqlite3.connect(f"file:{self.data}/orchestrator.sqlite3?mode=ro", uri=True)
        ) as db:
            rows = db.execute("SELECT device, url, addresses, port, interfaces, state FROM devices")
            return {
                name: {
                    "url": url,
                    "addresses": json.loads(addresses),
                    "port": port,
                    "interfaces": json.loads(interfaces),
                    "state": state,
                }
                for name, url, addresses, port, interfaces, state in rows
            }


@contextlib.contextmanager
def serving(
    repo: Path, data: Path, *extra: str, known_crash: str | None = None
) -> Iterator[Served]:
    """`serve` on a free loopback port until the block ends; it must stop cleanly.

    Its log goes to a file, not a pipe: thousands of requests would fill a pipe nobody reads
    and block the server on its own access log. A traceback in it fails the test, except one
    that mentions `known_crash` (a known bug, tested with an xfail).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = data.with_name(data.name + ".log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_")}
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data), "--public-url", url, "--reconcile-interval", "0.5", *extra],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env,
        )  # fmt: skip
    served = Served(process, url, data, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return served.sync()["desired"] is not None
            except httpx.TransportError:
                return False

        eventually(ready, "serve to load the first commit")
        yield served
    finally:
        served.client.close()
        process.terminate()
        try:
            process.wait(timeout=BOUND)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        text = log.read_text()
        assert process.returncode == 0, text
        crashes = text.split("Traceback (most recent call last)")[1:]
        assert all(known_crash and known_crash in crash for crash in crashes), text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One orchestrator for the whole module: the sample repository, committed."""
    root = tmp_path_factory.mktemp("routes")
    repo = copy_sample(root / "repo")
    git_init_commit(repo, "the sample fleet")
    with serving(repo, root / "data") as orchestrator:
        yield orchestrator


@pytest.fixture
def fleet() -> Iterator[FleetThread]:
    """Simulated devices that know no orchestrator until they are told (`POST /register`)."""
    with FleetThread() as running:
        yield running


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so no one else takes it), not listening.

    Not merely a port found free: other test runs and benchmarks on this machine start
    simulated devices on loopback ports all the time.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def register(served: Served, body: Any = None, **options: Any) -> httpx.Response:
    if body is not None:
        options["json"] = body
    return served.client.post(REGISTER, **options)


# -- registration ------------------------------------------------------------------------------


def test_a_registration_is_answered_at_once_and_introduces_the_device(
    served: Served, fleet: FleetThread
) -> None:
    [device] = fleet.add(names=["kitchen-pi"])
    registration = device.registration()
    started = time.monotonic()
    answer = register(served, registration)
    assert time.monotonic() - started < 1.0
    assert answer.status_code == 204
    assert answer.content == b""
    known = eventually(lambda: served.devices().get("kitchen-pi"), "the introduction")
    assert known == {
        "url": device.url,
        "addresses": ["127.0.0.1"],
        "port": device.port,
        "interfaces": list(DEFAULT_INTERFACES),
        "state": "online",
    }
    # The device was told where we are (and where to ship its logs).
    eventually(lambda: fleet.call(lambda: device.orchestrator_url) == served.url, "POST /register")


def test_without_addresses_the_peer_address_is_used(served: Served, fleet: FleetThread) -> None:
    [device] = fleet.add(names=["no-addresses"])
    answer = register(served, {"name": "no-addresses", "port": device.port})
    assert answer.status_code == 204
    known = eventually(lambda: served.devices().get("no-addresses"), "the introduction")
    assert (known["url"], known["addresses"]) == (f"http://127.0.0.1:{device.port}", ["127.0.0.1"])
    eventually(lambda: fleet.call(lambda: device.orchestrator_url) == served.url, "POST /register")


def test_a_registration_for_a_silent_address_is_still_answered_at_once(
    served: Served, closed_port: int
) -> None:
    started = time.monotonic()
    answer = register(served, {"name": "ghost", "port": closed_port, "addresses": ["127.0.0.1"]})
    assert answer.status_code == 204
    assert time.monotonic() - started < 1.0
    time.sleep(0.2)  # the introduction fails: nothing answers there
    assert "ghost" not in served.devices()
    assert served.is_healthy()


VALID: dict[str, Any] = {"name": "sup9", "port": 5000, "addresses": ["127.0.0.1"]}
HOSTILE = [
    pytest.param({"content": b"this is not json"}, "JSON", id="not-json"),
    pytest.param({"content": b""}, "", id="empty-body"),
    pytest.param({"content": b"   "}, "", id="blank-body"),
    pytest.param({"json": [VALID]}, "", id="json-array"),
    pytest.param({"json": "sup9"}, "", id="json-string"),
    pytest.param({"json": None}, "", id="json-null"),
    pytest.param({"json": {"port": 5000}}, "name", id="name-missing"),
    pytest.param({"json": {"name": "sup9"}}, "port", id="port-missing"),
    pytest.param({"json": {**VALID, "port": "x"}}, "port", id="port-string"),
    pytest.param({"json": {**VALID, "port": 0}}, "port", id="port-zero"),
    pytest.param({"json": {**VALID, "port": 65536}}, "port", id="port-too-large"),
    pytest.param({"json": {**VALID, "port": 5000.5}}, "port", id="port-fraction"),
    pytest.param({"json": {**VALID, "name": 5}}, "name", id="name-number"),
    pytest.param({"json": {**VALID, "name": ""}}, "name", id="name-empty"),
    pytest.param({"json": {**VALID, "name": "sup9.local"}}, "name", id="name-with-dot"),
    pytest.param({"json": {**VALID, "name": "../sup9"}}, "name", id="name-path"),
    pytest.param({"json": {**VALID, "name": "x" * 1000}}, "name", id="name-1000-chars"),
    pytest.param(
        {"json": {**VALID, "addresses": ["127.0.0.1"] * 17}}, "addresses", id="17-addresses"
    ),
    pytest.param({"json": {**VALID, "addresses": "127.0.0.1"}}, "addresses", id="addresses-str"),
    pytest.param({"json": {**VALID, "addresses": [5]}}, "addresses", id="address-number"),
    pytest.param(
        {"json": {**VALID, "addresses": ["1" * 1000]}}, "addresses", id="address-1000-chars"
    ),
    pytest.param({"json": {**VALID, "properties": []}}, "properties", id="properties-list"),
    pytest.param(
        {"json": {**VALID, "properties": {"tls": 1}}}, "properties", id="properties-tls-int"
    ),
    pytest.param(
        {"content": b'{"name": "sup\xff\xfe", "port": 5000}'}, "", id="invalid-utf8-in-string"
    ),
    pytest.param({"content": b"\xff\xfe\x00{\x00}"}, "", id="invalid-utf8-body"),
    pytest.param({"content": b'{"name": "sup9", "port": 5000'}, "", id="truncated"),
    pytest.param({"content": b"[" * 10_000 + b"]" * 10_000}, "", id="deeply-nested"),
]


@pytest.mark.parametrize(("request_options", "where"), HOSTILE)
def test_a_malformed_registration_is_a_400_with_a_reason(
    served: Served, request_options: dict[str, Any], where: str
) -> None:
    answer = served.client.post(
        REGISTER, headers={"Content-Type": "application/json"}, **request_options
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["status"] == 400
    assert error["message"].startswith("invalid registration: ")
    assert where in error["message"]
    assert "\n" not in error["message"]
    assert served.is_healthy()


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1/steal?x=", "example.com/x#", "127.0.0.1:22/", "a b"],
    ids=["path", "fragment", "port", "space"],
)
def test_an_address_that_is_not_an_address_is_a_400(served: Served, address: str) -> None:
    # Protocol §1: addresses are the A records and the TXT `address` (IP addresses).
    listed = register(served, {**VALID, "name": "steer", "addresses": [address]})
    assert listed.status_code == 400, listed.text
    txt = {"name": "steer", "port": 5000, "properties": {"address": address}}
    assert register(served, txt).status_code == 400


def test_an_oversized_registration_is_a_413(served: Served) -> None:
    huge = b'{"name": "big", "port": 5000, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    answer = register(served, content=huge, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["status"] == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"name": "big", "port": 5000, "pad": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    streamed = register(served, content=chunks())
    assert streamed.status_code == 413
    assert served.is_healthy()


def pipelined(url: str, requests: list[bytes], *, connections: int) -> list[int]:
    """Send raw HTTP/1.1 requests, pipelined over a few connections; their status codes.

    A bare socket client costs the test almost nothing, so the time measured is the server's:
    httpx spends a few milliseconds of CPU per request here, more than the server does.
    """
    host, port = url.removeprefix("http://").split(":")

    async def connection(mine: list[bytes]) -> list[int]:
        reader, writer = await asyncio.open_connection(host, int(port))
        statuses = []
        try:
            for start in range(0, len(mine), 25):
                batch = mine[start : start + 25]
                writer.write(b"".join(batch))
                await writer.drain()
                for _ in batch:
                    statuses.append(int((await reader.readline()).split()[1]))
                    length = 0
                    while (line := await reader.readline()) != b"\r\n":
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    await reader.readexactly(length)
        finally:
            writer.close()
            await writer.wait_closed()
        return statuses

    async def main() -> list[int]:
        answers = await asyncio.gather(
            *(connection(requests[number::connections]) for number in range(connections))
        )
        return [status for statuses in answers for status in statuses]

    return asyncio.run(main())


def registration_request(body: dict[str, Any]) -> bytes:
    content = json.dumps(body).encode()
    head = (
        f"POST {REGISTER} HTTP/1.1\r\nHost: orchestrator\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


def test_a_burst_of_registrations_is_answered_and_the_server_stays_up(
    served: Served, closed_port: int
) -> None:
    count = 2000
    # Every 10th registration is malformed, so both answers are exercised.
    requests = [
        registration_request(
            {
                "name": f"burst-{n}",
                "port": closed_port if n % 10 else "x",
                "addresses": ["127.0.0.1"],
            }
        )
        for n in range(count)
    ]
    latencies: list[float] = []
    done = threading.Event()

    def watch_health() -> None:
        with httpx.Client(base_url=served.url, timeout=10.0, trust_env=False) as client:
            while not done.is_set():
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.02)

    watcher = threading.Thread(target=watch_health, name="healthz-watcher")
    watcher.start()
    started = time.monotonic()
    try:
        statuses = pipelined(served.url, requests, connections=16)
    finally:
        elapsed = time.monotonic() - started
        done.set()
        watcher.join()
    assert statuses.count(204) == count - count // 10
    assert statuses.count(400) == count // 10
    assert elapsed < 10, f"{count} registrations took {elapsed:.1f} s"
    assert latencies, "/healthz was not answered during the burst"
    assert max(latencies) < 2.0, f"/healthz took up to {max(latencies):.2f} s during the burst"
    assert served.is_healthy()
    # Nothing listens there: no device is introduced, and the server took no harm.
    time.sleep(0.2)
    assert not any(name.startswith("burst-") for name in served.devices())
    assert register(served, VALID | {"port": closed_port}).status_code == 204


# -- module files ------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FIBO = (SAMPLE_REPO / "modules/fibo/fibo.wasm").read_bytes()
DOUBLE = (SAMPLE_REPO / "modules/double/double.wasm").read_bytes()


def test_a_module_binary_is_served_as_wasm(served: Served) -> None:
    answer = served.client.get("/file/module/fibo/wasm")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/wasm"
    assert answer.content == FIBO
    pinned = served.client.get("/file/module/fibo/wasm", params={"digest": sha256(FIBO)})
    assert pinned.status_code == 200
    assert pinned.headers["content-type"] == "application/wasm"
    assert pinned.content == FIBO


@pytest.mark.parametrize(
    "digest",
    [sha256(b"not kept"), "../../etc", "../../etc/passwd", sha256(FIBO).upper(), "", "0" * 63],
    ids=["unknown", "dotdot", "dotdot-passwd", "upper-case", "empty", "short"],
)
def test_a_digest_that_is_not_kept_is_a_404(served: Served, digest: str) -> None:
    answer = served.client.get("/file/module/fibo/wasm", params={"digest": digest})
    assert answer.status_code == 404
    assert answer.json() == {
        "error": {
            "status": 404,
            "message": f"module 'fibo' has no kept 'wasm' with digest {digest!r}",
        }
    }


def test_a_digest_of_another_file_is_a_404(served: Served) -> None:
    # double's binary is kept, but it is not fibo's binary, nor greeting.txt.
    assert served.client.get(f"/file/module/fibo/wasm?digest={sha256(DOUBLE)}").status_code == 404
    assert (
        served.client.get(f"/file/module/banner/greeting.txt?digest={sha256(FIBO)}").status_code
        == 404
    )


NOT_IN_COMMIT = "module {!r} has no file {!r} in the desired commit"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/file/module/nope/wasm", NOT_IN_COMMIT.format("nope", "wasm")),
        ("/file/module/nope/description", "no module 'nope' in the desired commit"),
        ("/file/module/fibo/model.pb", NOT_IN_COMMIT.format("fibo", "model.pb")),
        ("/file/module/banner/fibo.wasm", NOT_IN_COMMIT.format("banner", "fibo.wasm")),
    ],
    ids=["unknown-module", "unknown-module-description", "unknown-file", "repo-file"],
)
def test_unknown_module_files_are_404_in_the_error_shape(
    served: Served, path: str, message: str
) -> None:
    answer = served.client.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": {"status": 404, "message": message}}


def test_the_description_is_the_openapi_document(served: Served) -> None:
    answer = served.client.get("/file/module/fibo/description")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"] == "3.0.3"
    assert [server["url"] for server in document["servers"]] == ["http://{serverIp}:{port}"]
    operation = document["paths"]["/{deployment}/modules/fibo/fibo"]["get"]
    assert operation["parameters"] == [
        {"name": "param0", "in": "query", "required": True, "schema": {"type": "integer"}}
    ]
    assert operation["responses"]["200"]["content"] == {
        "application/json": {"schema": {"type": "integer"}}
    }
    banner = served.client.get("/file/module/banner/description").json()
    count = banner["paths"]["/{deployment}/modules/banner/count"]["post"]
    schema = count["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["in.bin"] == {"type": "string", "format": "binary"}


def test_a_data_file_is_served(served: Served) -> None:
    answer = served.client.get("/file/module/banner/greeting.txt")
    assert answer.status_code == 200
    assert answer.content == GREETING
    assert answer.headers["content-type"] == "application/octet-stream"
    pinned = served.client.get(f"/file/module/banner/greeting.txt?digest={sha256(GREETING)}")
    assert pinned.content == GREETING


def test_files_follow_the_desired_commit_and_pinned_ones_stay(tmp_path: Path) -> None:
    repo = copy_sample(tmp_path / "repo")
    git_init_commit(repo, "the sample fleet")
    with serving(repo, tmp_path / "data") as orchestrator:
        write_files(repo, {"modules/banner/greeting.txt": "Hi!\n"})
        second = git_init_commit(repo, "a shorter greeting")
        eventually(lambda: orchestrator.sync()["desired"]["sha"] == second, "the second commit")
        assert orchestrator.client.get("/file/module/banner/greeting.txt").content == b"Hi!\n"
        # A device deploying the first commit's body still gets the bytes it was sent for.
        old = orchestrator.client.get(f"/file/module/banner/greeting.txt?digest={sha256(GREETING)}")
        assert (old.status_code, old.content) == (200, GREETING)
