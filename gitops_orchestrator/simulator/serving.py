"""Sockets and one uvicorn server for a batch of devices.

uvicorn serves a list of sockets we bound ourselves: one accept loop per socket, but one
server (one tick, one app) for the whole batch. Its signal handlers are left out: whoever runs
the fleet decides about signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

WILDCARDS = ("", "0.0.0.0")
# Seconds uvicorn waits for open requests when it stops; hanging ones are released before.
_GRACEFUL_SHUTDOWN = 1


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); port 0 picks a free one."""
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it each keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def primary_address() -> str:
    """The address of the default route's interface (no packet is sent), else 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address: str = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return address


class Server:
    """A running uvicorn server for `sockets`; `await Server.start(...)`, then `stop()`."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task

    @classmethod
    async def start(cls, app: ASGIApp, sockets: list[socket.socket]) -> Server:
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,  # /health reads X-Forwarded-For itself
            ws="none",
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
        )
        server = _QuietServer(config)
        task = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
                raise RuntimeError("the device server stopped while starting")
            await asyncio.sleep(0.005)
        return cls(server, task)

    async def stop(self) -> None:
        """Close the sockets; requests in flight get `_GRACEFUL_SHUTDOWN` seconds to end."""
        self._server.should_exit = True
        await self._task


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
