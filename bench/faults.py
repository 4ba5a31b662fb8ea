"""Issue 11 benchmark (a): commit -> POST /deploy at healthy devices, with and without faults.

    .venv/bin/python bench/faults.py [--devices 1000] [--commits 3]

A `serve` process follows a generated repository: one deployment `on-<device>` pinned to each
of `--devices` simulated devices (a `FleetThread` in this process, registered with it), all
running `fibo`. Each commit gives `fibo` a new binary, which changes every body. We time from
`git commit` returning to the last healthy device receiving its new body (`POST /deploy`
whose digest-pinned URL names the new binary), twice on the same fleet: first with every
device healthy, then with one device hanging (accepts, never answers: the orchestrator's 30 s
request timeout applies) and one answering 500. The figure is the ratio of the medians
(faulty / clean) over the same healthy devices; the target is at most 1.5.
Everything runs in temporary folders on loopback; no mDNS, no other network.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconcile import (  # noqa: E402  (bench/ is on the path: run as a script)
    fibo_binary,
    git,
    git_commit_all,
    orchestrator,
    raise_fd_limit,
    wait_for,
)

from gitops_orchestrator.simulator.device import Fault, SimulatedDevice  # noqa: E402
from gitops_orchestrator.simulator.fleet import FleetThread  # noqa: E402

HANGING, FAILING = "dev0000", "dev0001"


class Arrivals:
    """When each device first received a body naming `needle` (wraps its `deploy`)."""

    def __init__(self) -> None:
        self.needle = b""
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def install(self, fleet: FleetThread, device: SimulatedDevice) -> None:
        original = device.deploy

        async def deploy(raw: bytes, content_type: str | None) -> tuple[int, Any]:
            arrived = time.perf_counter()
            if self.needle and self.needle in raw:
                with self.lock:
                    self.at.setdefault(device.name, arrived)
            return await original(raw, content_type)

        fleet.call(setattr, device, "deploy", deploy)

    def expect(self, needle: bytes) -> None:
        with self.lock:
            self.needle, self.at = needle, {}


def generate(repo: Path, names: list[str]) -> None:
    shutil.copytree(ROOT / "sample-repo", repo)
    shutil.rmtree(repo / "deployments")
    (repo / "deployments").mkdir()
    for name in names:
        (repo / "deployments" / f"on-{name}.yaml").write_text(
            f"name: on-{name}\nsequence:\n  - {{module: fibo, function: fibo, device: {name}}}\n"
        )
    listed = "".join(f"  {name}: {{}}\n" for name in names)
    (repo / "devices.yaml").write_text(f"admission: listed\ndevices:\n{listed}")
    (repo / "modules/fibo/fibo.wasm").write_bytes(fibo_binary(0))
    git(repo, "init", "--quiet", "--initial-branch=main")
    git_commit_all(repo, "generated")


def rollout(repo: Path, arrivals: Arrivals, healthy: list[str], value: int, bound: float) -> float:
    """Seconds from the commit to the last healthy device getting the new body."""
    binary = fibo_binary(value)
    arrivals.expect(hashlib.sha256(binary).hexdigest().encode())
    (repo / "modules/fibo/fibo.wasm").write_bytes(binary)
    git_commit_all(repo, f"fibo + {value}")
    committed = time.perf_counter()
    try:
        wait_for(
            lambda: all(name in arrivals.at for name in healthy), f"commit {value}", bound,
            poll=0.01,
        )  # fmt: skip
    except TimeoutError:
        missing = [name for name in healthy if name not in arrivals.at]
        print(f"commit {value}: {len(missing)} healthy devices never got it: {missing[:5]}")
        raise
    took = max(arrivals.at[name] for name in healthy) - committed
    print(f"commit {value}: {took:.2f} s", flush=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=3)
    parser.add_argument("--bound", type=float, default=120.0)
    options = parser.parse_args()
    names = [f"dev{number:04d}" for number in range(options.devices)]
    healthy = [name for name in names if name not in (HANGING, FAILING)]
    raise_fd_limit(4 * options.devices + 1024)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as folder:
        work = Path(folder)
        repo = work / "repo"
        generate(repo, names)
        with (
            orchestrator(repo, work / "data", work / "serve.log") as running,
            FleetThread(orchestrator_url=running.url, data_dir=work / "devices") as fleet,
        ):
            arrivals = Arrivals()
            arrivals.expect(hashlib.sha256(fibo_binary(0)).hexdigest().encode())
            started = time.perf_counter()
            for device in fleet.add(names=names):
                arrivals.install(fleet, device)
            wait_for(lambda: len(arrivals.at) == len(names), "the first rollout", 300, poll=0.05)
            print(
                f"{options.devices} devices: first rollout {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            value = 1
            figures: dict[str, list[float]] = {"clean": [], "faulty": []}
            for run in ("clean", "faulty"):
                if run == "faulty":
                    fleet.call(setattr, fleet.fleet[HANGING], "fault", Fault.HANG)
                    fleet.call(setattr, fleet.fleet[FAILING], "fault", Fault.ERROR)
                for _ in range(options.commits):
                    figures[run].append(rollout(repo, arrivals, healthy, value, options.bound))
                    value += 1
                    time.sleep(1.0)  # let acknowledgements land before the next commit
            for device in (HANGING, FAILING):
                fleet.call(setattr, fleet.fleet[device], "fault", None)
    clean, faulty = (statistics.median(figures[run]) for run in ("clean", "faulty"))
    for run, values in figures.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{run:>6}: commit -> last of {len(healthy)} healthy devices: {shown} s")
    print(f"ratio of medians (1 hanging + 1 answering 500 / none): {faulty / clean:.2f}")


if __name__ == "__main__":
    main()
