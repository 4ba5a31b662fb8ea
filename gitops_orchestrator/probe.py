"""One plain-HTTP GET on a connection of its own: the health check every device gets each interval.

The health check is the only call the orchestrator makes to every device all the time, so its
cost is the idle cost of a fleet (issue 11, benchmark d). Supervisors answer `Connection:
close` (Werkzeug), so nothing can be kept alive; what can be saved is the HTTP library around
the socket. This is a bare asyncio protocol: one connection, one request written at once, the
answer parsed by h11 (httpx's own HTTP/1.1 parser) as it arrives and bounded like every answer
(`limit` bytes, no content coding). It raises only `ProbeUnreachable` (no answer) and
`ProbeRejected` (a broken or oversized one); `supervisor.py` maps them to ours. Plain http
only: a device that advertises TLS is checked through httpx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import h11

# The status line and headers of a health answer are a few hundred bytes.
HEAD_LIMIT = 16 * 1024


class ProbeUnreachable(Exception):
    """No answer: refused, reset, closed before an answer, or timed out."""


class ProbeRejected(Exception):
    """An answer that is not HTTP, or larger than the limit."""


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: Sequence[tuple[bytes, bytes]]
    content: bytes


class _Exchange(asyncio.Protocol):
    """Writes the request once connected; feeds h11 until the answer is complete."""

    def __init__(self, request: h11.Request, limit: int) -> None:
        self.limit = limit
        # h11 checks the answer against the request it sent: one connection for both.
        self.parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        self.request = (self.parser.send(request) or b"") + (
            self.parser.send(h11.EndOfMessage()) or b""
        )
        self.done: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.head: h11.Response | None = None
        self.body = bytearray()
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit + HEAD_LIMIT:
            self._fail(ProbeRejected(f"answered more than {self.limit} bytes"))
            return
        self.parser.receive_data(data)
        self._parse()

    def eof_received(self) -> bool | None:
        self.parser.receive_data(b"")
        self._parse()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            why = f": {exc}" if exc else ""
            self.done.set_exception(ProbeUnreachable(f"connection closed before an answer{why}"))

    def _parse(self) -> None:
        try:
            while not self.done.done():
                event = self.parser.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Response):
                    self.head = event
                    if _declared_length(event) > self.limit:
                        raise ProbeRejected(f"answered more than {self.limit} bytes")
                elif isinstance(event, h11.Data):
                    self.body += event.data
                    if len(self.body) > self.limit:
                        raise ProbeRejected(f"answered more than {self.limit} bytes")
                elif isinstance(event, h11.EndOfMessage) and self.head is not None:
                    head = self.head
                    self.done.set_result(Reply(head.status_code, head.headers, bytes(self.body)))
                    self._close()
                elif isinstance(event, h11.ConnectionClosed):
                    raise ProbeUnreachable("connection closed before an answer")
                # InformationalResponse (1xx) and the rest: keep reading.
        except h11.RemoteProtocolError as exc:
            if self.received == 0:  # closed without a byte: no answer, as httpx says too
                self._fail(ProbeUnreachable("connection closed before an answer"))
            else:
                self._fail(ProbeRejected(f"answered something that is not HTTP: {exc}"))
        except (ProbeRejected, ProbeUnreachable) as exc:
            self._fail(exc)

    def _fail(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # nothing more to say or hear: no lingering close


def _declared_length(head: h11.Response) -> int:
    """The Content-Length (h11 has checked it is digits; one too long to parse is huge)."""
    for name, value in head.headers:
        if name == b"content-length":
            return int(value) if len(value) <= 12 else 1 << 62
    return 0


async def get(
    host: str, port: int, target: str, *, headers: Sequence[tuple[str, str]], timeout: float,
    limit: int,
) -> Reply:  # fmt: skip
    """GET `target` from host:port on a new connection; the answer, at most `limit` bytes."""
    request = h11.Request(
        method="GET",
        target=target,
        headers=[
            ("Host", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"),
            ("Accept-Encoding", "identity"),
            ("Connection", "close"),
            *headers,
        ],
    )
    loop = asyncio.get_running_loop()
    exchange = _Exchange(request, limit)
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: exchange, host, port)
            return await exchange.done
    except TimeoutError as exc:
        exchange._close()
        raise ProbeUnreachable(f"timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise ProbeUnreachable(str(exc) or type(exc).__name__) from exc
    finally:
        if not exchange.done.done():
            exchange.done.cancel()
        elif not exchange.done.cancelled():
            exchange.done.exception()  # retrieved: asyncio must not warn about it
