"""Reconcile benchmarks: commit-to-deploy latency, cold convergence of a fleet, one planning pass.

    .venv/bin/python bench/reconcile.py [--devices 1000] [--deployments 300] [--commits 20]
                                        [--plan-devices 10000] [--plan-deployments 1000]

(a) A `serve` process follows a local copy of sample-repo; three simulated devices (a
    `FleetThread` in this process) register with it. Each commit gives `fibo` a new binary,
    which changes the deploy body of `fibo-chain` on sup1 (its digest-pinned URL). We time
    from `git commit` returning to that body's `POST /deploy` arriving at sup1 (and being
    acknowledged), beside the sync alone: until the commit is desired in the orchestrator's
    SQLite file (polled read-only from here), and until `GET /api/v1/sync`, asked once then,
    answers it.
(b) A generated repository (30 modules, N deployments of 1-3 free steps, `devices.yaml`
    listing every device) is served by a fresh `serve` process; N simulated devices start in
    this process and register. We time until every device is online, every step placed and
    every body acknowledged (`deploy_statuses` all `synced`, read from the SQLite file), and
    split the CPU time of that window between this process (the simulator) and the
    orchestrator (/proc/<pid>/stat); then the CPU of both over an idle window (`--idle`).
    A run that does not converge within `--bound` seconds says how far it got, and the
    command exits 1 after (c).
(c) One planning pass in memory (`place` with the previous placement, `deploy_bodies`,
    `plan` against `applied` digests equal to the desired ones: no actions) for a large
    generated fleet and snapshot, against `json.dumps` of every resulting body; best of
    `--runs` runs each.
Everything runs in temporary folders on loopback (127.0.0.1); no mDNS (`--mdns-interfaces
none`), no other network.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sync import write_step_modules  # noqa: E402  (bench/ is on the path: run as a script)

from gitops_orchestrator.core import bodies, placement, planning  # noqa: E402
from gitops_orchestrator.models import (  # noqa: E402
    Deployment,
    Devices,
    DeviceState,
    DeviceView,
    FileFacts,
    Inspection,
    LoadedModule,
    Module,
    Snapshot,
    WasmImport,
)
from gitops_orchestrator.simulator.device import DEFAULT_INTERFACES, SimulatedDevice  # noqa: E402
from gitops_orchestrator.simulator.fleet import FleetThread  # noqa: E402

SERVE = [str(ROOT / ".venv" / "bin" / "gitops-orchestrator"), "serve"]
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@localhost",
           "PATH": "/usr/bin:/bin:/usr/local/bin"}  # fmt: skip
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MS = 1000.0


def git(path: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=path, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def git_commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wait_for(condition: Callable[[], Any], what: str, bound: float, poll: float = 0.001) -> Any:
    """Poll `condition` until it is truthy (its value is returned); TimeoutError after `bound`."""
    deadline = time.monotonic() + bound
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {bound:g} s waiting for {what}")
        time.sleep(poll)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files to `wanted` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
        if soft < wanted:
            raise RuntimeError(f"need {wanted} open files, the hard limit is {hard}")
    return soft


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


# -- the orchestrator process ----------------------------------------------------------------


@dataclass
class Orchestrator:
    process: subprocess.Popen[bytes]
    url: str
    data: Path
    log: Path

    def cpu(self) -> float:
        """utime + stime of the process, in seconds, from /proc."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of `sql` from the orchestrator's SQLite file, opened read-only."""
        database = self.data / "orchestrator.sqlite3"
        if not database.exists():
            return []
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            db.close()

    def alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the orchestrator exited with {self.process.returncode}:\n{tail}")


@contextlib.contextmanager
def orchestrator(repo: Path, data: Path, log: Path) -> Iterator[Orchestrator]:
    """A `serve` process on a free loopback port following `repo`; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Its device client trusts the environment: no proxy may see loopback calls.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    # No mDNS: devices register themselves; nothing may leave loopback.
    command = [*SERVE, "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
               "--public-url", url, "--data-dir", str(data),
               "--mdns-interfaces", "none"]  # fmt: skip
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    running = Orchestrator(process, url, data, log)
    try:
        with httpx.Client(trust_env=False, timeout=1) as client:

            def answers() -> bool:
                running.alive()
                try:
                    return client.get(url + "/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(answers, "the orchestrator to listen", 30, poll=0.05)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def problems_in(log: Path) -> list[str]:
    """Tracebacks, errors and warnings the orchestrator logged (access lines aside)."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if line.startswith(("ERROR", "WARNING", "Traceback"))]


# -- (a) commit -> POST /deploy --------------------------------------------------------------

LATENCY_DEVICES = """admission: listed
devices:
  sup1: {labels: {room: kitchen}}
  sup2: {labels: {room: hallway}}
  sup3: {labels: {room: garage}}
"""


@dataclass
class Arrival:
    arrived: float
    answered: float
    raw: bytes
    status: int


@dataclass
class DeployWatch:
    """Timestamps every `POST /deploy` a device receives (wraps its `deploy` method)."""

    arrivals: list[Arrival] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def install(self, fleet: FleetThread, device: SimulatedDevice) -> None:
        original = device.deploy

        async def deploy(raw: bytes, content_type: str | None) -> tuple[int, Any]:
            arrived = time.perf_counter()  # the body has been read: the request is here
            status, answer = await original(raw, content_type)
            with self.changed:
                self.arrivals.append(Arrival(arrived, time.perf_counter(), raw, status))
                self.changed.notify_all()
            return status, answer

        fleet.call(setattr, device, "deploy", deploy)

    def wait(self, needle: bytes, bound: float) -> Arrival:
        """The first deploy whose body contains `needle` (TimeoutError after `bound`)."""

        def found() -> Arrival | None:
            return next((a for a in self.arrivals if needle in a.raw), None)

        with self.changed:
            if not self.changed.wait_for(found, timeout=bound):
                raise TimeoutError(f"no POST /deploy with {needle!r} within {bound:g} s")
            arrival = found()
        assert arrival is not None
        return arrival


def fibo_binary(constant: int) -> bytes:
    return bytes(
        wasmtime.wat2wasm(
            '(module (func (export "fibo") (param i32) (result i32)'
            f" (i32.add (local.get 0) (i32.const {constant}))))"
        )
    )


def all_synced(running: Orchestrator) -> bool:
    rows = running.query("SELECT status FROM deploy_statuses")
    return bool(rows) and all(status == "synced" for (status,) in rows)


def commit_to_deploy(workdir: Path, commits: int) -> tuple[dict[str, list[float]], list[str]]:
    repo = workdir / "latency-repo"
    shutil.copytree(ROOT / "sample-repo", repo)
    (repo / "devices.yaml").write_text(LATENCY_DEVICES)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git_commit_all(repo, "start")
    figures: dict[str, list[float]] = {"sync": [], "api": [], "arrived": [], "answered": []}
    with contextlib.ExitStack() as stack:
        running = stack.enter_context(
            orchestrator(repo, workdir / "latency-data", workdir / "latency.log")
        )
        fleet = stack.enter_context(
            FleetThread(orchestrator_url=running.url, data_dir=workdir / "latency-devices")
        )
        client = stack.enter_context(httpx.Client(trust_env=False, timeout=5))
        watch = DeployWatch()
        [sup1, *_] = fleet.add(names=["sup1", "sup2", "sup3"])
        watch.install(fleet, sup1)
        wait_for(lambda: all_synced(running) and running.query(
            "SELECT 1 FROM deploy_statuses WHERE device = 'sup1' AND deployment = 'fibo-chain'"
        ), "the first rollout", 60, poll=0.02)  # fmt: skip
        desired = git(repo, "rev-parse", "HEAD")
        initial = len(watch.arrivals)

        database = f"file:{running.data / 'orchestrator.sqlite3'}?mode=ro"
        db = stack.enter_context(contextlib.closing(sqlite3.connect(database, uri=True)))

        def desired_in_sqlite() -> str:
            sha: str = db.execute("SELECT desired_sha FROM sync_state").fetchone()[0]
            return sha

        for number in range(commits):
            binary = fibo_binary(1000 + number)
            digest = hashlib.sha256(binary).hexdigest()
            (repo / "modules/fibo/fibo.wasm").write_bytes(binary)
            subprocess.run(
                ["git", "commit", "--quiet", "-am", f"fibo {number}"], cwd=repo, env=GIT_ENV,
                check=True,
            )  # fmt: skip
            committed = time.perf_counter()
            # SQLite is polled from here (no load on the orchestrator's loop); the API is asked
            # once, right after: it answers while the reconcile pass runs.
            wait_for(lambda previous=desired: desired_in_sqlite() != previous, "the sync", 30)
            figures["sync"].append(time.perf_counter() - committed)
            state = client.get(running.url + "/api/v1/sync").json()
            figures["api"].append(time.perf_counter() - committed)
            arrival = watch.wait(f"digest={digest}".encode(), bound=30)
            figures["arrived"].append(arrival.arrived - committed)
            figures["answered"].append(arrival.answered - committed)
            if arrival.status != 200:
                raise RuntimeError(f"sup1 answered the deploy with {arrival.status}")
            sha = git(repo, "rev-parse", "HEAD")
            if state["desired"]["sha"] != sha or desired_in_sqlite() != sha:
                raise RuntimeError(f"desired is {state['desired']['sha']}, not {sha}")
            desired = sha
            # The pass records its outcome after the answer: start the next commit after it.
            wait_for(lambda raw=arrival.raw: _fibo_applied(running, body=raw), "the record", 30)
        if len(watch.arrivals) - initial != commits:
            extra = len(watch.arrivals) - initial
            raise RuntimeError(f"sup1 got {extra} deploys for {commits} commits")
        problems = problems_in(running.log)
    return figures, problems


def _fibo_applied(running: Orchestrator, *, body: bytes) -> bool:
    wanted = bodies.body_digest(json.loads(body))
    rows = running.query(
        "SELECT body_digest FROM applied WHERE device = 'sup1' AND deployment = 'fibo-chain'"
    )
    return rows == [(wanted,)] and all_synced(running)


# -- (b) cold convergence ----------------------------------------------------------------------


def generate_fleet_repo(repo: Path, devices: list[str], deployments: int, modules: int) -> int:
    """Modules with distinct binaries and free 1-3 step deployments; the number of steps."""
    rng = random.Random(42)
    write_step_modules(repo, [f"m{number:03d}" for number in range(modules)])
    (repo / "deployments").mkdir()
    steps = 0
    for number in range(deployments):
        name = f"d{number:04d}"
        count = rng.randint(1, 3)
        steps += count
        # A deployment calls each module function once: distinct modules.
        sequence = "".join(
            f"  - {{module: m{module:03d}, function: step}}\n"
            for module in rng.sample(range(modules), count)
        )
        (repo / "deployments" / f"{name}.yaml").write_text(f"name: {name}\nsequence:\n{sequence}")
    listed = "".join(f"  {name}: {{}}\n" for name in devices)
    (repo / "devices.yaml").write_text(f"admission: listed\ndevices:\n{listed}")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git_commit_all(repo, "generated")
    return steps


@dataclass
class Convergence:
    registered: float
    known: float
    converged: float
    bench_cpu: float
    orchestrator_cpu: float
    idle: float
    idle_bench_cpu: float
    idle_orchestrator_cpu: float
    bodies: int
    deploy_requests: int
    accepted: int
    devices_used: int
    most_steps: int
    median_steps: float
    """Over every device of the fleet, those without a step included."""
    unregistered: int
    problems: list[str]


class NotConverged(RuntimeError):
    """(b) timed out; the message says how far the fleet got."""


def converged(running: Orchestrator, steps: int) -> bool:
    placed = running.query("SELECT COUNT(*) FROM step_placements WHERE status = 'placed'")
    if not placed or placed[0][0] != steps:
        return False
    [(pairs,)] = running.query(
        "SELECT COUNT(*) FROM (SELECT DISTINCT deployment, device FROM step_placements)"
    )
    [(statuses, synced)] = running.query(
        "SELECT COUNT(*), COALESCE(SUM(status = 'synced'), 0) FROM deploy_statuses"
    )
    return bool(statuses == synced == pairs)


def progress(running: Orchestrator, count: int, steps: int) -> str:
    """How far the orchestrator got, from its SQLite file."""
    online = running.query("SELECT COUNT(*) FROM devices WHERE state = 'online'")
    placed = running.query("SELECT COUNT(*) FROM step_placements WHERE status = 'placed'")
    synced = running.query("SELECT COUNT(*) FROM deploy_statuses WHERE status = 'synced'")
    online, placed, synced = (rows[0][0] if rows else 0 for rows in (online, placed, synced))
    return (
        f"{online} of {count} devices online, {placed} of {steps} steps placed, "
        f"{synced} bodies synced"
    )


def cold_convergence(
    workdir: Path, count: int, deployments: int, *, bound: float, idle: float
) -> Convergence:
    names = [f"dev{number:04d}" for number in range(count)]
    repo = workdir / "fleet-repo"
    steps = generate_fleet_repo(repo, names, deployments, modules=30)
    # A listening socket per device, both ends of each connection in this process and the
    # orchestrator's, module files, SQLite: 4 per device is ample.
    raise_fd_limit(4 * count + 1024)
    log = workdir / "fleet.log"
    with orchestrator(repo, workdir / "fleet-data", log) as running:

        def desired() -> bool:
            running.alive()
            rejected = running.query("SELECT problems FROM commits WHERE status = 'rejected'")
            if rejected:
                raise RuntimeError(f"the generated commit was rejected: {rejected[0][0][:500]}")
            return bool(running.query("SELECT 1 FROM sync_state WHERE desired_sha IS NOT NULL"))

        wait_for(desired, "the generated commit to be desired", 60, poll=0.02)
        with FleetThread(orchestrator_url=running.url, data_dir=workdir / "fleet-devices") as fleet:
            cpu_bench, cpu_orchestrator = own_cpu(), running.cpu()
            started = time.perf_counter()
            fleet.add(names=names)
            registered = time.perf_counter() - started
            unregistered = fleet.call(lambda: sum(not d.registrations for d in fleet.fleet))

            def known() -> bool:
                running.alive()
                rows = running.query("SELECT COUNT(*) FROM devices WHERE state = 'online'")
                return bool(rows) and rows[0][0] == count

            def done() -> bool:
                running.alive()
                return converged(running, steps)

            try:
                wait_for(known, f"{count} devices to be online", bound, poll=0.01)
                known_at = time.perf_counter() - started
                wait_for(done, "every body to be acknowledged", bound - known_at, poll=0.01)
            except TimeoutError as exc:
                found = problems_in(log)
                spent = time.perf_counter() - started
                raise NotConverged(
                    f"{exc}: {progress(running, count, steps)}; CPU over {spent:.0f} s: "
                    f"simulator {own_cpu() - cpu_bench:.1f} s, orchestrator "
                    f"{running.cpu() - cpu_orchestrator:.1f} s; {unregistered} devices had "
                    f"their registration POST fail; the orchestrator logged {len(found)} "
                    f"warnings or errors{', the first: ' + found[0][:300] if found else ''}"
                ) from None
            wall = time.perf_counter() - started
            cpu_bench, cpu_orchestrator = (
                own_cpu() - cpu_bench,
                running.cpu() - cpu_orchestrator,
            )
            problems = problems_in(log)  # only those of the window: shutting down adds more
            idle_bench, idle_orchestrator = own_cpu(), running.cpu()
            time.sleep(idle)
            idle_bench, idle_orchestrator = (
                own_cpu() - idle_bench,
                running.cpu() - idle_orchestrator,
            )

            def requests() -> tuple[int, int, dict[str, set[str]]]:
                every = [r for device in fleet.fleet for r in device.deploy_requests]
                held = {d.name: {str(k) for k in d.deployments} for d in fleet.fleet}
                return len(every), sum(r.accepted for r in every), held

            total, accepted, held = fleet.call(requests)
        rows = running.query("SELECT DISTINCT deployment, device FROM step_placements")
        expected: dict[str, set[str]] = {}
        for deployment, device in rows:
            expected.setdefault(device, set()).add(deployment)
        holding = {name: names for name, names in held.items() if names}
        if holding != expected:
            extra = sum(len(holding.get(n, set()) - expected.get(n, set())) for n in holding)
            missing = sum(len(expected[n] - holding.get(n, set())) for n in expected)
            raise RuntimeError(
                f"the devices do not hold what the orchestrator placed on them: {extra} "
                f"deployments more, {missing} fewer"
            )
        load = running.query(
            "SELECT device, COUNT(*) FROM step_placements WHERE device IS NOT NULL "
            "GROUP BY device ORDER BY 2 DESC"
        )
    return Convergence(
        registered=registered,
        known=known_at,
        converged=wall,
        bench_cpu=cpu_bench,
        orchestrator_cpu=cpu_orchestrator,
        idle=idle,
        idle_bench_cpu=idle_bench,
        idle_orchestrator_cpu=idle_orchestrator,
        bodies=len(rows),
        deploy_requests=total,
        accepted=accepted,
        devices_used=len(load),
        most_steps=load[0][1] if load else 0,
        median_steps=statistics.median([steps_ for _, steps_ in load] + [0] * (count - len(load))),
        unregistered=unregistered,
        problems=problems,
    )


# -- (c) one planning pass ---------------------------------------------------------------------

EXTRA_INTERFACES = ("camera_capture", "gpio_write", "gpio_read", "i2c_read", "servo_set")
ZONES = tuple(f"zone{number}" for number in range(8))
ROOMS = tuple(f"room{number}" for number in range(40))


def _module(name: str, imports: list[str], data: list[str]) -> LoadedModule:
    spec = Module.model_validate(
        {
            "name": name,
            "wasm": f"{name}.wasm",
            "functions": {"step": {"params": ["integer"], "output": "integer"}},
            "data": {file: file for file in data},
        }
    )

    def facts(path: str) -> FileFacts:
        return FileFacts(path, hashlib.sha256(path.encode()).hexdigest(), 100)

    return LoadedModule(
        spec=spec,
        binary=facts(f"modules/{name}/{name}.wasm"),
        inspection=Inspection(
            functions={"step": 1}, imports=tuple(WasmImport("env", i, "func") for i in imports)
        ),
        data={file: facts(f"modules/{name}/{file}") for file in data},
    )


def planning_inputs(
    count: int, deployments: int, *, seed: int = 7
) -> tuple[Snapshot, dict[str, DeviceView]]:
    rng = random.Random(seed)
    wasi = [name for name in DEFAULT_INTERFACES if name.startswith(("fd_", "path_"))]
    modules = [
        _module(
            f"m{number:03d}",
            imports=rng.sample(wasi, rng.randint(0, 3))
            + rng.sample(EXTRA_INTERFACES, rng.choice((0, 0, 0, 1))),
            data=["config.bin"] if number % 5 == 0 else [],
        )
        for number in range(100)
    ]
    fleet: dict[str, DeviceView] = {}
    for number in range(count):
        name = f"dev{number:05d}"
        offered = set(DEFAULT_INTERFACES) if rng.random() < 0.9 else set(rng.sample(wasi, 4))
        offered.update(rng.sample(EXTRA_INTERFACES, rng.randint(0, 3)))
        fleet[name] = DeviceView(
            name=name,
            url=f"http://10.{number // 65536}.{number // 256 % 256}.{number % 256}:5000",
            state=DeviceState.ONLINE if rng.random() < 0.95 else DeviceState.OFFLINE,
            interfaces=frozenset(offered),
            labels={"zone": rng.choice(ZONES), "room": rng.choice(ROOMS)},
            cordoned=rng.random() < 0.01,
            online_since=0.0,
        )
    names = list(fleet)
    parsed = []
    for number in range(deployments):
        sequence = []
        for _ in range(rng.randint(1, 3)):
            step: dict[str, Any] = {"module": rng.choice(modules).name, "function": "step"}
            kind = rng.random()
            if kind < 0.2:
                step["selector"] = {"zone": rng.choice(ZONES)}
            elif kind < 0.25:
                step["device"] = rng.choice(names)
                step["failovers"] = rng.sample(names, 2)
            sequence.append(step)
        parsed.append(Deployment.model_validate({"name": f"d{number:05d}", "sequence": sequence}))
    snapshot = Snapshot(
        commit_sha="0" * 40,
        modules={module.name: module for module in modules},
        deployments={item.name: item for item in parsed},
        devices=Devices(),
    )
    return snapshot, fleet


@dataclass
class PlanningFigures:
    place: float
    bodies: float
    plan: float
    encode: float
    body_count: int
    steps: int
    placed: int


def planning_pass(count: int, deployments: int, runs: int) -> PlanningFigures:
    snapshot, fleet = planning_inputs(count, deployments)
    base_url = "http://10.255.0.1:3000"
    first = placement.place(snapshot, fleet=fleet, previous={}, now=1000.0)
    previous = first.devices()
    desired = bodies.deploy_bodies(snapshot, placement=first, fleet=fleet, base_url=base_url)
    applied = {
        device: {name: bodies.body_digest(body) for name, body in deployments_.items()}
        for device, deployments_ in desired.items()
    }
    names = frozenset(snapshot.deployments)
    best = [float("inf")] * 4
    for _ in range(runs):
        started = time.perf_counter()
        placed = placement.place(snapshot, fleet=fleet, previous=previous, now=1000.0)
        placed_at = time.perf_counter()
        wanted = bodies.deploy_bodies(snapshot, placement=placed, fleet=fleet, base_url=base_url)
        bodies_at = time.perf_counter()
        planned = planning.plan(wanted, applied=applied, fleet=fleet, deployments=names)
        planned_at = time.perf_counter()
        if planned.actions or planned.hold:
            raise RuntimeError(f"a sticky pass planned {len(planned.actions)} actions")
        for body in (body for deployments_ in wanted.values() for body in deployments_.values()):
            json.dumps(body)
        encoded_at = time.perf_counter()
        timings = (placed_at - started, bodies_at - placed_at, planned_at - bodies_at,
                   encoded_at - planned_at)  # fmt: skip
        best = [min(old, new) for old, new in zip(best, timings, strict=True)]
    status = placement.StepStatus.PLACED
    return PlanningFigures(
        place=best[0],
        bodies=best[1],
        plan=best[2],
        encode=best[3],
        body_count=sum(len(deployments_) for deployments_ in desired.values()),
        steps=len(first.steps),
        placed=sum(step.status is status for step in first.steps.values()),
    )


# -- main --------------------------------------------------------------------------------------


def _row(label: str, values: list[float], note: str = "") -> str:
    return (
        f"    {label:<22} p50 {statistics.median(values) * MS:7.1f} ms   "
        f"p95 {percentile(values, 0.95) * MS:7.1f} ms{note}"
    )


def print_latency(figures: Mapping[str, list[float]], problems: list[str], commits: int) -> None:
    print(f"(a) commit -> POST /deploy on a simulated device, local source, {commits} commits")
    print(_row("deploy arrives", figures["arrived"], "   (target p50 under 500 ms)"))
    print(_row("deploy acknowledged", figures["answered"], "   (the device fetched the module)"))
    print(_row("sync baseline", figures["sync"], "   (desired in SQLite)"))
    print(_row("GET /api/v1/sync", figures["api"], "   (asked once it is in SQLite)"))
    ratio = statistics.median(figures["arrived"]) / statistics.median(figures["sync"])
    print(f"    ratio p50              {ratio:7.1f}x   (deploy arrives / sync)")
    if problems:
        print(f"    the orchestrator logged {len(problems)} warnings or errors, e.g.:")
        for line in problems[:3]:
            print(f"        {line[:150]}")


def print_convergence(result: Convergence, count: int, deployments: int) -> None:
    print(f"(b) cold convergence: {count} simulated devices, {deployments} deployments")
    print(f"    devices started, registrations answered {result.registered:8.1f} s"
          f"   ({result.unregistered} registration POSTs failed)")  # fmt: skip
    print(f"    all devices online in the orchestrator  {result.known:8.1f} s")
    print(f"    every body acknowledged (converged)     {result.converged:8.1f} s"
          "   (target under 15 s)")  # fmt: skip
    total = result.bench_cpu + result.orchestrator_cpu
    for label, seconds in (("simulator (this process)", result.bench_cpu),
                           ("orchestrator process", result.orchestrator_cpu)):  # fmt: skip
        print(f"    CPU {label:<25} {seconds:6.1f} s   {seconds / total * 100:5.1f} % of the CPU "
              f"used, {seconds / result.converged * 100:5.1f} % of one core")  # fmt: skip
    print(f"    then idle for {result.idle:g} s: orchestrator "
          f"{result.idle_orchestrator_cpu / result.idle * 100:5.1f} % of one core, simulator "
          f"{result.idle_bench_cpu / result.idle * 100:5.1f} %")  # fmt: skip
    spread = f"steps per device max {result.most_steps}, median {result.median_steps:g}"
    requests = f"{result.deploy_requests} POST /deploy received, {result.accepted} accepted"
    print(f"    {result.bodies} bodies on {result.devices_used} devices: {spread}; {requests}")
    if result.problems:
        print(f"    the orchestrator logged {len(result.problems)} warnings or errors, e.g.:")
        for line in result.problems[:3]:
            print(f"        {line[:150]}")


def print_planning(figures: PlanningFigures, count: int, deployments: int) -> None:
    total = figures.place + figures.bodies + figures.plan
    print(f"(c) one planning pass: {count} devices, {deployments} deployments")
    print(f"    {figures.steps} steps, {figures.placed} placed, {figures.body_count} bodies")
    print(f"    place {figures.place * MS:7.1f} ms + bodies {figures.bodies * MS:7.1f} ms "
          f"+ plan {figures.plan * MS:7.1f} ms = {total * MS:7.1f} ms")  # fmt: skip
    print(f"    json.dumps of every body {figures.encode * MS:7.1f} ms (baseline)")
    print(f"    ratio {total / figures.encode:7.1f}x   (target at most 5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=300)
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--plan-devices", type=int, default=10000)
    parser.add_argument("--plan-deployments", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5, help="runs of (c); the best counts")
    parser.add_argument("--bound", type=float, default=180.0, help="longest wait of (b), s")
    parser.add_argument("--idle", type=float, default=10.0, help="idle window after (b), s")
    options = parser.parse_args()
    # Each simulated device logs its failures; (b) counts them instead.
    logging.getLogger("gitops_orchestrator.simulator").setLevel(logging.ERROR)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as folder:
        workdir = Path(folder)
        figures, problems = commit_to_deploy(workdir, options.commits)
        print_latency(figures, problems, options.commits)
        try:
            result = cold_convergence(
                workdir, options.devices, options.deployments, bound=options.bound,
                idle=options.idle,
            )  # fmt: skip
            print_convergence(result, options.devices, options.deployments)
        except NotConverged as exc:
            failed = True
            print(f"(b) cold convergence of {options.devices} devices FAILED: {exc}")
    planned = planning_pass(options.plan_devices, options.plan_deployments, options.runs)
    print_planning(planned, options.plan_devices, options.plan_deployments)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
