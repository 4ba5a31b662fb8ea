"""Idle cost of a fleet: the orchestrator's CPU while N devices are online and nothing changes.

    .venv/bin/python bench/idle.py [--devices 1000,4000,10000] [--idle 30] [--per-process 2500]

For each fleet size, a fresh `serve` process (default settings: a health check of every
device every 10 s) follows a generated repository whose `devices.yaml` lists the devices;
the devices are simulated in `--per-process` sized `Fleet`s, each in a process of its own
(one process cannot hold 10,000: the open-file hard limit is 20,000 and a device costs about
4). They register themselves (those whose one registration timed out in the start storm are
sent it again by the bench: a supervisor would wait for its renewal); once every one is
online (read from the orchestrator's SQLite file) and one more health interval has passed,
the orchestrator's CPU time (/proc) is taken over `--idle` seconds, and the simulators'
apart from it (they share the 2 cores).

Baseline, measured in the same run against the same devices: the CPU this process spends on a
raw-socket `GET /health` of every device (a connection each, the same concurrency as the
orchestrator's), scaled to one sweep per health interval: what the checks cost with no HTTP
library, store or state rules at all. Everything is on loopback; no mDNS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import raw_health  # noqa: E402  (bench/ is on the path: run as a script)
from reconcile import (  # noqa: E402
    CLOCK_TICKS,
    git,
    git_commit_all,
    orchestrator,
    own_cpu,
    problems_in,
    raise_fd_limit,
    wait_for,
)

from gitops_orchestrator.settings import DeviceSettings  # noqa: E402

DEFAULTS = DeviceSettings()
# The file-descriptor hard limit here is 20,000 per process; a simulated device takes about 4.
PER_PROCESS = 2500


def process_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def fleet_repo(repo: Path, names: list[str]) -> None:
    """A repository with no deployments and every device listed (nothing to reconcile)."""
    repo.mkdir(parents=True)
    listed = "".join(f"  {name}: {{}}\n" for name in names)
    (repo / "devices.yaml").write_text(f"admission: listed\ndevices:\n{listed}")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git_commit_all(repo, "a listed fleet")


# -- a simulator process: `bench/idle.py --serve-fleet URL FIRST COUNT` -------------------------


def serve_fleet(url: str, first: int, count: int, data: Path) -> None:
    """Start `count` devices registering with `url`; print their URLs; run until stdin closes."""
    from gitops_orchestrator.simulator.fleet import Fleet

    async def main() -> None:
        async with Fleet(orchestrator_url=url, data_dir=data) as fleet:
            names = [f"dev{number:05d}" for number in range(first, first + count)]
            devices = []
            for start in range(0, count, 500):  # batches: one uvicorn server each
                devices += await fleet.add(names=names[start : start + 500])
            # Thousands of registrations at once time some out, and a supervisor never retries
            # (it would wait for its renewal, 900 s); the bench sends those once more.
            for _ in range(5):
                unregistered = [d for d in devices if not d.registrations]
                for first_of in range(0, len(unregistered), 200):
                    batch = unregistered[first_of : first_of + 200]
                    await asyncio.gather(*(d.register_self() for d in batch))
            print(json.dumps([d.url for d in devices]), flush=True)
            await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin

    asyncio.run(main())


@dataclass
class FleetProcess:
    process: subprocess.Popen[bytes]
    urls: list[str]


@contextlib.contextmanager
def fleet_processes(
    url: str, count: int, per_process: int, workdir: Path
) -> Iterator[list[FleetProcess]]:
    started: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for index, first in enumerate(range(0, count, per_process)):
            log = (workdir / f"fleet{index}.log").open("wb")
            logs.append(log)
            size = min(per_process, count - first)
            data = workdir / f"fleet{index}"
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve-fleet",
                        url,
                        str(first),
                        str(size),
                        str(data),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    cwd=ROOT,
                )
            )
        fleets = []
        for process in started:
            assert process.stdout is not None
            timer = threading.Timer(300.0, process.kill)  # a bounded start
            timer.start()
            line = process.stdout.readline()
            timer.cancel()
            if not line:
                raise RuntimeError(f"a simulator did not start: see {workdir}/fleet*.log")
            fleets.append(FleetProcess(process, json.loads(line)))
        yield fleets
    finally:
        for process in started:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for log in logs:
            log.close()


# -- the baseline ------------------------------------------------------------------------------


def raw_cpu_per_sweep(urls: list[str], rounds: int = 3) -> float:
    """CPU seconds of this process for one raw sweep of `urls` (the best of `rounds`)."""
    best = float("inf")
    for _ in range(rounds):
        before = own_cpu()
        asyncio.run(raw_health(urls, DEFAULTS.health_concurrency))
        best = min(best, own_cpu() - before)
    return best


# -- one fleet size ------------------------------------------------------------------------------


@dataclass
class Idle:
    devices: int
    online_after: float
    window: float
    orchestrator_cpu: float
    simulators_cpu: float
    raw_sweep_cpu: float
    problems: list[str]

    @property
    def share(self) -> float:
        return self.orchestrator_cpu / self.window

    @property
    def raw_share(self) -> float:
        return self.raw_sweep_cpu / DEFAULTS.health_interval


def idle_cost(workdir: Path, count: int, *, idle: float, per_process: int) -> Idle:
    names = [f"dev{number:05d}" for number in range(count)]
    repo = workdir / "repo"
    fleet_repo(repo, names)
    raise_fd_limit(min(20000, 4 * per_process + 4096))
    log = workdir / "serve.log"
    with orchestrator(repo, workdir / "data", log) as running:
        started = time.perf_counter()
        with fleet_processes(running.url, count, per_process, workdir) as fleets:

            def online() -> bool:
                running.alive()
                rows = running.query("SELECT COUNT(*) FROM devices WHERE state = 'online'")
                return bool(rows) and rows[0][0] == count

            wait_for(online, f"{count} devices online", 600, poll=0.5)
            online_after = time.perf_counter() - started
            time.sleep(DEFAULTS.health_interval)  # the first sweeps register; let them pass
            problems = problems_in(log)
            pids = [fleet.process.pid for fleet in fleets]
            before = running.cpu(), sum(process_cpu(pid) for pid in pids)
            # For a profiler attached from outside (py-spy record -p PID).
            print(f"idle window of {idle:g} s: orchestrator pid {running.process.pid}",
                  file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(idle)
            orchestrator_cpu = running.cpu() - before[0]
            simulators_cpu = sum(process_cpu(pid) for pid in pids) - before[1]
            urls = [url for fleet in fleets for url in fleet.urls]
            raw = raw_cpu_per_sweep(urls)
    return Idle(count, online_after, idle, orchestrator_cpu, simulators_cpu, raw, problems)


def report(result: Idle) -> str:
    per_check = result.orchestrator_cpu / (
        result.devices * result.window / DEFAULTS.health_interval
    )
    return (
        f"{result.devices:>6} devices: orchestrator {result.share * 100:5.1f} % of one core "
        f"({per_check * 1e6:4.0f} µs CPU per check), raw sockets {result.raw_share * 100:4.1f} % "
        f"({result.raw_sweep_cpu / result.devices * 1e6:4.0f} µs), ratio "
        f"{result.share / result.raw_share:4.1f}x; simulators "
        f"{result.simulators_cpu / result.window * 100:5.1f} %; "
        f"all online after {result.online_after:.0f} s; {len(result.problems)} warnings"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1000,4000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, s")
    parser.add_argument("--per-process", type=int, default=PER_PROCESS)
    parser.add_argument("--serve-fleet", nargs=4, metavar=("URL", "FIRST", "COUNT", "DATA"))
    options = parser.parse_args()
    if options.serve_fleet:
        url, first, count, data = options.serve_fleet
        serve_fleet(url, int(first), int(count), Path(data))
        return
    print(
        f"load average before: {os.getloadavg()[0]:.2f}; "
        f"health interval {DEFAULTS.health_interval:g} s"
    )
    for count in (int(item) for item in options.devices.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-idle-") as folder:
            result = idle_cost(
                Path(folder), count, idle=options.idle, per_process=options.per_process
            )
        print(report(result), flush=True)
        for problem in result.problems[:3]:
            print("    " + problem[:200])


if __name__ == "__main__":
    main()
