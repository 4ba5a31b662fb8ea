"""API benchmark: requests per second of `GET /api/v1/devices` with 1,000 devices.

    .venv/bin/python bench/api.py [--devices 1000] [--seconds 5] [--rounds 3] [--connections 32]

A store (SQLite on disk, in a temporary folder) gets the sample repository's commit and N
device rows (`store.upsert_device`). Two servers run as processes on 127.0.0.1, each one
uvicorn worker with the same options:
- the real app (`web.app.create_app` over that store, with its middleware and every route; no
  background loops, so nothing writes while we measure);
- a bare Starlette app with one route answering the same bytes the real app answered.
Both are loaded by the same client (`wrk` when installed, else a small keep-alive asyncio
client), alternately for a few rounds; the best round of each counts. The ratio real/bare
is the figure (target at least 0.8). Also measured:
- the cost of one request inside the process, without any HTTP server (the ASGI app called
  directly, lifespan run as uvicorn runs it): real, real without its middleware, and bare;
  this is where a gap between the two servers comes from, and it is far less noisy;
- one uncached build of the answer, and the overview and devices pages (uncached: a fresh
  query string misses the page cache; cached: the same URL again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asgi  # noqa: E402  (bench/ is on the path: run as a script)

from gitops_orchestrator import manifests, repo  # noqa: E402
from gitops_orchestrator.fleetdb import DeviceRecord  # noqa: E402
from gitops_orchestrator.store import Store  # noqa: E402

PATH = "/api/v1/devices"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@localhost",
           "PATH": "/usr/bin:/bin:/usr/local/bin"}  # fmt: skip
INTERFACES = ("fd_write", "fd_read", "path_open", "takeImageStaticSize", "random_get")
MS = 1000.0


# The two servers (run as `bench/api.py --serve real|bare ...` in their own processes).


class _Nothing:
    def trigger(self) -> None: ...

    def submit(self, name: str, **options: Any) -> None: ...

    def accept(self, raw: str | None, *, peer: str | None) -> None: ...

    async def run(self, deployment: str, **options: Any) -> Any:
        raise RuntimeError("not in the benchmark")


def _serve(kind: str, source: Path, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from gitops_orchestrator.web import app as web_app

    if kind == "bare":
        body = source.read_bytes()

        async def devices(request: Request) -> Response:
            return Response(body, media_type="application/json")

        app: Any = Starlette(routes=[Route(PATH, devices), Route("/healthz", devices)])
    else:
        store = Store.open(source)
        nothing = _Nothing()
        services = web_app.Services(
            store=store,
            repo=str(source),
            branch="main",
            fetch=nothing,
            introducer=nothing,
            runner=nothing,
            logs=nothing,
        )
        app = web_app.create_app(services)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                ws="none", lifespan="on")  # fmt: skip


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(kind: str, source: Path) -> Iterator[Server]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(source), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} server did not start: {process.stderr}")
            time.sleep(0.05)
        yield Server(url, process.pid)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
        if "Traceback" in errors:
            print(f"    the {kind} server failed:\n{errors[-2000:]}")


# Load generators: wrk, or a keep-alive asyncio client with the same concurrency.


def load(url: str, *, seconds: float, connections: int) -> tuple[float, int]:
    """Requests per second of GET `url` for `seconds`, `connections` at a time, and how many."""
    if shutil.which("wrk"):
        done = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
        count = re.search(r"(\d+) requests in", done.stdout)
        if rate is None or count is None or "Non-2xx" in done.stdout:
            raise RuntimeError(f"wrk: {done.stdout}")
        return float(rate.group(1)), int(count.group(1))
    return asyncio.run(_asyncio_load(url, seconds=seconds, connections=connections))


async def _asyncio_load(url: str, *, seconds: float, connections: int) -> tuple[float, int]:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    stop = time.monotonic() + seconds
    counts = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        count = 0
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            count += 1
        counts.append(count)
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return sum(counts) / (time.monotonic() - started), sum(counts)


# The store.


def fill(data: Path, work: Path, devices: int) -> None:
    sample = work / "repo"
    shutil.copytree(ROOT / "sample-repo", sample)
    for args in (["init", "--quiet", "--initial-branch=main"], ["add", "--all"],
                 ["commit", "--quiet", "-m", "sample"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=sample, env=GIT_ENV, check=True, capture_output=True)
    store = Store.open(data)
    try:
        with repo.tree_at(sample, "HEAD") as tree:
            store.record_commit(tree.info(), manifests.load(tree), read=tree.read, now=time.time())
        now = time.time()
        for index in range(devices):
            address = f"127.{1 + index // 250}.{index % 250}.{1 + index % 7}"
            store.upsert_device(
                DeviceRecord(
                    device=f"device-{index:04d}",
                    url=f"http://{address}:5000",
                    addresses=(address,),
                    port=5000,
                    interfaces=INTERFACES,
                    platform={
                        "cpu": {"architecture": "armv7l", "clockSpeed": {"Hz": 1.5e9}},
                        "memory": {"bytes": 1 << 30},
                    },
                    origin="registered",
                    state="online" if index % 10 else "offline",
                    introduced_at=now - 3600,
                    online_since=now - 1800,
                    last_seen=now,
                    health={"cpuUsage": 0.25, "memoryUsage": 0.5},
                    checked_at=now,
                )
            )
    finally:
        store.close()


async def asgi_cost(app: Any, path: str, requests: int) -> float:
    """Best-of-3 seconds per GET `path`, calling the ASGI app directly (no server, no sockets)."""
    async with asgi.lifespan(app) as state:

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        def scope() -> dict[str, Any]:
            return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                    "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                    "query_string": b"", "root_path": "", "headers": [(b"host", b"127.0.0.1")],
                    "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
                    "state": dict(state)}  # fmt: skip

        best = float("inf")
        for _ in range(4):  # the first round warms the caches up
            begin = time.perf_counter()
            for _ in range(requests):
                await app(scope(), receive, send)
            best = min(best, (time.perf_counter() - begin) / requests)
        return best


def in_process(data: Path, body: bytes, requests: int) -> dict[str, float]:
    """Seconds per request of the real app, the real routes alone, and the bare app."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from gitops_orchestrator.web import app as web_app

    async def devices(request: Request) -> Response:
        return Response(body, media_type="application/json")

    store = Store.open(data)
    try:
        nothing = _Nothing()
        services = web_app.Services(
            store=store, repo=str(data), branch="main", fetch=nothing, introducer=nothing,
            runner=nothing, logs=nothing,
        )  # fmt: skip
        real = web_app.create_app(services)
        bare_routes = Starlette(routes=real.routes, lifespan=real.router.lifespan_context)
        apps = {"real": real, "real, no middleware": bare_routes,
                "bare": Starlette(routes=[Route(PATH, devices)])}  # fmt: skip
        return {name: asyncio.run(asgi_cost(app, PATH, requests)) for name, app in apps.items()}
    finally:
        store.close()


def timed(client: httpx.Client, path: str, runs: int, *, fresh: bool) -> float:
    """Median seconds of GET `path`; `fresh` adds a query the cache has not seen."""
    times = []
    for run in range(runs):
        url = path + (
            ("&" if "?" in path else "?") + f"bench={time.time_ns()}-{run}" if fresh else ""
        )
        started = time.perf_counter()
        answer = client.get(url)
        times.append(time.perf_counter() - started)
        answer.raise_for_status()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000, help="per in-process round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "SOURCE", "PORT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    options = parser.parse_args()
    if options.serve:
        kind, source, port = options.serve
        _serve(kind, Path(source), int(port))
        return

    generator = "wrk -t1" if shutil.which("wrk") else "asyncio client (wrk not installed)"
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
        work = Path(folder)
        data = work / "data"
        fill(data, work, options.devices)
        with server("real", data) as real:
            answer = httpx.get(real.url + PATH)
            answer.raise_for_status()
            assert answer.json()["total"] == options.devices
            (work / "answer.json").write_bytes(answer.content)
            with server("bare", work / "answer.json") as bare:
                assert httpx.get(bare.url + PATH).content == answer.content
                print(f"(a) GET {PATH} ({len(answer.content):,} bytes: {options.devices:,} "
                      f"devices, the first page of 100), {generator}, {options.connections} "
                      f"connections, {options.seconds:g} s x {options.rounds} rounds")  # fmt: skip
                for each in (real, bare):  # warm up (and fill the real app's answer cache)
                    load(each.url + PATH, seconds=1, connections=options.connections)
                rates: dict[str, list[float]] = {"real": [], "bare": []}
                cpu: dict[str, list[float]] = {"real": [], "bare": []}
                for _ in range(options.rounds):
                    for name, each in (("real", real), ("bare", bare)):
                        used = each.cpu()
                        rate, count = load(each.url + PATH, seconds=options.seconds,
                                           connections=options.connections)  # fmt: skip
                        rates[name].append(rate)
                        cpu[name].append((each.cpu() - used) / count)
            best = {name: max(found) for name, found in rates.items()}
            least = {name: min(found) for name, found in cpu.items()}
            for name in ("real", "bare"):
                rounds = ", ".join(f"{rate:,.0f}" for rate in rates[name])
                print(f"    {name:<5} best {best[name]:9,.0f} req/s   server CPU "
                      f"{least[name] * 1e6:5.0f} us/request   (rounds: {rounds})")  # fmt: skip
            print(f"    ratio real/bare {best['real'] / best['bare']:.2f} in req/s, "
                  f"{least['bare'] / least['real']:.2f} in server CPU per request "
                  f"(target at least 0.8)")  # fmt: skip

            costs = in_process(data, answer.content, options.requests)
            print(f"(b) One request inside the process (no HTTP server), best of 3 x "
                  f"{options.requests:,}")  # fmt: skip
            for name, seconds in costs.items():
                print(f"    {name:<20} {seconds * 1e6:6.1f} us")
            with httpx.Client(base_url=real.url, timeout=30) as client:
                print(f"(c) Uncached and cached answers, median of 9 (ms), "
                      f"{options.devices:,} devices")  # fmt: skip
                for label, path in (("GET /api/v1/devices", PATH),
                                    ("GET /api/v1/devices?limit=500", PATH + "?limit=500"),
                                    ("page /", "/"),
                                    ("page /devices", "/devices"),
                                    ("page /devices?limit=500", "/devices?limit=500")):  # fmt: skip
                    cold = timed(client, path, 9, fresh=True)
                    warm = timed(client, path, 9, fresh=False)
                    print(f"    {label:<30} uncached {cold * MS:7.1f}   cached {warm * MS:6.2f}")


if __name__ == "__main__":
    main()
