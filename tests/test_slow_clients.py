"""Slow and idle clients cannot starve a real `serve` process (the hostile-network issue, item 3).

Strangers open many connections and send half a request, or trickle one byte at a time; the
orchestrator cuts them off after its request deadline and keeps a bound on open connections,
so `/healthz` answers all along and the log stays short.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CLI, Orchestrator, copy_sample, free_port, git_init_commit

HALF_REQUEST = b"POST /device/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nlogData="


@pytest.fixture(autouse=True)
def enough_files_for_the_test() -> Iterator[None]:
    """This process opens ~1,600 sockets: raise its own soft limit, and restore it after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start(tmp_path: Path, *, files: tuple[int, int] | None, **env: str) -> Orchestrator:
    repo = copy_sample(tmp_path / "repo")
    git_init_commit(repo)
    port = free_port()
    log = tmp_path / "serve.log"

    def limits() -> None:
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, files)

    with log.open("w") as output:
        process = subprocess.Popen(
            [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            stdout=output, stderr=subprocess.STDOUT, text=True, preexec_fn=limits,
            env={"PATH": "/usr/bin:/bin", "GITOPS_MDNS_INTERFACES": "none", **env},
        )  # fmt: skip
    orchestrator = Orchestrator(process, port, log)
    orchestrator.until(lambda state: True, "the server to answer")
    return orchestrator


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Orchestrator]]:
    started: list[Orchestrator] = []

    def run(**options: object) -> Orchestrator:
        orchestrator = start(tmp_path, **options)  # type: ignore[arg-type]
        started.append(orchestrator)
        return orchestrator

    yield run
    for orchestrator in started:
        orchestrator.client.close()
        orchestrator.process.kill()
        orchestrator.process.communicate()


def half_sent(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(HALF_REQUEST)
        sockets.append(client)
    return sockets


def is_closed_by_peer(client: socket.socket) -> bool:
    client.settimeout(0.01)
    try:
        return client.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def healthz_seconds(url: str) -> float:
    started = time.monotonic()
    answer = httpx.get(url + "/healthz", timeout=5)
    assert answer.status_code == 200
    return time.monotonic() - started


def test_half_sent_requests_are_cut_off_after_the_deadline(
    served: Callable[..., Orchestrator],
) -> None:
    orchestrator = served(files=None, GITOPS_REQUEST_DEADLINE="1")
    port = int(orchestrator.url.rsplit(":", 1)[1])
    slow = half_sent(port, 200)
    trickler = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        started = time.monotonic()
        # A byte every 0.2 s keeps uvicorn's own keep-alive timer from ever firing.
        for byte in HALF_REQUEST[:25]:
            if is_closed_by_peer(trickler):
                break
            trickler.send(bytes([byte]))
            time.sleep(0.2)
        assert is_closed_by_peer(trickler), "a trickling client was never cut off"
        assert time.monotonic() - started < 4
        assert healthz_seconds(orchestrator.url) < 1
        deadline = time.monotonic() + 10
        while not all(is_closed_by_peer(client) for client in slow):
            assert time.monotonic() < deadline, "half-sent requests stayed open"
            time.sleep(0.1)
    finally:
        for client in [*slow, trickler]:
            client.close()
    # A whole request is answered as before.
    assert orchestrator.client.get("/api/v1/sync").status_code == 200


def test_more_connections_than_files_keep_healthz_answering(
    served: Callable[..., Orchestrator],
) -> None:
    """The issue's case: 1,500 half-sent requests against a process allowed 1,024 files."""
    orchestrator = served(files=(1024, 1024), GITOPS_REQUEST_DEADLINE="30")
    port = int(orchestrator.url.rsplit(":", 1)[1])
    slow = half_sent(port, 1500)
    try:
        # Each new connection makes room by dropping the oldest one still sending.
        # The first waits behind the flood in the accept queue (a loaded machine: seconds).
        first, *rest = [healthz_seconds(orchestrator.url) for _ in range(20)]
        assert first < 10
        assert max(rest) < 2, rest
        assert sum(not is_closed_by_peer(client) for client in slow) <= 512
    finally:
        for client in slow:
            client.close()
    log = orchestrator.log_text()
    assert "Too many open files" not in log
    assert log.count("connection bound") <= 3, log[-2000:]
    assert "at most 512 connections" in log


def test_the_open_file_limit_is_raised_to_the_hard_one(
    served: Callable[..., Orchestrator],
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        pytest.fail(f"this machine's hard limit ({hard}) leaves nothing to raise")
    orchestrator = served(files=(256, hard))
    limits = Path(f"/proc/{orchestrator.process.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line
