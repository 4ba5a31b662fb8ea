"""The orchestrator's side of the supervisor protocol, over an injected httpx client.

Every call a device is sent goes through here, and every httpx error becomes one of ours:
`SupervisorUnreachable` (a connection problem or a timeout: try again later) or
`SupervisorRejected` (the device answered, and not with success). What counts as success is
the protocol's, to the letter: a deploy succeeded only on a 2xx whose JSON body has
`"status": "success"` (protocol §3); anything else, even a 200, is a rejection.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .errors import SupervisorRejected, SupervisorUnreachable

DESCRIPTION_PATH = "/.well-known/wasmiot-device-description"
# Answers from devices are read whole; none of the protocol's is larger than a few KiB.
MAX_ANSWER = 1024 * 1024


class SupervisorClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _request(self, method: str, url: str, **options: Any) -> httpx.Response:
        try:
            response = await self.client.request(method, url, **options)
        except httpx.TimeoutException as exc:
            raise SupervisorUnreachable(f"{method} {url} timed out") from exc
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise SupervisorUnreachable(f"{method} {url} failed: {exc}") from exc
        if len(response.content) > MAX_ANSWER:
            raise SupervisorRejected(f"{method} {url} answered more than {MAX_ANSWER} bytes")
        return response

    async def description(self, base_url: str) -> dict[str, Any]:
        """The device description (`supervisorInterfaces`, `platform`), checked for shape."""
        url = base_url + DESCRIPTION_PATH
        response = await self._request("GET", url)
        document = _json(response)
        if response.status_code != 200 or not isinstance(document, dict):
            raise SupervisorRejected(f"GET {url} answered {_summary(response)}")
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
        answer = _json(response)
        if not (
            response.is_success and isinstance(answer, dict) and answer.get("status") == "success"
        ):
            raise SupervisorRejected(f"deploy refused: {_summary(response)}")

    async def undeploy(self, base_url: str, deployment: str) -> None:
        """DELETE /deploy/<id>; a 404 means it is already gone, which is what we want."""
        url = f"{base_url}/deploy/{deployment}"
        response = await self._request("DELETE", url)
        if not (response.is_success or response.status_code == 404):
            raise SupervisorRejected(f"undeploy refused: {_summary(response)}")

    async def health(
        self, base_url: str, *, forwarded_for: str, timeout: float
    ) -> tuple[dict[str, Any], bool | None]:
        """GET /health: the opaque report, and whether the device knows an orchestrator.

        `X-Forwarded-For` must be our host as the device knows it: the supervisor resets its
        re-registration timer only when it matches (protocol §2).
        """
        url = base_url + "/health"
        headers = {"X-Forwarded-For": forwarded_for}
        response = await self._request("GET", url, headers=headers, timeout=timeout)
        report = _json(response)
        if response.status_code != 200 or not isinstance(report, dict):
            raise SupervisorRejected(f"GET {url} answered {_summary(response)}")
        header = response.headers.get("Custom-Orchestrator-Set")
        known = None if header is None else header.strip().lower() == "true"
        return report, known

    async def register(self, base_url: str, orchestrator_url: str) -> None:
        """POST /register: tells the device where we are (and where to ship its logs)."""
        url = base_url + "/register"
        response = await self._request("POST", url, json={"url": orchestrator_url})
        if not response.is_success:
            raise SupervisorRejected(f"register refused: {_summary(response)}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _summary(response: httpx.Response) -> str:
    """Status and the start of the body, on one line: enough to see what the device said."""
    text = " ".join(response.text.split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{response.status_code} {text}".strip()
