"""Issue 11, seen case 4: a supervisor's start is one start, however it shows itself.

A real supervisor announces itself on mDNS about 0.4 s before its registration POST. A real
`serve` process browses mDNS in network namespace A; a simulated device process in namespace B
announces, then registers (as the real one does). Nothing is multicast outside the namespaces.
The orchestrator is read through its HTTP API from inside A.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CLI, copy_sample, free_port, git_init_commit, write_files
from netns import EventLoopIn, NetnsPair, made_pair

DEVICES = "admission: listed\ndevices:\n  dev1: {}\n"
PINNED = "name: on-dev1\nsequence:\n  - {module: fibo, function: fibo, device: dev1}\n"


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    with made_pair() as made:
        yield made


class Inside:
    """HTTP calls made from inside namespace A."""

    def __init__(self, loop: EventLoopIn, url: str) -> None:
        self.loop, self.url = loop, url

    def get(self, path: str) -> Any:
        async def fetch() -> Any:
            async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
                answer = await client.get(self.url + path)
                return answer.json() if answer.status_code == 200 else None

        try:
            return self.loop.run(fetch())
        except httpx.HTTPError:
            return None

    def until(self, path: str, check: Any, what: str, bound: float = 20.0) -> Any:
        deadline = time.monotonic() + bound
        while True:
            value = self.get(path)
            if value is not None and check(value):
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)


def test_an_announcement_then_a_registration_deploys_once(pair: NetnsPair, tmp_path: Path) -> None:
    repo = copy_sample(tmp_path / "repo")
    for name in ("banner", "double", "fibo-chain"):
        (repo / f"deployments/{name}.yaml").unlink()
    write_files(repo, {"devices.yaml": DEVICES, "deployments/on-dev1.yaml": PINNED})
    git_init_commit(repo, "one device")
    port = free_port()
    url = f"http://{pair.address_a}:{port}"
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("serve", "dev1")}
    serve = subprocess.Popen(
        pair.command(
            pair.a, str(CLI), "serve", "--repo", str(repo), "--host", pair.address_a,
            "--port", str(port), "--data-dir", str(tmp_path / "data"), "--public-url", url,
            "--mdns-interfaces", pair.address_a, "--reconcile-interval", "0.5",
        ),
        stdout=subprocess.DEVNULL, stderr=logs["serve"],
    )  # fmt: skip
    device: subprocess.Popen[bytes] | None = None
    try:
        with EventLoopIn(pair.a, pair.address_a) as loop:
            inside = Inside(loop, url)
            inside.until("/healthz", lambda v: v["status"] == "ok", "the orchestrator")
            device = subprocess.Popen(
                pair.command(
                    pair.b, str(Path(sys.executable).with_name("gitops-orchestrator")),
                    "device", "--name", "dev1", "--host", pair.address_b, "--port", "5055",
                    "--mdns", "--orchestrator", url, "--data-dir", str(tmp_path / "devices"),
                ),
                stdout=logs["dev1"], stderr=logs["dev1"],
            )  # fmt: skip
            view = inside.until(
                "/api/v1/devices/dev1",
                lambda v: [r["status"] for r in v["runs"]] == ["synced"],
                "on-dev1 synced on dev1",
            )
            assert view["origin"] in ("mdns", "registered")
            # The registration follows the announcement by about 0.4 s; after a few more
            # passes, a second deploy would have come.
            time.sleep(2.5)
            kinds = [e["kind"] for e in inside.get("/api/v1/events?device=dev1")["items"]]
            print(f"\nevents of dev1, newest first: {kinds}")
            assert kinds.count("deployed") == 1, kinds
            assert "restart" not in kinds
            assert inside.get("/api/v1/devices/dev1")["incarnation"] == 1
    finally:
        for process in (device, serve):
            if process is not None:
                process.terminate()
                process.wait(20)
        for log in logs.values():
            log.close()
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()
