"""The orchestrator's side of the supervisor protocol, over an injected httpx client.

Every call a device is sent goes through here, and every httpx error becomes one of ours:
`SupervisorUnreachable` (a connection problem or a timeout: try again later) or
`SupervisorRejected` (the device answered, and not with success). What counts as success is
the protocol's, to the letter: a deploy succeeded only on a 2xx whose JSON body has
`"status": "success"` (protocol §3); anything else, even a 200, is a rejection.

Devices cannot be trusted to answer sanely (issue 11, seen case 8): every answer is streamed
and dropped once it passes `MAX_ANSWER` bytes, never inflated, and JSON nested deeper than
`MAX_NESTING` is that device's `SupervisorRejected`, never a `RecursionError` somewhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import probe
from .errors import SupervisorRejected, SupervisorUnreachable

DESCRIPTION_PATH = "/.well-known/wasmiot-device-description"
# No answer of the protocol is larger than a few KiB (a description lists a few dozen names);
# a megabyte leaves room for a chatty device and still bounds what one answer can cost us.
MAX_ANSWER = 1024 * 1024
# The deepest answer of the protocol (an execution result, a Rust health report) nests about
# 4 levels; the stored reports are rendered and re-encoded later, so deep ones stop here.
MAX_NESTING = 32
# We ask for identity: a compressed answer could inflate far past MAX_ANSWER in one chunk.
_IDENTITY = ("", "identity")


@dataclass(frozen=True)
class Answer:
    """A device's answer, read whole but bounded; `json()` applies the nesting limit."""

    request: str  # "GET http://...", for messages
    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, None when it is not JSON; too deep is a `SupervisorRejected`."""
        try:
            document = json.loads(self.content)
        except RecursionError:
            document = _TOO_DEEP
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if document is _TOO_DEEP or _deeper_than(document, MAX_NESTING):
            raise SupervisorRejected(
                f"{self.request} answered JSON nested deeper than {MAX_NESTING} levels"
            )
        return document

    def summary(self) -> str:
        """Status and the start of the body, on one line: enough to see what the device said."""
        text = " ".join(self.text[:4096].split())
        if len(text) > 200:
            text = text[:197] + "..."
        return f"{self.status_code} {text}".strip()


_TOO_DEEP = object()


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether `document` nests more than `limit` lists or objects (iterative: no recursion)."""
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth + 1 > limit:
            return True
        pending.extend((item, depth + 1) for item in value)
    return False


class SupervisorClient:
    """The calls of the protocol. With `direct_health`, health checks of plain-http devices
    go through `probe` (a socket each, no HTTP library around it): the one call made to
    every device every interval, so the idle cost of a fleet."""

    def __init__(self, client: httpx.AsyncClient, *, direct_health: bool = False) -> None:
        self.client = client
        self.direct_health = direct_health

    async def fetch(self, method: str, url: str, **options: Any) -> Answer:
        """Any request to a device (the runner's execution calls): its answer, bounded."""
        return await self._request(method, url, **options)

    async def _request(self, method: str, url: str, **options: Any) -> Answer:
        where = f"{method} {url}"
        headers = {"Accept-Encoding": "identity", **options.pop("headers", {})}
        try:
            async with self.client.stream(method, url, headers=headers, **options) as response:
                return Answer(where, response.status_code, response.headers, await _body(response))
        except httpx.TimeoutException as exc:
            raise SupervisorUnreachable(f"{where} timed out") from exc
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise SupervisorUnreachable(f"{where} failed: {exc}") from exc

    async def description(self, base_url: str) -> dict[str, Any]:
        """The device description (`supervisorInterfaces`, `platform`), checked for shape."""
        url = base_url + DESCRIPTION_PATH
        response = await self._request("GET", url)
        document = response.json()
        if response.status_code != 200 or not isinstance(document, dict):
            raise SupervisorRejected(f"GET {url} answered {response.summary()}")
        interfaces = document.get("supervisorInterfaces")
        if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
            raise SupervisorRejected(f"GET {url}: supervisorInterfaces is not a list of names")
        return document

    async def deploy(self, base_url: str, body: dict[str, Any]) -> None:
        """POST /deploy; returns only when the device says `"status": "success"`."""
        url = base_url + "/deploy"
        content = json.dumps(body, separators=(",", ":"))
        # Without this content type the supervisor answers 200 and deploys nothing.
        headers = {"Content-Type": "application/json"}
        response = await self._request("POST", url, content=content, headers=headers)
        answer = response.json()
        if not (
            response.is_success and isinstance(answer, dict) and answer.get("status") == "success"
        ):
            raise SupervisorRejected(f"deploy refused: {response.summary()}")

    async def undeploy(self, base_url: str, deployment: str) -> None:
        """DELETE /deploy/<id>; a 404 means it is already gone, which is what we want."""
        url = f"{base_url}/deploy/{deployment}"
        response = await self._request("DELETE", url)
        if not (response.is_success or response.status_code == 404):
            raise SupervisorRejected(f"undeploy refused: {response.summary()}")

    async def health(
        self, base_url: str, *, forwarded_for: str, timeout: float
    ) -> tuple[dict[str, Any], bool | None]:
        """GET /health: the opaque report, and whether the device knows an orchestrator.

        `X-Forwarded-For` must be our host as the device knows it: the supervisor resets its
        re-registration timer only when it matches (protocol §2).
        """
        url = base_url + "/health"
        headers = {"X-Forwarded-For": forwarded_for}
        parts = urlsplit(base_url)
        if self.direct_health and parts.scheme == "http" and parts.hostname and parts.port:
            response = await _probe(url, parts.hostname, parts.port, headers, timeout)
        else:
            response = await self._request("GET", url, headers=headers, timeout=timeout)
        report = response.json()
        if response.status_code != 200 or not isinstance(report, dict):
            raise SupervisorRejected(f"GET {url} answered {response.summary()}")
        header = response.headers.get("Custom-Orchestrator-Set")
        known = None if header is None else header.strip().lower() == "true"
        return report, known

    async def register(self, base_url: str, orchestrator_url: str) -> None:
        """POST /register: tells the device where we are (and where to ship its logs)."""
        url = base_url + "/register"
        response = await self._request("POST", url, json={"url": orchestrator_url})
        if not response.is_success:
            raise SupervisorRejected(f"register refused: {response.summary()}")


async def _probe(url: str, host: str, port: int, headers: dict[str, str], timeout: float) -> Answer:
    where = f"GET {url}"
    try:
        reply = await probe.get(
            host, port, "/health", headers=list(headers.items()), timeout=timeout,
            limit=MAX_ANSWER,
        )  # fmt: skip
    except probe.ProbeUnreachable as exc:
        raise SupervisorUnreachable(f"{where} failed: {exc}") from exc
    except probe.ProbeRejected as exc:
        raise SupervisorRejected(f"{where} {exc}") from exc
    answer = Answer(where, reply.status_code, httpx.Headers(list(reply.headers)), reply.content)
    encoding = answer.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY:
        raise SupervisorRejected(f"{where} answered with Content-Encoding {encoding}")
    return answer


async def _body(response: httpx.Response) -> bytes:
    """The raw body, read until it ends or passes MAX_ANSWER (then the device's failure)."""
    where = f"{response.request.method} {response.request.url}"
    too_large = SupervisorRejected(f"{where} answered more than {MAX_ANSWER} bytes")
    declared = response.headers.get("Content-Length", "")
    # A length of many digits is refused before int(): huge ones cost (and may raise).
    if declared.isdigit() and (len(declared) > 12 or int(declared) > MAX_ANSWER):
        raise too_large
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY:
        raise SupervisorRejected(f"{where} answered with Content-Encoding {encoding}")
    body = bytearray()
    # aiter_bytes, not aiter_raw: it also serves an answer read already; with the encoding
    # checked above both yield the bytes as sent.
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER:
            raise too_large
    return bytes(body)
