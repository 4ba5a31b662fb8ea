"""The composition root: builds the orchestrator's parts from settings and runs them.

`cli` turns flags and the environment into settings; this module creates the store, the
source, the HTTP client and the loops (sync, reconcile), hands the web app the small
interfaces it may use, and serves it with uvicorn until SIGINT or SIGTERM. It owns the order of
start and shutdown: loops stop before the client and the store are closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from . import (
    devices,
    discovery,
    health,
    logformat,
    logs,
    reconciler,
    running,
    signatures,
    source,
    supervisor,
    syncing,
)
from .settings import (
    DeviceSettings,
    DiscoverySettings,
    LoaderSettings,
    LogSettings,
    ReconcileSettings,
    StoreSettings,
    SyncSettings,
    WebSettings,
)
from .store import Store
from .web import app, metrics, server

logger = logging.getLogger(__name__)

# Device calls: connecting should be quick on a local network; a deploy may take a while, as
# the device downloads the module while our request waits (protocol §3).
DEVICE_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def _http_protocol(web: WebSettings) -> tuple[type[server.DeadlineProtocol], int]:
    """uvicorn's protocol with the request deadline and the connection bound of `web`, and
    the listen backlog that keeps a burst of connections within the open-file limit."""
    files = server.raise_open_file_limit()
    # Half the descriptors stay for devices, the database, git and blobs.
    limit = max(16, min(web.max_connections, files // 2))
    if limit < web.max_connections:
        logger.warning(
            "%d open files allowed: at most %d connections instead of %d",
            files, limit, web.max_connections,
        )  # fmt: skip
    # asyncio accepts up to `backlog` connections at once before any of them is admitted (and
    # may drop another): the burst must fit in the descriptors left above the bound.
    backlog = max(16, min(2048, (files - limit) // 4))
    bound = server.Connections(limit)
    return server.protocol(deadline=web.request_deadline, connections=bound), backlog


@dataclass(frozen=True)
class Settings:
    repo: str
    branch: str | None = None
    data_dir: Path = Path(".gitops-orchestrator")
    log: LogSettings = field(default_factory=LogSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    web: WebSettings = field(default_factory=WebSettings)
    loader: LoaderSettings = field(default_factory=LoaderSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    devices: DeviceSettings = field(default_factory=DeviceSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)


def default_public_url(host: str, port: int) -> str:
    """`http://<primary address>:<port>`: the address other hosts reach this one at."""
    if host not in ("0.0.0.0", "::", ""):
        return f"http://{host}:{port}"
    # Connecting a UDP socket sends nothing; it only asks the kernel which address it would use.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return f"http://{address}:{port}"


async def run(settings: Settings) -> None:
    """Serve the orchestrator until a signal stops it."""
    public_url = (settings.web.public_url or default_public_url(
        settings.web.host, settings.web.port
    )).rstrip("/")  # fmt: skip
    signers = settings.sync.verify_signatures
    # Read before anything starts: an unusable signers file is a startup error.
    verifier = await asyncio.to_thread(signatures.Verifier.open, signers) if signers else None
    store = await asyncio.to_thread(Store.open, settings.data_dir, settings.store)
    try:
        # Opening a remote may ask it for its default branch: not on the event loop.
        followed = await asyncio.to_thread(
            source.open_source, settings.repo, settings.branch, data_dir=settings.data_dir,
            credentials=source.Credentials.from_env(os.environ),
            poll_interval=settings.sync.poll_interval, fetch_interval=settings.sync.fetch_interval,
            wait_for_remote=True,  # serve and answer /readyz 503 until the remote answers
        )  # fmt: skip
    except BaseException:
        store.close()
        if verifier is not None:
            verifier.close()
        raise
    # No pool limit: every caller bounds its own concurrency, and httpcore's pool scans all
    # its connections for each queued request, which stalls the loop with 1,000 devices.
    # trust_env=False: a proxy setting of the environment must not carry device traffic.
    client = httpx.AsyncClient(
        timeout=DEVICE_TIMEOUT, follow_redirects=False, trust_env=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
    )  # fmt: skip
    devices_client = supervisor.SupervisorClient(client, direct_health=True)
    # Any device may have restarted while we were not running, and a supervisor that
    # registered meanwhile never tries again (protocol §2): what each runs is unknown, so
    # its work is posted once more, at most once per (deployment, device).
    await asyncio.to_thread(
        store.unknown_incarnations, now=time.time(),
        why="orchestrator started: what each device runs is unknown until posted again",
    )  # fmt: skip
    introducer = devices.Introducer(
        store, devices_client, public_url,
        registration_window=settings.devices.registration_window,
    )  # fmt: skip
    loop = reconciler.Reconciler(
        store, devices_client, introducer, public_url, settings=settings.reconcile,
        observe_pass=metrics.observe_pass,
    )  # fmt: skip
    introducer.wake = loop.wake
    checker = health.HealthChecker(
        store, devices_client, public_url, settings=settings.devices, wake=loop.wake
    )
    sink = logs.LogSink(store, settings=settings.devices)
    browser = discovery.Discovery(
        settings.discovery.mdns_interfaces, introducer=introducer, store=store, wake=loop.wake,
        resolve_timeout=settings.discovery.resolve_timeout,
    )  # fmt: skip
    local = isinstance(followed, source.LocalSource)
    syncer = syncing.Syncer(
        followed, store, settings=settings.sync, loader=settings.loader, on_desired=loop.wake,
        interval=settings.sync.poll_interval if local else settings.sync.fetch_interval,
        verifier=verifier,
    )  # fmt: skip
    services = app.Services(
        store=store, repo=followed.display, branch=lambda: followed.branch, fetch=followed,
        introducer=introducer, runner=running.Runner(store, devices_client), logs=sink,
        public_url=public_url,
        background=[syncer.run, loop.run, checker.run, sink.run, browser.run],
    )  # fmt: skip
    protocol, backlog = _http_protocol(settings.web)
    config = uvicorn.Config(
        app.create_app(services, settings.web), host=settings.web.host, port=settings.web.port,
        timeout_graceful_shutdown=5, **logformat.uvicorn_options(settings.log),
        http=protocol, backlog=backlog,
    )  # fmt: skip
    logger.info("devices reach this orchestrator at %s", public_url)
    try:
        await _Server(config).serve()
    finally:
        await browser.close()  # before the client and the store it uses
        await introducer.close()
        await client.aclose()
        followed.close()
        store.close()
        if verifier is not None:
            verifier.close()


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising SIGINT/SIGTERM after its graceful shutdown.

    Re-raising would kill the process before the store is closed; we close it, then exit 0.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, self.handle_exit, number, None)
        try:
            yield
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
