"""`gitops-orchestrator demo` as a real process: a port in use is a clear usage error."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
from conftest import CLI, eventually, free_port

ENV = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_")}


def demo(port: int, data: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "demo", "--port", str(port), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=timeout, check=False, env=ENV,
    )  # fmt: skip


def test_a_port_in_use_exits_2_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = demo(port, tmp_path / "demo")
    assert done.returncode == 2, done.stderr
    assert f"port {port} is in use: gitops-orchestrator demo --port N" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "demo").exists()  # no repository copied, no device started


def test_a_second_demo_on_the_same_port_leaves_the_first_alone(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            [str(CLI), "demo", "--port", str(port), "--data-dir", str(tmp_path / "first")],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=ENV,
        )  # fmt: skip
    try:

        def devices() -> set[str]:
            try:
                answer = httpx.get(url + "/api/v1/devices", timeout=2).json()
            except httpx.HTTPError:
                return set()
            return {item["name"] for item in answer["items"] if item["state"] == "online"}

        eventually(lambda: devices() == {"sup1", "sup2", "sup3"}, "the first demo's devices")
        second = demo(port, tmp_path / "second")
        assert second.returncode == 2, second.stderr
        assert "is in use" in second.stderr
        assert first.poll() is None
        assert devices() == {"sup1", "sup2", "sup3"}
        assert httpx.get(url + "/healthz", timeout=2).status_code == 200
    finally:
        first.terminate()
        first.communicate(timeout=30)
