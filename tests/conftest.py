"""Shared fixtures: the project's sample repository, copies of it, real git repositories.

Everything here builds real things in `tmp_path` (folders, git repositories, wasm binaries);
nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"

Files = Mapping[str, str | bytes]


def write_files(root: Path, files: Files) -> Path:
    """Write `files` ({relative path: text or bytes}) under `root`; return `root`."""
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return root


def copy_sample(destination: Path) -> Path:
    """A copy of sample-repo at `destination` (which must not exist yet)."""
    shutil.copytree(SAMPLE_REPO, destination)
    return destination


def git(path: Path, *args: str) -> str:
    """Run the real git CLI in `path`; return its stdout without the trailing newline."""
    done = subprocess.run(
        ["git", *args], cwd=path, check=True, capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip()


def git_init_commit(path: Path, message: str = "initial") -> str:
    """Make `path` a git repository (unless it is one) and commit everything; return the sha."""
    if not (path / ".git").exists():
        git(path, "init", "--quiet", "--initial-branch=main")
        git(path, "config", "user.name", "Test User")
        git(path, "config", "user.email", "test@example.com")
        git(path, "config", "commit.gpgsign", "false")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD")


def wat(text: str) -> bytes:
    """The wasm binary of WebAssembly text `text`."""
    return bytes(wasmtime.wat2wasm(text))


@pytest.fixture
def sample_repo() -> Path:
    """The project's sample-repo folder (read it, never write to it)."""
    return SAMPLE_REPO


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A fresh, writable copy of sample-repo."""
    return copy_sample(tmp_path / "repo")


@pytest.fixture
def make_files() -> Callable[[Path, Files], Path]:
    return write_files


@pytest.fixture(autouse=True, scope="session")
def no_multicast_on_real_interfaces() -> Iterator[None]:
    """Every orchestrator a test starts (and its children) browses no mDNS unless told to.

    `serve` browses every interface by default, as a real site needs; tests never may.
    """
    previous = os.environ.get("GITOPS_MDNS_INTERFACES")
    os.environ["GITOPS_MDNS_INTERFACES"] = "none"
    yield
    if previous is None:
        del os.environ["GITOPS_MDNS_INTERFACES"]
    else:
        os.environ["GITOPS_MDNS_INTERFACES"] = previous


@pytest.fixture(autouse=True)
def no_leaked_threads() -> object:
    """Every thread a test starts (watchers, servers, clients) is stopped by its end."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


# A real `gitops-orchestrator serve` process on 127.0.0.1, for tests of the HTTP surface.

WEBHOOK_SECRET = "s3cret-hook"

CLI = Path(sys.executable).with_name("gitops-orchestrator")
SERVE_BOUND = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Orchestrator:
    def __init__(self, process: subprocess.Popen[str], port: int, log: Path) -> None:
        self.process = process
        self.log = log
        """stdout and stderr of the process: a file, as a pipe nobody reads would fill up."""
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=5.0)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def sync(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get("/api/v1/sync").json()
        return answer

    def until(self, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + SERVE_BOUND
        while True:
            try:
                state = self.sync()
                if condition(state):
                    return state
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, f"serve exited: {self.log_text()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def hook(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post("/hooks/git", content=body, headers=headers)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Orchestrator]]:
    started: list[Orchestrator] = []

    def start(
        repo: str,
        *extra: str,
        secret: str | None = WEBHOOK_SECRET,
        env: Mapping[str, str] | None = None,
    ) -> Orchestrator:
        port = free_port()
        variables = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_")}
        variables["GITOPS_MDNS_INTERFACES"] = "none"
        variables.update(env or {})
        if secret:
            variables["GITOPS_WEBHOOK_SECRET"] = secret
        log = tmp_path / f"serve{len(started)}.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [str(CLI), "serve", "--repo", repo, "--host", "127.0.0.1", "--port", str(port),
                 "--data-dir", str(tmp_path / f"data{len(started)}"), *extra],
                stdout=output, stderr=subprocess.STDOUT, text=True, env=variables,
            )  # fmt: skip
        orchestrator = Orchestrator(process, port, log)
        started.append(orchestrator)
        orchestrator.until(lambda state: True, "the server to answer")
        return orchestrator

    yield start
    for orchestrator in started:
        orchestrator.client.close()
        if orchestrator.process.poll() is None:
            orchestrator.process.kill()
        orchestrator.process.communicate()


def eventually(condition: Callable[[], Any], what: str, bound: float = 20.0) -> Any:
    """The first true value of `condition()`, polled until `bound` seconds have passed."""
    deadline = time.monotonic() + bound
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
