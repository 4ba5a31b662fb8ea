"""Sync benchmarks: commit-to-desired latency, and the cost of a one-file change.

    .venv/bin/python bench/sync.py [--commits 25] [--modules 2000]

(a) A local repository is watched by the real sync loop (watchdog + SQLite on disk). After each
    `git commit` returns, we time until that commit is the desired one in the store, beside the
    time `git` itself takes to read the new commit (`git log -1` + `git ls-tree -r`), measured
    right after the same commit.
(b) A generated repository with N modules (each its own binary) and N/2 two-step deployments:
    a cold sync (empty store, empty caches) against the sync of a commit changing one file.
Everything runs in temporary folders on this machine; nothing touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gitops_orchestrator import source, syncing  # noqa: E402
from gitops_orchestrator.store import Store  # noqa: E402

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@localhost",
           "PATH": "/usr/bin:/bin:/usr/local/bin"}  # fmt: skip


def git(path: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=path, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def commit_latency(workdir: Path, commits: int) -> tuple[list[float], list[float]]:
    repo = workdir / "latency-repo"
    shutil.copytree(ROOT / "sample-repo", repo)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "start")
    store = Store.open(workdir / "latency-data")
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def follow() -> None:
        local = source.LocalSource(repo, None, poll_interval=60.0)
        syncer = syncing.Syncer(local, store, interval=60.0)
        ready.set()
        try:
            await syncer.run()
        finally:
            local.close()

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(follow())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    wait_for(lambda: store.sync_state().desired is not None)
    latencies, baselines = [], []
    for number in range(commits):
        (repo / "devices.yaml").write_text(
            f"admission: open\ndevices:\n  sup1:\n    labels: {{round: '{number}'}}\n"
        )
        subprocess.run(
            ["git", "commit", "--quiet", "-am", f"round {number}"], cwd=repo, env=GIT_ENV,
            check=True,
        )  # fmt: skip
        committed = time.perf_counter()
        sha = git(repo, "rev-parse", "HEAD")  # not timed: the loop reads the ref by itself
        wait_for(lambda sha=sha: _desired(store) == sha)
        latencies.append(time.perf_counter() - committed)
        started = time.perf_counter()
        git(repo, "log", "-1", "--format=%H %an %s", sha)
        git(repo, "ls-tree", "-r", "-l", sha)
        baselines.append(time.perf_counter() - started)
    loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
    thread.join(timeout=5)
    store.close()
    return latencies, baselines


def _desired(store: Store) -> str | None:
    state = store.sync_state()
    return state.desired.sha if state.desired else None


def wait_for(condition: object, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the sync loop did not catch up")
        time.sleep(0.001)


def write_step_modules(repo: Path, names: list[str]) -> None:
    """One module per name, each exporting `step(x)` and each with a binary of its own."""
    module_yaml = (
        "name: {name}\nwasm: {name}.wasm\n"
        "functions:\n  step: {{params: [integer], output: integer}}\n"
    )
    for number, name in enumerate(names):
        folder = repo / "modules" / name
        folder.mkdir(parents=True)
        (folder / "module.yaml").write_text(module_yaml.format(name=name))
        wat = (
            '(module (func (export "step") (param i32) (result i32)'
            f" (i32.add (local.get 0) (i32.const {number}))))"
        )
        (folder / f"{name}.wasm").write_bytes(wasmtime.wat2wasm(wat))


def generate(repo: Path, modules: int) -> None:
    write_step_modules(repo, [f"m{number:05d}" for number in range(modules)])
    (repo / "deployments").mkdir()
    for number in range(0, modules - 1, 2):
        name = f"d{number:05d}"
        (repo / "deployments" / f"{name}.yaml").write_text(
            f"name: {name}\nsequence:\n  - {{module: m{number:05d}, function: step}}\n"
            f"  - {{module: m{number + 1:05d}, function: step}}\n"
        )
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "generated")


def one_file_change(workdir: Path, modules: int) -> tuple[float, float]:
    repo = workdir / "large-repo"
    generate(repo, modules)

    async def measure() -> tuple[float, float]:
        store = Store.open(workdir / "large-data")
        local = source.LocalSource(repo, None)
        syncer = syncing.Syncer(local, store, interval=60.0)
        try:
            started = time.perf_counter()
            cold = await syncer.sync_once()
            cold_time = time.perf_counter() - started
            assert cold.result is not None
            assert cold.result.snapshot is not None, cold.result.problems
            target = repo / "modules/m00007/module.yaml"
            target.write_text(target.read_text().replace("step:", "step: ") + "# changed\n")
            git(repo, "commit", "--quiet", "-am", "one file")
            started = time.perf_counter()
            warm = await syncer.sync_once()
            warm_time = time.perf_counter() - started
            assert warm.result is not None
            assert warm.result.snapshot is not None
            return cold_time, warm_time
        finally:
            local.close()
            store.close()

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=25)
    parser.add_argument("--modules", type=int, default=2000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as folder:
        workdir = Path(folder)
        latencies, baselines = commit_latency(workdir, options.commits)
        ms = 1000.0
        print(f"(a) commit -> desired in SQLite, local source, {options.commits} commits")
        print(f"    sync loop    p50 {statistics.median(latencies) * ms:7.1f} ms   "
              f"p95 {percentile(latencies, 0.95) * ms:7.1f} ms")  # fmt: skip
        print(f"    git baseline p50 {statistics.median(baselines) * ms:7.1f} ms   "
              f"p95 {percentile(baselines, 0.95) * ms:7.1f} ms"
              "   (git log -1 + git ls-tree -r)")  # fmt: skip
        print(
            f"    ratio p50    {statistics.median(latencies) / statistics.median(baselines):7.1f}x"
        )
        cold, warm = one_file_change(workdir, options.modules)
        print(f"(b) repository of {options.modules} modules, {options.modules // 2} deployments")
        print(f"    cold sync            {cold * ms:9.1f} ms")
        print(f"    one-file change sync {warm * ms:9.1f} ms")
        print(f"    ratio                {warm / cold * 100:9.2f} %   (target under 5 %)")


if __name__ == "__main__":
    main()
