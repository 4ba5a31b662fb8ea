"""Hosting many simulated devices in one process, and the `device` command's entry point.

Each device listens on its own (host, port). One `Fleet.add()` call binds a socket per device
and serves the batch with one uvicorn server (`serving`) and one ASGI app shared by the whole
fleet, which finds the device by the local address of the connection: a thousand devices cost
a thousand sockets, not a thousand servers. The fleet owns what devices share or need from
outside: the data folder (a temporary one unless given; never the working directory), their
HTTP clients and the optional mDNS responder. `FleetThread` runs a fleet for synchronous code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import serving
from .app import Address, DeviceApp
from .device import DEFAULT_INTERFACES, DeviceSettings, Fault, SimulatedDevice
from .mdns import Advertiser

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Fleet:
    """Virtual devices on loopback (or any local address), for tests, demos and benchmarks.

    Use as `async with Fleet() as fleet: devices = await fleet.add(50)`. Options given here
    are the defaults of every `add()`.
    """

    def __init__(
        self,
        *,
        data_dir: Path | str | None = None,
        orchestrator_url: str | None = None,
        interfaces: Sequence[str] = DEFAULT_INTERFACES,
        settings: DeviceSettings | None = None,
        mdns_interfaces: Sequence[str] | None = None,
    ) -> None:
        if mdns_interfaces is not None and not mdns_interfaces:
            raise ValueError("mDNS needs an explicit list of interface addresses")
        self._mdns_interfaces = mdns_interfaces
        self._advertiser: Advertiser | None = None  # made on the loop, at the first add()
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="simulator-")
            data_dir = self._temporary.name
        self.data_dir = Path(data_dir)
        self._orchestrator_url = orchestrator_url
        self._interfaces = interfaces
        self._settings = settings or DeviceSettings()
        # One client per device, all sharing one TLS context (the costly part of a client): a
        # single shared pool slows down quadratically with hundreds of requests in flight.
        self._tls = httpx.create_ssl_context()
        self._clients: list[httpx.AsyncClient] = []
        self.devices: dict[str, SimulatedDevice] = {}
        self._by_address: dict[Address, SimulatedDevice] = {}
        self._by_port: dict[int, SimulatedDevice] = {}  # devices listening on 0.0.0.0
        self._app = DeviceApp(self._find)
        self._servers: list[serving.Server] = []

    def __getitem__(self, name: str) -> SimulatedDevice:
        return self.devices[name]

    def __iter__(self) -> Iterator[SimulatedDevice]:
        return iter(self.devices.values())

    def __len__(self) -> int:
        return len(self.devices)

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def add(
        self,
        count: int = 1,
        *,
        names: Sequence[str] | None = None,
        host: str | Sequence[str] = "127.0.0.1",
        port: int | Sequence[int] = 0,
        orchestrator_url: str | None = None,
        interfaces: Sequence[str] | None = None,
    ) -> list[SimulatedDevice]:
        """Start `count` devices (or one per name) and return them once they all listen.

        `host` and `port` are one value for all or one per device; port 0 picks a free port.
        Devices with an orchestrator URL have registered (or failed to) when this returns.
        """
        count = len(names) if names is not None else count
        names = names or [f"sim{len(self.devices) + 1 + index}" for index in range(count)]
        hosts = [host] * count if isinstance(host, str) else list(host)
        ports = [port] * count if isinstance(port, int) else list(port)
        if not len(hosts) == len(ports) == count or len(set(names)) != count:
            raise ValueError("give one host, port and unique name per device")
        if any("." in name or not name for name in names):
            raise ValueError(f"device names are not empty and have no dot: {names}")
        if taken := set(names) & set(self.devices):
            raise ValueError(f"devices already exist: {sorted(taken)}")
        sockets: list[socket.socket] = []
        try:
            for bind_host, bind_port in zip(hosts, ports, strict=True):
                sockets.append(serving.bind(bind_host, bind_port))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        if self._mdns_interfaces and self._advertiser is None:
            self._advertiser = Advertiser(self._mdns_interfaces)
        devices = []
        for name, sock in zip(names, sockets, strict=True):
            bound_host, bound_port = sock.getsockname()[:2]
            device = SimulatedDevice(
                name,
                host=serving.primary_address() if bound_host in serving.WILDCARDS else bound_host,
                port=bound_port,
                folder=self.data_dir / name,
                http=self._client(),
                orchestrator_url=orchestrator_url or self._orchestrator_url,
                interfaces=interfaces or self._interfaces,
                settings=self._settings,
                announcer=self._advertiser,
            )
            self.devices[name] = device
            if bound_host in serving.WILDCARDS:
                self._by_port[bound_port] = device
            else:
                self._by_address[(bound_host, bound_port)] = device
            devices.append(device)
        self._servers.append(await serving.Server.start(self._app, sockets))
        await asyncio.gather(*(device.start() for device in devices))
        return devices

    async def close(self) -> None:
        """Stop every device and server, then release the client and the temporary folder."""
        await asyncio.gather(*(device.stop() for device in self.devices.values()))
        # The servers finish the requests in flight (which may still call out) first.
        await asyncio.gather(*(server.stop() for server in self._servers))
        self._servers.clear()
        await asyncio.gather(*(client.aclose() for client in self._clients))
        self._clients.clear()
        if self._advertiser is not None:
            await self._advertiser.close()
            self._advertiser = None
        if self._temporary is not None:
            self._temporary.cleanup()

    def _client(self) -> httpx.AsyncClient:
        # No keep-alive: the supervisor's `requests.get/post` open a connection per call, and a
        # kept one could be closed by the other side just as it is reused. trust_env=False: a
        # proxy from the environment must not see the loopback calls.
        client = httpx.AsyncClient(
            verify=self._tls, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._clients.append(client)
        return client

    def _find(self, address: Address | None) -> SimulatedDevice | None:
        if address is None:
            return None
        return self._by_address.get(address) or self._by_port.get(address[1])


@contextlib.asynccontextmanager
async def simulated_devices(count: int, **options: Any) -> AsyncIterator[Fleet]:
    """A fleet of `count` devices started with `Fleet(**options)`; closed on exit."""
    async with Fleet(**options) as fleet:
        await fleet.add(count)
        yield fleet


class FleetThread:
    """A `Fleet` on an event loop of its own thread, for synchronous tests and tools.

    `with FleetThread() as fleet: device = fleet.add(1)[0]`; then talk HTTP to `device.url`.
    Change device state through `call()` or `run()`, which execute on the fleet's loop.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop: asyncio.AbstractEventLoop  # made by __enter__
        self._thread: threading.Thread | None = None
        self.fleet: Fleet

    def __enter__(self) -> FleetThread:
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(_ThreadPerCall())
        self._thread = threading.Thread(target=self._loop.run_forever, name="simulator")
        self._thread.start()
        try:
            self.fleet = self.run(self._open())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, count: int = 1, **options: Any) -> list[SimulatedDevice]:
        return self.run(self.fleet.add(count, **options))

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coroutine` on the fleet's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the fleet's loop (device state is not thread-safe)."""

        async def call() -> T:
            return function(*args)

        return self.run(call())

    def close(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        try:
            self.run(self.fleet.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        try:
            self.run(self._loop.shutdown_default_executor())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join()
            self._loop.close()

    async def _open(self) -> Fleet:
        return Fleet(**self._options)


class _ThreadPerCall(concurrent.futures.ThreadPoolExecutor):
    """Runs each job (wasm runs, getaddrinfo) in a thread of its own that ends with the job.

    A pool would keep idle threads between the calls of a long-lived `FleetThread`, which
    the tests' leaked-thread check would rightly report. (asyncio only accepts a
    ThreadPoolExecutor as default executor, hence the base class; its pool is never used.)
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self._running: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:
                        future.set_exception(exc)
            finally:
                with self._lock:
                    self._running.discard(threading.current_thread())

        thread = threading.Thread(target=run, name="simulator-job", daemon=True)
        with self._lock:
            self._running.add(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            threads = list(self._running)
        for thread in threads if wait else ():
            thread.join()


def run_device(
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    orchestrator_url: str | None = None,
    interfaces: Sequence[str] | None = None,
    mdns: bool = False,
    data_dir: Path | None = None,
    fault: Fault | None = None,
    fault_after: float = 0.0,
) -> None:
    """Serve one simulated device until SIGINT or SIGTERM (the `device` command).

    With `mdns`, the device is advertised on the interface of its own address only. `fault`
    is switched on `fault_after` seconds after the start (so it can be introduced first).
    """
    asyncio.run(
        serve_device(
            name,
            host=host,
            port=port,
            orchestrator_url=orchestrator_url,
            interfaces=interfaces,
            mdns=mdns,
            data_dir=data_dir,
            fault=fault,
            fault_after=fault_after,
        )
    )


async def serve_device(
    name: str,
    *,
    host: str,
    port: int,
    orchestrator_url: str | None = None,
    interfaces: Sequence[str] | None = None,
    mdns: bool = False,
    data_dir: Path | None = None,
    stop: asyncio.Event | None = None,
    fault: Fault | None = None,
    fault_after: float = 0.0,
) -> None:
    """`run_device` inside a running loop; returns when `stop` is set (or on a signal)."""
    stop = stop or asyncio.Event()
    advertised = serving.primary_address() if host in serving.WILDCARDS else host
    fleet = Fleet(data_dir=data_dir, mdns_interfaces=[advertised] if mdns else None)
    async with fleet:
        [device] = await fleet.add(
            names=[name],
            host=host,
            port=port,
            orchestrator_url=orchestrator_url,
            interfaces=interfaces,
        )
        logger.info("simulated device %s at %s (data in %s)", name, device.url, device.folder)
        loop = asyncio.get_running_loop()
        if fault is not None:
            loop.call_later(fault_after, setattr, device, "fault", fault)
        with _signals_set(loop, stop):
            await stop.wait()


@contextlib.contextmanager
def _signals_set(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Iterator[None]:
    installed = []
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, event.set)
            installed.append(number)
    try:
        yield
    finally:
        for number in installed:
            loop.remove_signal_handler(number)
