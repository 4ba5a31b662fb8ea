"""One virtual device: the state and behaviour of a Python supervisor, without the HTTP layer.

`app` turns requests into calls of these methods; `fleet` owns the sockets, the data folder
and the HTTP client each device is given. What the device keeps in memory (deployments, history,
request counters, the `/register`ed orchestrator URL) is lost on `restart()`, as on the real
one; module files stay in its folder. Outgoing calls (downloads, registration, logs, chained
steps) never fail a request except where the supervisor's would fail it.

Around a start it does what the real supervisor was seen to do (protocol §2, "What a real
supervisor does around a restart"): it announces itself on mDNS first and sends its one
registration `register_delay` later, never retried when it fails; it sends no mDNS goodbye
when it stops or restarts, and a restart announces the known name again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from . import deployment, execution, fetching, reporting
from .execution import HistoryEntry

logger = logging.getLogger(__name__)

# What the transcript's supervisor advertised (its instance config file).
DEFAULT_INTERFACES: tuple[str, ...] = (
    "millis", "delay", "print", "println", "printInt", "rpcCall", "takeImage",
    "takeImageDynamicSize", "takeImageStaticSize", "path_open", "fd_filestat_get", "fd_read",
    "fd_readdir", "fd_seek", "fd_write", "fd_close", "fd_prestat_get", "fd_prestat_dir_name",
    "sched_yield", "random_get", "proc_exit", "environ_sizes_get", "environ_get",
)  # fmt: skip


class Fault(StrEnum):
    """Misbehaviour a test can switch on per device (`device.fault = Fault.HANG`)."""

    ERROR = "error"  # every request answers 500
    HTML = "html"  # every request answers 200 with an HTML page
    HANG = "hang"  # requests wait until the fault is cleared or the device stops
    FAIL_DOWNLOADS = "fail_downloads"  # every module download fails, so deploys answer 500
    NESTED = "nested"  # every request answers 200 with JSON nested 60,000 levels deep
    OVERSIZED = "oversized"  # every request answers 200 with a JSON body of 16 MiB, streamed


@dataclass(frozen=True)
class DeviceSettings:
    """Timings of a simulated device, in seconds."""

    download_timeout: float = 5.0
    """Per module or data file download: the supervisor's `requests.get(..., timeout=5)`."""
    chain_timeout: float = 10.0
    """Call of the next step of a chain: the supervisor's `timeout=10`."""
    log_timeout: float = 1.0
    """Per log POST. The supervisor has none and stalls; a simulator must not."""
    register_timeout: float = 5.0
    """Per self-registration POST."""
    register_delay: float = 0.4
    """From the mDNS announcement to the registration POST: about 0.4 s on the real one."""
    register_renewal: float = 900.0
    """Re-register after this long without an orchestrator health check
    (`WASMIOT_REGISTER_RENEWAL_TIME`, default 900)."""


class Announcer(Protocol):
    """Advertises devices over mDNS (`mdns.Advertiser`)."""

    async def advertise(self, device: SimulatedDevice) -> None: ...

    async def withdraw(self, device: SimulatedDevice) -> None: ...


@dataclass(frozen=True)
class DeployRequest:
    """One `POST /deploy` as received: the parsed body (None when not JSON) and the answer."""

    body: Any
    content_type: str | None
    status: int
    accepted: bool


class SimulatedDevice:
    """A supervisor-compatible device reachable at `url`; see the package docstring."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        folder: Path,
        http: httpx.AsyncClient,
        orchestrator_url: str | None = None,
        interfaces: Sequence[str] = DEFAULT_INTERFACES,
        settings: DeviceSettings | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        if "." in name or not name:
            raise ValueError(f"a device name is not empty and has no dot: {name!r}")
        self.name = name
        self.host = host
        self.port = port
        self.folder = folder
        self.interfaces = list(interfaces)
        self.settings = settings or DeviceSettings()
        self.configured_orchestrator_url = orchestrator_url
        self.orchestrator_url = orchestrator_url
        self.deployments: dict[Hashable, deployment.Deployment] = {}
        self.history: list[HistoryEntry] = []
        self.deploy_requests: list[DeployRequest] = []
        self.registrations = 0  # self-registration POSTs answered 2xx
        self.registration_attempts = 0  # self-registration POSTs sent, answered or not
        self.restarts = 0
        self._fault: Fault | None = None
        self._unhung = asyncio.Event()
        self._unhung.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http = http
        self._announcer = announcer
        self._counters: dict[str, int] = {}
        self._queue: asyncio.Queue[HistoryEntry] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopped = False
        self._checked_at = time.monotonic()
        self._context = execution.Context(
            params_folder=folder / "params",
            http=http,
            interfaces=frozenset(self.interfaces),
            chain_timeout=self.settings.chain_timeout,
            log=self.log,
        )
        for sub in ("modules", "params", "uploads"):
            (folder / sub).mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """Base URL of the device, no trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def fault(self) -> Fault | None:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        self._fault = fault
        # asyncio events are not thread-safe: a switch from another thread goes via the loop.
        if self._loop is None or _running_loop() is self._loop:
            self._apply_hang()
        else:
            self._loop.call_soon_threadsafe(self._apply_hang)

    def _apply_hang(self) -> None:
        if self._fault is Fault.HANG and not self.stopped:
            self._unhung.clear()
        else:
            self._unhung.set()

    async def wait_unhung(self) -> None:
        """Return once the device does not hang (at once unless `fault` is HANG)."""
        await self._unhung.wait()

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """What a supervisor does once it listens: announce, register once, watch renewal."""
        self._loop = asyncio.get_running_loop()
        self._checked_at = time.monotonic()
        self._spawn(self._renew_registration())
        if self._announcer is not None:
            await self._announcer.advertise(self)
            if self.orchestrator_url:
                # The announcement comes first: an orchestrator may introduce the device from it
                # before the registration arrives (protocol §2).
                await asyncio.sleep(self.settings.register_delay)
        if self.orchestrator_url:
            await self.register_self()  # once: a failure is logged, never retried

    async def stop(self) -> None:
        """Stop background work and release hanging requests (they answer 503)."""
        self.stopped = True
        self._unhung.set()
        await self._cancel_tasks()

    async def restart(self) -> None:
        """A supervisor restart: everything kept in memory is gone; it registers again.

        No mDNS goodbye: the Python supervisor sends none when it stops; it only announces
        its name again once it is back.
        """
        await self._cancel_tasks()
        self.deployments.clear()
        self.history.clear()
        self._counters.clear()
        self._queue = asyncio.Queue()
        self.orchestrator_url = self.configured_orchestrator_url
        self.restarts += 1
        await self.start()

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks, self._worker = list(self._tasks), set(), None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- orchestrator-facing routes ------------------------------------------------------

    def description(self) -> dict[str, Any]:
        return reporting.description(self.interfaces)

    def health(self, forwarded_for: str | None) -> dict[str, float]:
        """`/health`; a check from the orchestrator's host resets the re-registration timer."""
        if self.orchestrator_url and forwarded_for == urlsplit(self.orchestrator_url).hostname:
            self._checked_at = time.monotonic()
        return reporting.health()

    async def register_orchestrator(self, url: Any) -> str | None:
        """`POST /register`: None on success, else the error the supervisor answers with 404."""
        if not url:
            return "No url found"
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            return "Orchestrator url is invalid"
        self.orchestrator_url = url.rstrip("/")
        self._checked_at = time.monotonic()
        await self.log("INFO", f"Orchestrator registered at url {url}", "register_orchestrator")
        return None

    def registration(self) -> dict[str, Any]:
        return reporting.registration(self.name, self.host, self.port)

    async def register_self(self) -> bool:
        """Announce the device to its orchestrator; False (logged) when that fails."""
        if not self.orchestrator_url:
            return False
        url = f"{self.orchestrator_url}/file/device/discovery/register"
        self.registration_attempts += 1
        try:
            response = await self._http.post(
                url, json=self.registration(), timeout=self.settings.register_timeout
            )
        except httpx.HTTPError as exc:
            logger.warning("%s: registration at %s failed: %r", self.name, url, exc)
            return False
        if not response.is_success:
            logger.warning("%s: registration answered %d", self.name, response.status_code)
            return False
        self.registrations += 1
        return True

    async def log(self, level: str, message: str, function: str, **extra: str) -> None:
        """Ship one log line to `<orchestrator>/device/logs` like the supervisor, best effort.

        Synchronous like the real one (the caller waits), but with a short timeout. Without a
        known orchestrator the simulator drops the line; the supervisor would try port 3000 of
        its last caller.
        """
        if not self.orchestrator_url:
            return
        record = reporting.log_record(
            level, message, function, device=self.name, address=self.host, **extra
        )
        try:
            await self._http.post(
                f"{self.orchestrator_url}/device/logs",
                data={"logData": json.dumps(record)},
                timeout=self.settings.log_timeout,
            )
        except Exception as exc:  # logs are best effort: they never fail what is logged
            logger.debug("%s: log POST failed: %r", self.name, exc)

    # -- deployments ---------------------------------------------------------------------

    async def deploy(self, raw: bytes, content_type: str | None) -> tuple[int, Any]:
        """`POST /deploy`: (status, JSON answer or plain-text error)."""
        body = deployment.json_body(raw, content_type)
        status, answer = await self._deploy(body)
        self.deploy_requests.append(
            DeployRequest(body, content_type, status, accepted=answer == {"status": "success"})
        )
        return status, answer

    async def _deploy(self, body: Any) -> tuple[int, Any]:
        if not body:  # corpus body-not-json, body-wrong-content-type
            return 200, {"message": "Non-existent or malformed deployment data"}
        try:
            modules = body["modules"]
            if not modules:  # corpus modules-empty: answered, not deployed
                return 200, {"message": "No modules listed"}
            # Downloads come first, so most rejected bodies still fetch (fetched_during_deploy).
            fetched = [
                await fetching.fetch_module(
                    module,
                    client=self._http,
                    folder=self.folder,
                    timeout=self.settings.download_timeout,
                    fail=self._fault is Fault.FAIL_DOWNLOADS,
                )
                for module in modules
            ]
            built = deployment.build(body, fetched)
        except Exception as exc:  # the supervisor's unhandled exception: a 500 page
            logger.debug("%s: deploy rejected", self.name, exc_info=True)
            return 500, f"{type(exc).__name__}: {exc}"
        # Re-posting an id replaces it; a rejected body (above) left the old one in place.
        self.deployments[built.id] = built
        await self.log("INFO", "Deployment created", "deployment_create")
        return 200, {"status": "success"}

    def delete(self, deployment_id: str) -> bool:
        """`DELETE /deploy/<id>`: False when the device does not know the deployment."""
        return self.deployments.pop(deployment_id, None) is not None

    # -- execution -----------------------------------------------------------------------

    async def execute(
        self,
        deployment_id: str,
        module: str,
        function: str,
        *,
        method: str,
        args: dict[str, str],
        files: dict[str, str],
    ) -> HistoryEntry:
        """Run now (GET) or queue (any other method) a call; the entry names its result."""
        key = f"{deployment_id}:{module}:{function}"
        self._counters[key] = self._counters.get(key, 0) + 1
        entry = HistoryEntry(
            request_id=f"{key}:{self._counters[key]}",
            deployment_id=deployment_id,
            module_name=module,
            function_name=function,
            method=method,
            request_args=args,
            request_files=files,
            work_queued_at=datetime.now(UTC),
        )
        ids = {"request_id": entry.request_id, "deployment_id": deployment_id}
        await self.log("INFO", "Module run", "run_module_function", **ids, module_name=module)
        if method == "GET":
            await self._run(entry)
        else:
            # Queued: the entry is unknown to /request-history (404) until it has run.
            if self._worker is None:
                self._worker = self._spawn(self._work_queue())
            self._queue.put_nowait(entry)
        return entry

    def find(self, request_id: str) -> HistoryEntry | None:
        return next((entry for entry in self.history if entry.request_id == request_id), None)

    async def _run(self, entry: HistoryEntry) -> None:
        ids = {"request_id": entry.request_id, "deployment_id": entry.deployment_id}
        try:
            entry.result = await execution.work(
                entry, self.deployments[entry.deployment_id], self._context
            )
            entry.success = True
        except Exception as exc:  # every failure is a 500 history entry, never a crash
            logger.debug("%s: %s failed", self.name, entry.request_id, exc_info=True)
            entry.result = str(exc)
            entry.success = False
            message = f"Error running WebAssembly function '{entry.function_name}'"
            await self.log("ERROR", message, "make_history", **ids)
        self.history.append(entry)

    async def _work_queue(self) -> None:
        # One worker per device, in order, like the supervisor's single worker thread.
        while True:
            entry = await self._queue.get()
            await self._run(entry)

    async def _renew_registration(self) -> None:
        renewal = self.settings.register_renewal
        while True:
            await asyncio.sleep(max(self._checked_at + renewal - time.monotonic(), 0.01))
            if time.monotonic() - self._checked_at >= renewal:
                self._checked_at = time.monotonic()
                await self.register_self()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
