"""The HTTP protocol uvicorn runs for us: a deadline per request and a bound on connections.

Anyone on the LAN can open connections to the open routes. uvicorn alone never drops a client
that sends its request slowly (its keep-alive timer is reset by every byte) and its
`limit_concurrency` answers 503 to every route, `/healthz` included. So each connection gets a
timer, armed while a request is being received (from the connection's start, and again after
each answer while the next request comes in) and disarmed once the request is there whole
(headers and body): a client that has not sent a whole request within `request_deadline`
seconds is cut off, however it trickles bytes. When `max_connections` are open, a new one
makes room by dropping the oldest connection that is not being answered (a request being
served, an event stream, an `/execute` waiting on a device, is never dropped for it); with
none to drop, the new connection is closed. This module only shapes connections; routes and
answers are the app's.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

# States in which the client has sent its whole request (or gave up): nothing more to wait for.
RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to the hard one; return the new soft one.

    The default soft limit (often 1,024) is far below what a fleet's connections need, and any
    process may raise it up to the hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


class Connections:
    """The open connections of one server, oldest first, within `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[DeadlineProtocol, None] = {}  # insertion order: oldest first
        self._dropping = 0  # dropped since the bound was last reached

    def admit(self, new: DeadlineProtocol) -> None:
        """Take `new` in, dropping the oldest connection not being answered when full."""
        if len(self._open) >= self.limit:
            victim = next((c for c in self._open if c.is_waiting()), new)
            self._drop(victim)
            if victim is new:
                return
        self._open[new] = None

    def forget(self, connection: DeadlineProtocol) -> None:
        self._open.pop(connection, None)
        if self._dropping and len(self._open) < self.limit * 0.9:
            # The style rule for repeated warnings: one line with the count when it stops.
            logger.warning(
                "below the connection bound again; %d connections were dropped at %d open",
                self._dropping, self.limit,
            )  # fmt: skip
            self._dropping = 0

    def _drop(self, connection: DeadlineProtocol) -> None:
        level = logging.DEBUG if self._dropping else logging.WARNING
        logger.log(
            level, "%d connections are open (the bound): dropping the oldest waiting one",
            self.limit,
        )  # fmt: skip
        self._dropping += 1
        self._open.pop(connection, None)
        connection.cut_off()


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a receive deadline and a shared bound on connections."""

    deadline: ClassVar[float]
    bound: ClassVar[Connections]
    """Shared by every connection of the server (uvicorn's own `connections` is a set)."""
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        self.bound.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.bound.forget(self)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state in RECEIVED:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this connection gets a deadline of its own.
        if self.conn.their_state not in RECEIVED and not self.transport.is_closing():
            self._arm()

    def is_waiting(self) -> bool:
        """Whether this connection is receiving a request rather than being answered."""
        return self._timer is not None

    def cut_off(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.abort()

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.deadline, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        logger.debug("%s sent no whole request within %g s: closed", self.client, self.deadline)
        self.bound.forget(self)
        if not self.transport.is_closing():
            self.transport.abort()


def protocol(*, deadline: float, connections: Connections) -> type[DeadlineProtocol]:
    """The protocol class to hand uvicorn (`Config(http=...)`), bound to these limits."""
    options: dict[str, Any] = {"deadline": deadline, "bound": connections}
    return type("BoundedProtocol", (DeadlineProtocol,), options)
