"""`POST /device/logs`: where supervisors ship their log lines (protocol §5).

Supervisors send each line synchronously and without a timeout, so the answer is immediate:
200 for every body within the limit (a malformed line is counted and dropped by the sink),
413 over it. The form is what supervisors send (`application/x-www-form-urlencoded`, field
`logData` holding a JSON string).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from .responses import BodyTooLarge, JSONResponse, error, limited_body


class LogIntake(Protocol):
    @property
    def counts(self) -> Mapping[str, int]:
        """What became of the lines posted, by outcome (shown in `/metrics`)."""

    def accept(self, raw: str | None, *, peer: str | None) -> None: ...


def device_logs(intake: LogIntake, *, max_body: int) -> Callable[[Request], Awaitable[Response]]:
    """The log endpoint, handing each line to `intake`."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await limited_body(request, max_body)
        except BodyTooLarge:
            return error(413, f"a log body is at most {max_body} bytes")
        try:
            values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=16).get(
                "logData"
            )
        except ValueError:  # more fields than any log line has
            values = None
        peer = request.client.host if request.client else None
        intake.accept(values[0] if values else None, peer=peer)
        return JSONResponse({"status": "ok"})

    return endpoint
