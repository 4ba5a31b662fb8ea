"""The installed `gitops-orchestrator` console script, run as a real subprocess."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SAMPLE_REPO, copy_sample, git_init_commit, write_files

SCRIPT = Path(sys.executable).parent / "gitops-orchestrator"
BROKEN_DOUBLE = """\
name: double
wasm: double.wasm
functions:
  double:
    params: [integer, integer]
    output: integer
"""


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_")}
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A sample copy with two problems: a parameter count and an unknown key."""
    root = copy_sample(tmp_path / "broken")
    write_files(root, {"modules/double/module.yaml": BROKEN_DOUBLE})
    with (root / "devices.yaml").open("a") as devices:
        devices.write("version: 1\n")
    return root


def outside_any_repository(path: Path) -> bool:
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--git-dir"], capture_output=True, check=False
    )
    return done.returncode != 0


def test_script_is_installed() -> None:
    assert SCRIPT.is_file(), f"run `pip install -e .` in the venv ({SCRIPT} is missing)"


def test_valid_sample_repo() -> None:
    done = run("validate", SAMPLE_REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"{SAMPLE_REPO}: valid (3 modules, 3 deployments, 3 devices listed)\n"


def test_valid_in_current_folder() -> None:
    done = run("validate", cwd=SAMPLE_REPO)
    assert done.returncode == 0
    assert done.stdout == ".: valid (3 modules, 3 deployments, 3 devices listed)\n"


def test_broken_text(broken: Path) -> None:
    done = run("validate", broken)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{broken}/devices.yaml:12: version: unknown key",
        f"{broken}/modules/double/module.yaml:5: function 'double' takes 1 parameter in "
        "double.wasm, but params lists 2",
        f"{broken}: 2 problems",
    ]


def test_broken_text_relative(broken: Path) -> None:
    done = run("validate", cwd=broken)
    assert done.returncode == 1
    assert done.stdout.splitlines()[:2] == [
        "devices.yaml:12: version: unknown key",
        "modules/double/module.yaml:5: function 'double' takes 1 parameter in double.wasm, "
        "but params lists 2",
    ]


def test_broken_json(broken: Path) -> None:
    done = run("validate", broken, "--format", "json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["valid"] is False
    assert report["commit_sha"] is None
    assert report["modules"] == {}
    assert report["problems"] == [
        {"file": f"{broken}/devices.yaml", "line": 12, "message": "version: unknown key"},
        {
            "file": f"{broken}/modules/double/module.yaml",
            "line": 5,
            "message": "function 'double' takes 1 parameter in double.wasm, but params lists 2",
        },
    ]


def test_valid_json() -> None:
    done = run("validate", SAMPLE_REPO, "--format", "json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["valid"] is True
    assert report["problems"] == []
    assert report["modules"]["banner"]["exports"] == {"count": 0, "render": 1}
    assert report["modules"]["banner"]["requirements"] == [
        "fd_close",
        "fd_read",
        "fd_write",
        "path_open",
    ]
    assert report["modules"]["fibo"]["size"] == 134
    assert report["deployments"]["fibo-chain"] == ["fibo.fibo", "double.double"]


def test_broken_github(broken: Path) -> None:
    done = run("validate", broken, "--format", "github")
    assert done.returncode == 1
    file = str(broken).replace(":", "%3A").replace(",", "%2C")
    assert done.stdout.splitlines() == [
        f"::error file={file}/devices.yaml,line=12::version: unknown key",
        f"::error file={file}/modules/double/module.yaml,line=5::function 'double' takes 1 "
        "parameter in double.wasm, but params lists 2",
        f"{broken}: 2 problems",
    ]


def test_github_without_line(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    (root / "modules/double/double.wasm").write_bytes(b"100% not wasm")
    done = run("validate", ".", "--format", "github", cwd=root)
    assert done.returncode == 1
    first = done.stdout.splitlines()[0]
    assert first.startswith("::error file=modules/double/double.wasm::is not valid WebAssembly")
    assert ",line=" not in first


def test_max_binary_size_option(tmp_path: Path) -> None:
    done = run("validate", SAMPLE_REPO, "--max-binary-size", "100")
    assert done.returncode == 1
    assert f"{SAMPLE_REPO}/modules/fibo/module.yaml:2: wasm file 'fibo.wasm' is 134 bytes" in (
        done.stdout
    )


def test_ref_ignores_uncommitted_edit(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    sha = git_init_commit(root, "sample")
    write_files(root, {"modules/double/module.yaml": BROKEN_DOUBLE})
    assert run("validate", root).returncode == 1
    done = run("validate", root, "--ref", "HEAD")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid (3 modules, 3 deployments, 3 devices listed)" in done.stdout
    report = json.loads(run("validate", root, "--ref", "HEAD", "--format", "json").stdout)
    assert report["commit_sha"] == sha


def test_ref_sees_a_committed_problem(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    good = git_init_commit(root, "good")
    write_files(root, {"modules/double/module.yaml": BROKEN_DOUBLE})
    git_init_commit(root, "bad")
    done = run("validate", root, "--ref", "HEAD")
    assert done.returncode == 1
    assert f"{root}/modules/double/module.yaml:5: function 'double'" in done.stdout
    assert run("validate", root, "--ref", good).returncode == 0
    assert run("validate", root, "--ref", "HEAD~1").returncode == 0


def test_ref_in_a_subfolder(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    copy_sample(outer / "sample-repo")
    write_files(outer, {"README.md": "a repository with the sample in a subfolder\n"})
    git_init_commit(outer)
    done = run("validate", outer / "sample-repo", "--ref", "HEAD")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith(": valid (3 modules, 3 deployments, 3 devices listed)\n")
    done = run("validate", "sample-repo", "--ref", "HEAD", cwd=outer)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ref_subfolder_not_committed(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    write_files(outer, {"README.md": "x\n"})
    git_init_commit(outer)
    copy_sample(outer / "later")
    done = run("validate", outer / "later", "--ref", "HEAD")
    assert done.returncode == 2
    assert "later does not exist in commit" in done.stderr


def test_ref_outside_a_repository(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "plain")
    assert outside_any_repository(root)
    done = run("validate", root, "--ref", "HEAD")
    assert done.returncode == 2
    assert f"Error: {root} is not inside a git repository" in done.stderr
    assert done.stdout == ""


def test_unknown_ref(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    git_init_commit(root)
    done = run("validate", root, "--ref", "no-such-branch")
    assert done.returncode == 2
    assert "Error: 'no-such-branch' names no commit of" in done.stderr
    assert done.stdout == ""


def test_ref_in_a_repository_without_commits(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    subprocess.run(["git", "init", "--quiet", str(root)], check=True)
    done = run("validate", root, "--ref", "HEAD")
    assert done.returncode == 2
    assert "'HEAD' names no commit of" in done.stderr


def test_nonexistent_path(tmp_path: Path) -> None:
    done = run("validate", tmp_path / "missing")
    assert done.returncode == 2
    assert "does not exist" in done.stderr


def test_path_is_a_file() -> None:
    done = run("validate", SAMPLE_REPO / "devices.yaml")
    assert done.returncode == 2
    assert "is a file" in done.stderr


def test_unknown_format() -> None:
    done = run("validate", SAMPLE_REPO, "--format", "xml")
    assert done.returncode == 2
    assert "'xml' is not one of 'text', 'json', 'github'" in done.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class DemoRun:
    data_dir: Path
    returncode: int
    stdout: str
    stderr: list[str]


def run_demo(tmp_path: Path, while_up: Callable[[str], None] = lambda url: None) -> DemoRun:
    """Start `demo` (it serves until Ctrl-C), wait until it is up, then send it SIGINT."""
    data_dir = tmp_path / "demo"
    port = free_port()
    process = subprocess.Popen(
        [str(SCRIPT), "demo", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = process.stderr
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stderr])
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not seen or "Application startup complete." not in seen[-1]:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        while_up(f"http://127.0.0.1:{port}")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        stdout = process.stdout.read()
        process.stdout.close()
        stderr.close()
    while not lines.empty():
        seen.append(lines.get())
    return DemoRun(data_dir, process.returncode, stdout, seen)


def test_demo(tmp_path: Path) -> None:
    """`demo` copies the sample into its data folder, prints its summary and serves."""
    demo = run_demo(tmp_path)
    seen = demo.stderr
    text = "".join(seen)
    assert demo.stdout == ""
    modules = [line.split()[0] for line in seen[seen.index("Modules:\n") + 1 :: 2][:3]]
    assert modules == ["banner", "double", "fibo"]
    assert "  fibo-chain   fibo.fibo -> double.double\n" in seen
    assert "needs fd_close, fd_read, fd_write, path_open" in text
    assert "  sup3         room=garage (cordoned)\n" in seen
    assert f"The demo follows the git repository {demo.data_dir / 'sample-repo'}" in text
    assert "Application shutdown complete." in text  # SIGINT stops it cleanly
    copied = demo.data_dir / "sample-repo" / "modules/fibo/fibo.wasm"
    assert copied.read_bytes() == (SAMPLE_REPO / "modules/fibo/fibo.wasm").read_bytes()


def test_demo_devices_run_the_sample_chain(tmp_path: Path) -> None:
    """The demo's three simulated devices register, get the sample and run fibo-chain."""
    answers: list[str] = []

    def call(url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = subprocess.run(
                [str(SCRIPT), "call", "fibo-chain", "13", "--orchestrator", url],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            answers.append(done.stdout.strip() or done.stderr.strip())
            if done.returncode == 0:
                return
            time.sleep(0.2)

    demo = run_demo(tmp_path, call)
    assert answers[-1] == "466", answers
    assert demo.returncode == 0


def test_demo_stopped_with_ctrl_c_exits_0(tmp_path: Path) -> None:
    demo = run_demo(tmp_path)
    assert "Aborted!\n" not in demo.stderr
    assert demo.returncode == 0
