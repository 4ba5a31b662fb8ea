"""Device benchmarks: log intake, health sweeps over a simulated fleet, mDNS discovery latency.

    .venv/bin/python bench/devices.py [--requests 5000] [--devices 1000] [--rounds 5]

(a) Log intake: `POST /device/logs` (form field `logData`, lines spread over 100 device names
    per run so the per-device rate limit keeps them) against the real app (`web.app.create_app`
    over `Store.open(tmp)`, `LogSink` flushing to SQLite) and against a bare Starlette route
    that parses the same form and answers 200. Each is its own uvicorn process on 127.0.0.1,
    served the same way and loaded by the same client (a process of its own: asyncio, fixed
    concurrency, raw keep-alive HTTP/1.1), alternately for a few rounds. The client's own
    ceiling is measured against a null server (answers without any HTTP framework). Also: the
    real app as `orchestrator.run` configures uvicorn (its default logging), the real app with
    a log table at its steady size (N devices' full rings), new connections per line (what the
    supervisor's `requests.post` does), the latency of `GET /healthz` and of an uncached `GET
    /api/v1/devices` (it reads the store) idle and during a flood, the cost of one request
    inside the process (no server), and one flush against the size of the log table.
(b) Health sweeps: N simulated devices (`Fleet`, in a process of its own) recorded with
    `store.upsert_device`; `HealthChecker.sweep()` with the default settings and an httpx client
    built as `orchestrator.run` builds it, beside the same client GETting `/health` of every
    device with the same concurrency and no store work (and a raw-socket floor). Steady sweeps,
    steady sweeps once the health history is full (`health_history` checks per device), the
    first sweep (devices that do not know us: each is registered; a registration takes 10 ms
    here), and one sweep during an outage (60 % of the devices hang); the steady and outage
    sweeps also with httpx's default pool (100 connections), which `orchestrator.run` used
    before commit f52ca8b.
(c) Discovery latency, inside a network namespace of our own (`unshare --net`, loopback with
    multicast; skipped when not root): `Discovery` on 127.0.0.1 with a real store and
    `Introducer`, simulated devices advertised on 127.0.0.1 one after the other; from the
    first announcement on the wire (sniffed) to the device row being written. Nothing is ever
    multicast outside that namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asgi  # noqa: E402  (bench/ is on the path: run as a script)
import httpx  # noqa: E402
import uvicorn  # noqa: E402

from gitops_orchestrator import devices, logformat, orchestrator, running  # noqa: E402
from gitops_orchestrator.discovery import Discovery  # noqa: E402
from gitops_orchestrator.fleetdb import DeviceRecord, Event, HealthCheck, LogEntry  # noqa: E402
from gitops_orchestrator.health import HealthChecker  # noqa: E402
from gitops_orchestrator.logs import LogSink  # noqa: E402
from gitops_orchestrator.settings import (  # noqa: E402
    DeviceSettings,
    DiscoverySettings,
    LogSettings,
    WebSettings,
)
from gitops_orchestrator.store import Store  # noqa: E402
from gitops_orchestrator.supervisor import SupervisorClient  # noqa: E402

MS = 1000.0
NAMES = 100  # device names per load run: 100 x 100 burst = 10,000 lines before any limiting
# Log lines come from these known devices (`dev0`...), registered at 127.0.0.1 in the real
# servers' stores: the orchestrator keeps logs of known devices only (issue 12).
KNOWN = 1000
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>; not in Python's socket module
CLOSED_URL = "http://127.0.0.1:9"  # "our" URL for devices: nothing listens (discard port)
# Requests timed while the log endpoint is flooded: (server, path). A new `limit` each time
# misses the API's answer cache, so the answer is built: it waits for the store's lock.
PROBES = [("bare", "/healthz"), ("real", "/healthz"), ("real", "/api/v1/devices?limit={n}"),
          ("real, full rings", "/api/v1/devices?limit={n}")]  # fmt: skip
REGISTER_DELAY = 0.01  # seconds a device takes to answer `/register` in (b), see _SlowLogs


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def device_client() -> httpx.AsyncClient:
    """The device client as `orchestrator.run` builds it (orchestrator.py, since f52ca8b)."""
    return httpx.AsyncClient(
        timeout=orchestrator.DEVICE_TIMEOUT, follow_redirects=False, trust_env=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
    )  # fmt: skip


def log_line(name: str, number: int) -> str:
    """One `logData` JSON as the supervisor sends it (simulator.reporting.log_record)."""
    return json.dumps({
        "timestamp": f"2026-11-28 12:00:00,{number % 1000:03d}", "loglevel": "INFO",
        "message": f"bench line {number} from {name}", "funcName": "bench",
        "deviceName": name, "deviceIP": "127.0.0.1",
    })  # fmt: skip


def log_request(name: str, number: int, *, close: bool = False) -> bytes:
    body = ("logData=" + quote(log_line(name, number), safe="")).encode()
    head = (
        "POST /device/logs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


# The servers of (a), each run as `bench/devices.py --serve real|bare|null ...`.


class _Nothing:
    def trigger(self) -> None: ...


def serve(kind: str, port: int, control_port: int, data: Path, prefill: int, log: str) -> None:
    asyncio.run(_serve(kind, port, control_port, data, prefill, log))


async def _serve(
    kind: str, port: int, control_port: int, data: Path, prefill: int, log: str
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from gitops_orchestrator.web import app as web_app

    counts: Counter[str] = Counter()
    store: Store | None = None
    client: httpx.AsyncClient | None = None
    if kind == "null":
        server = await asyncio.get_running_loop().create_server(
            lambda: _NullHttp(counts), "127.0.0.1", port
        )
        control = await _control_server(control_port, counts, None, server.close)
        async with server, control:
            with contextlib.suppress(asyncio.CancelledError):
                await server.serve_forever()
        return
    if kind == "real":
        store = await asyncio.to_thread(Store.open, data)
        await asyncio.to_thread(known_devices, store)
        sink = LogSink(store)
        counts = sink.counts
        if prefill:
            rings = max(1, prefill // sink.settings.log_ring)  # full rings of this many devices
            await asyncio.to_thread(fill_logs, store, prefill, "old", rings)
        client = device_client()
        services = web_app.Services(
            store=store, repo="bench", branch="main", fetch=_Nothing(),
            introducer=devices.Introducer(store, SupervisorClient(client), CLOSED_URL),
            runner=running.Runner(store, SupervisorClient(client)), logs=sink,
            background=[sink.run],
        )  # fmt: skip
        application: Any = web_app.create_app(services)
    else:

        async def logs_route(request: Request) -> Response:
            body = await request.body()
            values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=16)
            counts["accepted" if values.get("logData") else "malformed"] += 1
            return Response(b'{"status":"ok"}', media_type="application/json")

        async def healthz(request: Request) -> Response:
            return Response(b'{"status":"ok"}', media_type="application/json")

        application = Starlette(
            routes=[
                Route("/device/logs", logs_route, methods=["POST"]),
                Route("/healthz", healthz),
            ]
        )
    options: dict[str, Any] = {"log_level": "warning", "access_log": False}
    if log == "orchestrator":  # as orchestrator.run at its default level
        options = logformat.uvicorn_options(LogSettings())
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, lifespan="on",
        timeout_graceful_shutdown=5, **options,
    )  # fmt: skip
    web = _QuietServer(config)

    def stop() -> None:
        web.should_exit = True

    control = await _control_server(control_port, counts, store, stop)
    try:
        async with control:
            await web.serve()
    finally:
        if client is not None:
            await client.aclose()
        if store is not None:
            store.close()


class _QuietServer(uvicorn.Server):
    """uvicorn.Server without signal handling: the parent stops us through the control port."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _control_server(
    port: int, counts: Counter[str], store: Store | None, stop: Callable[[], None]
) -> asyncio.Server:
    """`counts` answers the sink's counters (and the log rows), `stop` stops the server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = (await reader.readline()).decode().strip()
        answer: dict[str, Any] = dict(counts)
        if command == "counts" and store is not None:
            answer["rows"] = await asyncio.to_thread(_log_rows, store)
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()
        if command == "stop":
            stop()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def _log_rows(store: Store) -> int:
    with store._lock:  # read-only peek for the report; no public count of log rows
        row = store._db.execute("SELECT COUNT(*) FROM device_logs").fetchone()
    return int(row[0])


class _NullHttp(asyncio.Protocol):
    """Answers each HTTP/1.1 request with 200 and a fixed body: the client's ceiling."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.counts["accepted"] += 1
            self.transport.write(self.ANSWER + b'{"status":"ok"}')
            if b"connection: close" in head:
                self.transport.close()
                return


class ServerProcess:
    """One server of (a) in a process of its own, stopped (and waited for) on exit."""

    def __init__(self, kind: str, workdir: Path, *, prefill: int = 0, log: str = "quiet") -> None:
        self.kind, self.port, self.control_port = kind, free_port(), free_port()
        data = workdir / f"data-{kind}-{log}-{prefill}"
        self.stderr = (workdir / f"server-{kind}-{log}-{prefill}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(self.port),
             "--control-port", str(self.control_port), "--data", str(data),
             "--prefill", str(prefill), "--log", log],
            stdout=subprocess.DEVNULL, stderr=self.stderr, cwd=ROOT,
        )  # fmt: skip

    def wait_ready(self, bound: float = 300.0) -> None:
        deadline = time.monotonic() + bound
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: see {self.stderr.name}")
            with contextlib.suppress(OSError):
                if http_status("127.0.0.1", self.port, "/healthz") == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} server did not start")
            time.sleep(0.05)

    def counts(self) -> dict[str, int]:
        return control(self.control_port, "counts")

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                control(self.control_port, "stop")
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.stderr.close()


def control(port: int, command: str) -> dict[str, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(command.encode() + b"\n")
        answer = conn.makefile("rb").readline()
    result: dict[str, int] = json.loads(answer)
    return result


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_status(host: str, port: int, path: str, timeout: float = 5.0) -> int:
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        first = conn.makefile("rb").readline()
    return int(first.split()[1])


class Prober:
    """`GET path` over one keep-alive connection, timed; reconnects when it breaks."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path  # `{n}` in it: a number that changes at each probe (no cached answer)
        self.count = 0
        self.conn: socket.socket | None = None

    def probe(self) -> float:
        started = time.perf_counter()
        if self.conn is None:
            self.conn = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.file = self.conn.makefile("rb")
        try:
            self.count += 1
            path = self.path.format(n=self.count % 500 + 1)
            self.conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status = int(self.file.readline().split()[1])
            length = 0
            while (line := self.file.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.file.read(length)
        except (OSError, IndexError, ValueError):
            self.close()
            raise
        if status != 200:
            raise RuntimeError(f"{self.path} answered {status}")
        return time.perf_counter() - started

    def close(self) -> None:
        if self.conn is not None:
            self.file.close()
            self.conn.close()
            self.conn = None


# The load client of (a), run as `bench/devices.py --load ...` in a process of its own.


def load(
    port: int, requests: int, seconds: float, connections: int, prefix: str, close: bool
) -> None:
    result = asyncio.run(_load(port, requests, seconds, connections, prefix, close))
    print("BENCH " + json.dumps(result), flush=True)


async def _load(
    port: int, requests: int, seconds: float, connections: int, prefix: str, close: bool
) -> dict[str, Any]:
    """`requests` log POSTs (or as many as fit in `seconds`) with `connections` in flight."""
    bodies = [log_request(f"dev{i % KNOWN}", i, close=close) for i in range(KNOWN)]
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    sent = 0
    deadline = time.perf_counter() + seconds if seconds else float("inf")

    def take() -> bytes | None:
        nonlocal sent
        if (requests and sent >= requests) or time.perf_counter() >= deadline:
            return None
        sent += 1
        return bodies[sent % len(bodies)]

    async def answer(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        lower = head.lower()
        at = lower.find(b"content-length:")
        length = int(lower[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        await reader.readexactly(length)
        return status

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while (body := take()) is not None:
                begin = time.perf_counter()
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    assert reader is not None
                    writer.write(body)
                    statuses[await answer(reader)] += 1
                    latencies.append(time.perf_counter() - begin)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors[type(exc).__name__] += 1
                    close_now = True
                else:
                    close_now = close
                if close_now and writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return {
        "requests": sum(statuses.values()), "seconds": elapsed,
        "statuses": {str(k): v for k, v in statuses.items()}, "errors": dict(errors),
        "p50": percentile(latencies, 0.5) if latencies else None,
        "p99": percentile(latencies, 0.99) if latencies else None, "cpu": used,
    }  # fmt: skip


class LoadRun:
    """One run of the load client against a server process; its figures once finished."""

    def __init__(
        self, server: ServerProcess, prefix: str, *, requests: int = 0, seconds: float = 0.0,
        connections: int, close: bool = False,
    ) -> None:  # fmt: skip
        self.server = server
        self.before_counts = server.counts()
        self.before_cpu = server.cpu()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--load", "--port", str(server.port),
             "--requests", str(requests), "--seconds", str(seconds),
             "--connections", str(connections), "--prefix", prefix,
             *(["--close"] if close else [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        self.bound = 60.0 + seconds + requests / 200.0

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self) -> dict[str, Any]:
        try:
            out, err = self.process.communicate(timeout=self.bound)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise TimeoutError("the load client did not finish") from None
        server_cpu = self.server.cpu() - self.before_cpu
        lines = [line for line in out.splitlines() if line.startswith("BENCH ")]
        if self.process.returncode != 0 or not lines:
            raise RuntimeError(f"the load client failed:\n{err}")
        result: dict[str, Any] = json.loads(lines[-1][6:])
        result["rate"] = result["requests"] / result["seconds"]
        result["server_cpu"] = server_cpu / result["seconds"]
        result["client_cpu"] = result["cpu"] / result["seconds"]
        result["counts"] = self.counts_after()
        return result

    def counts_after(self) -> dict[str, int]:
        """What the server counted for this run, once its buffer is written (bounded wait)."""
        deadline = time.monotonic() + 15.0
        while True:
            after = self.server.counts()
            if after.get("written", 0) >= after.get("accepted", 0):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return {k: v - self.before_counts.get(k, 0) for k, v in after.items()}


def intake(
    workdir: Path, requests: int, rounds: int, connections: int, devices_count: int
) -> dict[str, Any]:
    """(a) over HTTP: rates of each server, alternately; /healthz latency idle and flooded."""
    prefill = devices_count * DeviceSettings().log_ring
    servers = {
        "null": ServerProcess("null", workdir),
        "bare": ServerProcess("bare", workdir),
        "real": ServerProcess("real", workdir),
        "real, access log": ServerProcess("real", workdir, log="orchestrator"),
        "real, full rings": ServerProcess("real", workdir, prefill=prefill),
    }
    results: dict[str, Any] = {"runs": {}, "probes": {}}
    try:
        for server in servers.values():
            server.wait_ready()
        results["prefill"] = servers["real, full rings"].counts()["rows"]
        for number, server in enumerate(servers.values()):  # warm-up, not counted
            LoadRun(server, f"w{number}-", requests=min(requests, 500),
                    connections=connections).finish()  # fmt: skip
        for round_number in range(rounds):
            for number, (name, server) in enumerate(servers.items()):
                run = LoadRun(server, f"r{round_number}s{number}-", requests=requests,
                              connections=connections).finish()  # fmt: skip
                results["runs"].setdefault(name, []).append(run)
            for number, name in enumerate(("bare", "real")):
                run = LoadRun(servers[name], f"c{round_number}s{number}-", requests=requests,
                              connections=connections, close=True).finish()  # fmt: skip
                results["runs"].setdefault(f"{name}, new connection per line", []).append(run)
        for name, path in PROBES:
            results["probes"][(name, path)] = probe_latency(servers[name], path, connections)
    finally:
        for server in servers.values():
            server.stop()
    return results


def probe_latency(
    server: ServerProcess, path: str, connections: int, seconds: float = 4.0
) -> dict[str, Any]:
    """`GET path` latencies idle, then while the load client floods the log endpoint."""
    prober = Prober(server.port, path)
    try:
        for _ in range(20):  # warm-up
            prober.probe()
        idle = []
        for _ in range(200):
            idle.append(prober.probe())
            time.sleep(0.005)
        flood = LoadRun(server, f"flood{server.port}-", seconds=seconds, connections=connections)
        time.sleep(0.3)  # the flood is in full swing
        flooded = []
        until = time.perf_counter() + seconds - 0.6
        while time.perf_counter() < until and flood.running():
            flooded.append(prober.probe())
            time.sleep(0.005)
        run = flood.finish()
    finally:
        prober.close()
    return {"idle": idle, "flooded": flooded, "flood": run}


def known_devices(store: Store) -> list[DeviceRecord]:
    """`dev0`... `dev999` recorded online at 127.0.0.1, where the load's lines come from."""
    now = time.time()
    records = [
        DeviceRecord(
            device=f"dev{i}", url=f"http://127.0.0.1:{10000 + i}", addresses=("127.0.0.1",),
            port=10000 + i, interfaces=(), platform={}, origin="registered", state="online",
            introduced_at=now, online_since=now, last_seen=now,
        )
        for i in range(KNOWN)
    ]  # fmt: skip
    for record in records:
        store.upsert_device(record)
    return records


# (a) inside the process: what one request costs without a server, and one flush.


async def asgi_cost(
    app: Any, requests: int, prefix: str, between: Callable[[], Awaitable[None]]
) -> float:
    """Best-of-3 seconds per `POST /device/logs`, calling the ASGI app directly."""
    async with asgi.lifespan(app) as state:

        async def send(message: dict[str, Any]) -> None:
            pass

        def call(body: bytes) -> Awaitable[None]:
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": "POST", "scheme": "http", "path": "/device/logs",
                     "raw_path": b"/device/logs", "query_string": b"", "root_path": "",
                     "headers": [(b"host", b"127.0.0.1"),
                                 (b"content-type", b"application/x-www-form-urlencoded"),
                                 (b"content-length", str(len(body)).encode())],
                     "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
                     "state": dict(state)}  # fmt: skip

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            return app(scope, receive, send)  # type: ignore[no-any-return]

        best = float("inf")
        for repetition in range(4):  # the first one warms up
            count = requests // 50 + 1  # fresh known names each time: no rate limit reached
            names = [f"dev{(repetition * count + i) % KNOWN}" for i in range(count)]
            bodies = [
                ("logData=" + quote(log_line(names[i // 50], i), safe="")).encode()
                for i in range(requests)
            ]
            begin = time.perf_counter()
            for body in bodies:
                await call(body)
            best = min(best, (time.perf_counter() - begin) / requests)
            await between()
        return best


def in_process(workdir: Path, requests: int) -> dict[str, float]:
    """Seconds per log POST: real app, its routes without middleware, bare, the sink alone."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from gitops_orchestrator.web import app as web_app
    from gitops_orchestrator.web import logs as web_logs

    store = Store.open(workdir / "in-process")
    try:
        records = known_devices(store)
        sink = LogSink(store)
        sink.know(records)
        services = web_app.Services(
            store=store, repo="bench", branch="main", fetch=_Nothing(),
            introducer=devices.Introducer(store, SupervisorClient(httpx.AsyncClient()), CLOSED_URL),
            runner=running.Runner(store, SupervisorClient(httpx.AsyncClient())), logs=sink,
        )  # fmt: skip
        real = web_app.create_app(services)
        routes_only = Starlette(routes=real.routes, lifespan=real.router.lifespan_context)

        async def logs_route(request: Request) -> Response:
            body = await request.body()
            parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=16).get("logData")
            return Response(b'{"status":"ok"}', media_type="application/json")

        bare = Starlette(routes=[Route("/device/logs", logs_route, methods=["POST"])])
        endpoint = web_logs.device_logs(sink, max_body=WebSettings().max_log_body)
        one_route = Starlette(routes=[Route("/device/logs", endpoint, methods=["POST"])])

        async def flushed() -> None:
            await sink.flush()

        async def measure() -> dict[str, float]:
            costs = {
                "real app": await asgi_cost(real, requests, "a", flushed),
                "real routes, no middleware": await asgi_cost(routes_only, requests, "b", flushed),
                "real endpoint as only route": await asgi_cost(one_route, requests, "d", flushed),
                "bare": await asgi_cost(bare, requests, "c", flushed),
            }
            lines = [log_line(f"dev{(i // 50) % KNOWN}", i) for i in range(requests)]
            best = float("inf")
            for repetition in range(4):
                fresh = LogSink(store)
                fresh.know(records)
                begin = time.perf_counter()
                for line in lines:
                    fresh.accept(line, peer="127.0.0.1")
                best = min(best, (time.perf_counter() - begin) / requests)
                assert fresh.counts["accepted"] == requests, (repetition, fresh.counts)
            costs["LogSink.accept alone"] = best
            return costs

        return asyncio.run(measure())
    finally:
        store.close()


def fill_logs(store: Store, rows: int, prefix: str, devices_count: int = NAMES) -> None:
    """`rows` log rows over `devices_count` names (`prefix0...`), through `store.add_logs`."""
    ring = DeviceSettings().log_ring
    now = time.time()
    for start in range(0, rows, 50_000):
        batch = [
            LogEntry(f"{prefix}{i % devices_count}", now, "INFO", f"old line {i}",
                     {"message": f"old line {i}", "deviceName": f"{prefix}{i % devices_count}"})
            for i in range(start, min(rows, start + 50_000))
        ]  # fmt: skip
        store.add_logs(batch, keep=ring)


def flush_cost(workdir: Path, devices_count: int, batch: int = 400) -> list[tuple[int, float]]:
    """Seconds of one `store.add_logs` of `batch` entries, by rows already in the table."""
    ring = DeviceSettings().log_ring
    store = Store.open(workdir / "flush")
    figures = []
    try:
        rows = 0
        for target in (0, NAMES * ring, devices_count * ring):
            if target > rows:
                fill_logs(store, target - rows, "old", devices_count)
                rows = target
            best = float("inf")
            for repetition in range(3):
                entries = [
                    LogEntry(f"new{repetition}-{i % NAMES}", time.time(), "INFO", "a line",
                             {"message": "a line"})
                    for i in range(batch)
                ]  # fmt: skip
                begin = time.perf_counter()
                store.add_logs(entries, keep=ring)
                best = min(best, time.perf_counter() - begin)
            figures.append((_log_rows(store), best))
    finally:
        store.close()
    return figures


# (b) health sweeps over a fleet in a process of its own (`--serve fleet`).


def serve_fleet(count: int) -> None:
    """The fleet of (b); stdin lines `hang <names>` / `clear` switch faults, EOF stops it."""
    from gitops_orchestrator.simulator.device import Fault
    from gitops_orchestrator.simulator.fleet import Fleet

    async def main() -> None:
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(commands), os.fdopen(sys.stdin.fileno(), "rb")
        )
        async with Fleet() as fleet:
            started = await fleet.add(count)
            print(json.dumps([[d.name, d.host, d.port] for d in started]), flush=True)
            while line := (await commands.readline()).decode().split():  # EOF: parent is done
                for device in fleet:
                    if line[0] == "clear":
                        device.fault = None
                hung = set(line[1].split(",")) if line[0] == "hang" else set()
                for device in fleet:
                    if device.name in hung:
                        device.fault = Fault.HANG
                print("ok", flush=True)

    asyncio.run(main())


class FleetProcess:
    def __init__(self, process: subprocess.Popen[bytes], devices: list[tuple[str, str, int]]):
        self.process = process
        self.devices = devices

    def command(self, *words: str) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(" ".join(words).encode() + b"\n")
        self.process.stdin.flush()
        timer = threading.Timer(30.0, self.process.kill)  # bounded
        timer.start()
        answer = self.process.stdout.readline()
        timer.cancel()
        if answer.strip() != b"ok":
            raise RuntimeError(f"the fleet did not take {words[0]!r}: {answer!r}")


@contextlib.contextmanager
def fleet_process(workdir: Path, count: int) -> Iterator[FleetProcess]:
    log = (workdir / "fleet.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "fleet", "--devices", str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = threading.Timer(120.0, process.kill)  # bounded start
        ready.start()
        line = process.stdout.readline()
        ready.cancel()
        if not line:
            raise RuntimeError(f"the fleet did not start: see {log.name}")
        devices_list = [(name, host, port) for name, host, port in json.loads(line)]
        yield FleetProcess(process, devices_list)
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def sweeps(workdir: Path, count: int, rounds: int, hanging: int) -> dict[str, Any]:
    """(b); `hanging` percent of the devices hang in the last sweeps (0: not measured)."""
    with fleet_process(workdir, count) as fleet:
        return asyncio.run(_sweeps(workdir, fleet, rounds, hanging))


class _SlowLogs(asyncio.Protocol):
    """Our log endpoint as registered devices see it: answers each POST after `REGISTER_DELAY`.

    A supervisor POSTs a log line to us (and waits) before it answers `/register`, so this is
    how long each registration takes here, as it would with a network round trip.
    """

    def __init__(self) -> None:
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(self.buffer) >= end + 4 + length:
            self.buffer = b""
            answer = _NullHttp.ANSWER + b'{"status":"ok"}'
            asyncio.get_running_loop().call_later(REGISTER_DELAY, self._answer, answer)

    def _answer(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()


async def _sweeps(workdir: Path, fleet: FleetProcess, rounds: int, hanging: int) -> dict[str, Any]:
    settings = DeviceSettings()
    store = await asyncio.to_thread(Store.open, workdir / "health-data")
    logs_server = await asyncio.get_running_loop().create_server(_SlowLogs, "127.0.0.1", 0)
    public_url = f"http://127.0.0.1:{logs_server.sockets[0].getsockname()[1]}"
    # As orchestrator.run builds it (no pool limit, 20 kept alive), and as it did before
    # f52ca8b (httpx's default pool: 100 connections), for comparison.
    client = device_client()
    pooled = httpx.AsyncClient(
        timeout=orchestrator.DEVICE_TIMEOUT, follow_redirects=False, trust_env=False
    )
    supervisor = SupervisorClient(client)
    checker = HealthChecker(store, supervisor, public_url, settings=settings)
    pooled_checker = HealthChecker(store, SupervisorClient(pooled), public_url, settings=settings)
    urls = [f"http://{host}:{port}" for _, host, port in fleet.devices]
    figures: dict[str, Any] = {"concurrency": settings.health_concurrency}
    try:
        now = time.time()
        for name, host, port in fleet.devices:
            record = DeviceRecord(
                device=name, url=f"http://{host}:{port}", addresses=(host,), port=port,
                interfaces=("print",), platform={}, origin="bench", state="online",
                introduced_at=now, online_since=now, last_seen=now,
            )  # fmt: skip
            await asyncio.to_thread(store.upsert_device, record, event=Event("introduced", name))

        async def baseline(using: SupervisorClient = supervisor) -> float:
            gate = asyncio.Semaphore(settings.health_concurrency)

            async def one(url: str) -> None:
                async with gate:
                    await using.health(
                        url, forwarded_for=checker.forwarded_for, timeout=settings.health_timeout
                    )

            begin = time.perf_counter()
            await asyncio.gather(*(one(url) for url in urls))
            return time.perf_counter() - begin

        async def sweep(using: HealthChecker = checker) -> float:
            begin = time.perf_counter()
            results = await using.sweep()
            elapsed = time.perf_counter() - begin
            failed = [r for r in results if not r.check.ok]
            if len(results) != len(urls) or failed:
                raise RuntimeError(f"{len(failed)} of {len(results)} checks failed: {failed[:3]}")
            return elapsed

        await baseline()  # warm-up: connections, the fleet's first answers
        await baseline(pooled_checker.supervisor)
        # The devices do not know us yet: each is registered after its check.
        figures["first sweep"] = await sweep()
        figures["registers, one after the other"] = await _timed(
            _sequential(supervisor.register(url, public_url) for url in urls)
        )
        gate = asyncio.Semaphore(settings.health_concurrency)

        async def gated(call: Awaitable[None]) -> None:
            async with gate:
                await call

        figures["registers, concurrent"] = await _timed(
            asyncio.gather(*(gated(supervisor.register(url, public_url)) for url in urls))
        )
        for key in ("baseline", "steady", "raw", "pooled baseline", "pooled steady"):
            figures[key] = []
        for _ in range(rounds):
            figures["baseline"].append(await baseline())
            figures["steady"].append(await sweep())
            figures["raw"].append(await raw_health(urls, settings.health_concurrency))
            figures["pooled baseline"].append(await baseline(pooled_checker.supervisor))
            figures["pooled steady"].append(await sweep(pooled_checker))
        await asyncio.to_thread(fill_health, store, settings.health_history)
        figures["history rows"] = await asyncio.to_thread(_health_rows, store)
        figures["baseline, full history"], figures["full history"] = [], []
        for _ in range(rounds):
            figures["baseline, full history"].append(await baseline())
            figures["full history"].append(await sweep())
        records = await asyncio.to_thread(store.devices)
        checks = [HealthCheck(r.device, time.time(), True, {"cpuUsage": 1.0}) for r in records]
        figures["record_health, full history"] = await _timed(
            asyncio.to_thread(store.record_health, checks, records, keep=settings.health_history)
        )
        if hanging:
            both = {"as built": checker, "pooled": pooled_checker}
            figures["hanging"] = await _hanging(fleet, both, hanging)
    finally:
        await client.aclose()
        await pooled.aclose()
        logs_server.close()
        store.close()
    return figures


async def _hanging(
    fleet: FleetProcess, checkers: dict[str, HealthChecker], percent: int
) -> dict[str, Any]:
    """One sweep with `percent` % of the devices hanging: how long, and healthy ones failed."""
    hung = {
        name for number, (name, _, _) in enumerate(fleet.devices) if number * 37 % 100 < percent
    }
    figures: dict[str, Any] = {"hung": len(hung)}
    for label, checker in checkers.items():
        await asyncio.to_thread(fleet.command, "hang", ",".join(sorted(hung)))
        try:
            begin = time.perf_counter()
            results = await checker.sweep()
            elapsed = time.perf_counter() - begin
        finally:
            await asyncio.to_thread(fleet.command, "clear")
        wrongly = [r for r in results if not r.check.ok and r.record.device not in hung]
        figures[label] = {
            "seconds": elapsed, "healthy failed": len(wrongly),
            "example": wrongly[0].check.error if wrongly else None,
        }  # fmt: skip
        await asyncio.sleep(1.0)  # released requests drain
    return figures


async def _timed(work: Awaitable[Any]) -> float:
    begin = time.perf_counter()
    await work
    return time.perf_counter() - begin


async def _sequential(calls: Iterator[Awaitable[None]]) -> None:
    for call in calls:
        await call


async def raw_health(urls: list[str], concurrency: int) -> float:
    """The floor: `GET /health` of every device over raw sockets, a connection each."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        async with gate:
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(
                    f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 127.0.0.1\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                answer = await reader.read()
            finally:
                writer.close()
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{url}/health: {answer[:60]!r}")

    begin = time.perf_counter()
    await asyncio.gather(*(one(url) for url in urls))
    return time.perf_counter() - begin


def fill_health(store: Store, history: int) -> None:
    """`history` checks for every device, as `history` sweeps would have recorded them."""
    records = store.devices()
    now = time.time()
    for sweep_number in range(history):
        at = now - (history - sweep_number) * 10.0
        checks = [HealthCheck(r.device, at, True, {"cpuUsage": 1.0}) for r in records]
        store.record_health(checks, records, keep=history)


def _health_rows(store: Store) -> int:
    with store._lock:  # read-only peek for the report
        return int(store._db.execute("SELECT COUNT(*) FROM health_checks").fetchone()[0])


# (c) discovery latency, run as `bench/devices.py --in-netns discovery` inside `unshare --net`.


class _TimedStore(Store):
    """The real store, noting when each device row was first written."""

    written: dict[str, float]

    def upsert_device(self, record: DeviceRecord, *, event: Event | None = None) -> None:
        super().upsert_device(record, event=event)
        self.written.setdefault(record.device, time.perf_counter())


class _Sniffer:
    """Listens to mDNS on loopback: when each instance's first response (announcement) flew."""

    def __init__(self) -> None:
        from zeroconf import DNSIncoming

        self._incoming = DNSIncoming
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._sock.bind(("", 5353))
        group = socket.inet_aton("224.0.0.251") + socket.inet_aton("127.0.0.1")
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
        self._sock.settimeout(0.2)
        # Kernel receive times (CLOCK_REALTIME), moved onto perf_counter's clock: a thread's
        # own clock reading lags behind the event loop that got the same packet.
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._offset = time.time() - time.perf_counter()
        self._thread = threading.Thread(target=self._listen, name="mdns-sniffer", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(9000, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.perf_counter()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    at = seconds + nanoseconds / 1e9 - self._offset
            with contextlib.suppress(Exception):
                incoming = self._incoming(data)
                if incoming.is_response():
                    for answer in incoming.answers():
                        instance = answer.name.lower()
                        if answer.type == 12:  # PTR: the instance is what it points to
                            instance = answer.alias.lower()  # type: ignore[attr-defined]
                        self.first.setdefault(instance, at)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def in_netns_discovery(rounds: int, host_netns: int) -> None:
    """Only ever run inside a fresh network namespace: checked before anything is opened."""
    import ifaddr

    if os.stat("/proc/self/ns/net").st_ino == host_netns:
        raise SystemExit("refusing to multicast: not in a network namespace of our own")
    for setting in (["up"], ["multicast", "on"]):
        subprocess.run(["ip", "link", "set", "lo", *setting], check=True, timeout=10)
    names = sorted(adapter.name for adapter in ifaddr.get_adapters())
    if names != ["lo"]:
        raise SystemExit(f"refusing to multicast: this namespace has {names}")
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as folder:
        result = asyncio.run(_discovery(Path(folder), rounds))
    print("BENCH " + json.dumps(result), flush=True)


async def _discovery(workdir: Path, rounds: int) -> dict[str, Any]:
    from gitops_orchestrator.simulator.fleet import Fleet

    store = await asyncio.to_thread(_TimedStore.open, workdir / "data")
    store.written = {}
    noted: dict[str, float] = {}
    introducing: dict[str, float] = {}

    class TimedDiscovery(Discovery):
        def note(self, service_name: str, change: Any) -> None:
            noted.setdefault(service_name.lower(), time.perf_counter())
            super().note(service_name, change)

    class TimedIntroducer(devices.Introducer):
        async def introduce(self, name: str, **options: Any) -> DeviceRecord | None:
            introducing.setdefault(name, time.perf_counter())
            return await super().introduce(name, **options)

    client = device_client()
    introducer = TimedIntroducer(store, SupervisorClient(client), CLOSED_URL)
    found = TimedDiscovery(
        "127.0.0.1", introducer=introducer, store=store, wake=lambda: None,
        resolve_timeout=DiscoverySettings().resolve_timeout,
    )  # fmt: skip
    sniffer = _Sniffer()
    fleet = Fleet(mdns_interfaces=["127.0.0.1"])
    samples = []
    try:
        await found.start()
        await asyncio.sleep(0.5)  # the browser's first queries are out
        for number in range(rounds):
            name = f"bench{number}-{os.getpid()}"
            service = f"{name}._webthing._tcp.local."
            called = time.perf_counter()
            await fleet.add(names=[name])
            returned = time.perf_counter()
            deadline = time.monotonic() + 15.0
            while name not in store.written:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} was not discovered within 15 s")
                await asyncio.sleep(0.005)
            row = store.written[name]
            announced = sniffer.first.get(service)
            samples.append({
                "announced": None if announced is None else row - announced,
                "add_called": row - called, "add_returned": row - returned,
                "browser_event": None if announced is None else noted[service] - announced,
                "to_introduce": introducing[name] - noted[service],
                "introduce": row - introducing[name],
            })  # fmt: skip
            await asyncio.sleep(0.3)
    finally:
        await found.close()
        await fleet.close()
        await client.aclose()
        sniffer.close()
        store.close()
    return {"samples": samples}


def discovery_latency(rounds: int) -> dict[str, Any]:
    """(c) in a child process under `unshare --net`; a reason string when it cannot run."""
    if os.geteuid() != 0:
        return {"skipped": "needs root to create a network namespace (unshare --net)"}
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return {"skipped": "needs unshare(1) and ip(8)"}
    host_netns = os.stat("/proc/self/ns/net").st_ino
    argv = ["unshare", "--net", "--", sys.executable, __file__, "--in-netns", "discovery",
            "--discoveries", str(rounds), "--host-netns", str(host_netns)]  # fmt: skip
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60 + 20 * rounds, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"skipped": "the discovery run did not finish in time"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        return {"skipped": f"the discovery run failed ({done.returncode}): {done.stderr[-2000:]}"}
    result: dict[str, Any] = json.loads(lines[-1][6:])
    return result


# Report.


def ms(value: float) -> str:
    return f"{value * MS:8.1f} ms"


def report_intake(results: dict[str, Any], connections: int) -> None:
    runs = results["runs"]
    rates = {name: [r["rate"] for r in done] for name, done in runs.items()}
    print(
        f"(a) POST /device/logs, {connections} connections, {len(rates['bare'])} rounds "
        "(best round, its CPU use and p50; then every round)"
    )
    for name, values in rates.items():
        best = max(runs[name], key=lambda r: r["rate"])
        base = max(rates["bare, new connection per line" if "new" in name else "bare"])
        print(
            f"    {name:34s} {best['rate']:7.0f} req/s {best['rate'] / base:5.2f}x bare  "
            f"server CPU {best['server_cpu'] * 100:4.0f} %  "
            f"client CPU {best['client_cpu'] * 100:3.0f} %  p50 {best['p50'] * MS:5.1f} ms  "
            f"[{', '.join(f'{v:.0f}' for v in values)}]"
        )
    for name, done in runs.items():
        bad = [
            (r["statuses"], r["errors"])
            for r in done
            if set(r["statuses"]) != {"200"} or r["errors"]
        ]
        if bad:
            print(f"    !! {name}: answers other than 200 or errors: {bad}")
    for name in ("real", "real, access log", "real, full rings", "real, new connection per line"):
        totals: Counter[str] = Counter()
        for run in runs.get(name, []):
            totals.update({k: v for k, v in run["counts"].items() if k != "rows"})
        listed = ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
        print(f"    LogSink.counts, {name:30s} {listed}")
    print(f"    (full rings: {results['prefill']} rows in device_logs before the first run)")
    for (name, path), probes in results["probes"].items():
        idle, flooded = probes["idle"], probes["flooded"]
        print(
            f"    GET {path:26s} on {name:16s} idle p50 {ms(statistics.median(idle))}  flooded "
            f"({probes['flood']['rate']:.0f} req/s): p50 {ms(statistics.median(flooded))} "
            f"p95 {ms(percentile(flooded, 0.95))} max {ms(max(flooded))} "
            f"mean {ms(statistics.mean(flooded))} ({len(flooded)} probes)"
        )


def report_sweeps(figures: dict[str, Any], options: argparse.Namespace) -> None:
    median = statistics.median
    base, steady = median(figures["baseline"]), median(figures["steady"])
    pooled_base, pooled = median(figures["pooled baseline"]), median(figures["pooled steady"])
    full, full_base = median(figures["full history"]), median(figures["baseline, full history"])
    print(
        f"(b) health sweep over {options.devices} simulated devices "
        f"(health_concurrency {figures['concurrency']}), median of {options.rounds}"
    )
    rows = [
        ("baseline: same client, GET /health only", base, ""),
        ("floor: raw sockets, GET /health only", median(figures["raw"]), ""),
        ("sweep, steady", steady, f"{steady / base:5.2f}x baseline"),
        (
            f"sweep, full history ({figures['history rows']} rows)",
            full,
            f"{full / full_base:5.2f}x its baseline ({ms(full_base).strip()})",
        ),
        ("  of which record_health alone", figures["record_health, full history"], ""),
        (
            "httpx's default pool (100): baseline",
            pooled_base,
            f"{pooled_base / base:5.2f}x orchestrator.run's client",
        ),
        ("httpx's default pool (100): sweep", pooled, f"{pooled / pooled_base:5.2f}x its baseline"),
        (
            f"first sweep (registers, {REGISTER_DELAY * MS:.0f} ms each)",
            figures["first sweep"],
            f"{figures['first sweep'] / base:5.2f}x baseline",
        ),
        ("  registering all one after the other", figures["registers, one after the other"], ""),
        ("  registering all concurrently", figures["registers, concurrent"], ""),
    ]
    for label, value, note in rows:
        print(f"    {label:42s} {ms(value)}   {note}")
    if "hanging" in figures:
        hanging = figures["hanging"]
        print(f"    one sweep with {hanging['hung']} devices hanging (health_timeout 5 s):")
        for label in ("as built", "pooled"):
            done = hanging[label]
            client = "orchestrator.run's client" if label == "as built" else "httpx's default pool"
            print(
                f"      {client:26s} {ms(done['seconds'])}   healthy devices failed: "
                f"{done['healthy failed']}" + (f" ({done['example']})" if done["example"] else "")
            )


def report_discovery(result: dict[str, Any]) -> None:
    if "skipped" in result:
        print(f"(c) discovery latency: skipped: {result['skipped']}")
        return
    samples = result["samples"]
    print(f"(c) mDNS discovery on loopback in a network namespace, {len(samples)} devices")
    for key, label in (
        ("announced", "first announcement -> device row"),
        ("add_called", "fleet.add() called -> device row"),
        ("add_returned", "fleet.add() returned -> device row"),  # after the 3rd announcement
        ("browser_event", "  announcement -> browser event"),
        ("to_introduce", "  browser event -> introduce()"),
        ("introduce", "  introduce() -> device row"),
    ):
        values = [s[key] for s in samples if s[key] is not None]
        if values:
            print(
                f"    {label:36s} p50 {ms(statistics.median(values))}   "
                f"p95 {ms(percentile(values, 0.95))}   max {ms(max(values))}"
            )
    print("    target: under 2 s from the announcement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="log POSTs per run")
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices for (b)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (a) and (b)")
    parser.add_argument("--connections", type=int, default=32, help="requests in flight, (a)")
    parser.add_argument("--discoveries", type=int, default=10, help="devices discovered, (c)")
    parser.add_argument(
        "--hang-percent", type=int, default=60, help="(b): devices hanging in an outage (0: skip)"
    )
    parser.add_argument("--only", choices=["a", "b", "c"], action="append")
    # Internal: the processes this benchmark starts.
    parser.add_argument(
        "--serve", choices=["real", "bare", "null", "fleet"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--control-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prefill", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--log", default="quiet", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="d", help=argparse.SUPPRESS)
    parser.add_argument("--close", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--in-netns", choices=["discovery"], help=argparse.SUPPRESS)
    parser.add_argument("--host-netns", type=int, default=0, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve == "fleet":
        serve_fleet(options.devices)
        return
    if options.serve:
        serve(options.serve, options.port, options.control_port, options.data, options.prefill,
              options.log)  # fmt: skip
        return
    if options.load:
        load(options.port, options.requests, options.seconds, options.connections,
             options.prefix, options.close)  # fmt: skip
        return
    if options.in_netns == "discovery":
        in_netns_discovery(options.discoveries, options.host_netns)
        return
    parts = set(options.only or ["a", "b", "c"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks
    with tempfile.TemporaryDirectory(prefix="bench-devices-") as folder:
        workdir = Path(folder)
        if "a" in parts:
            results = intake(
                workdir, options.requests, options.rounds, options.connections, options.devices
            )
            report_intake(results, options.connections)
            costs = in_process(workdir, options.requests)
            print(f"    in the process, per POST ({options.requests} requests, best of 3):")
            for name, cost in costs.items():
                print(f"      {name:28s} {cost * 1e6:7.1f} µs")
            print("    one flush (store.add_logs of 400 entries) by rows already in the table:")
            for rows, cost in flush_cost(workdir, options.devices):
                print(f"      {rows:9d} rows  {ms(cost)}")
        if "b" in parts:
            figures = sweeps(workdir, options.devices, options.rounds, options.hang_percent)
            report_sweeps(figures, options)
        if "c" in parts:
            report_discovery(discovery_latency(options.discoveries))


if __name__ == "__main__":
    main()
