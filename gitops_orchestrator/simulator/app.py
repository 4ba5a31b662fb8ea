"""The HTTP side of simulated devices: the supervisor's routes, one app for many devices.

`DeviceApp` is one ASGI app shared by every device of a fleet: it picks the device from the
local address the connection came in on (`scope["server"]`), applies the device's fault switch,
then hands the request to the routes, which only translate HTTP to `SimulatedDevice` calls.
Answers mirror the Python supervisor's (JSON shapes, status codes); its 500 pages are plain text
here.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from .device import Fault, SimulatedDevice
from .execution import safe_name

Address = tuple[str, int]
_DEVICE = "simulated_device"
_FAULT_PAGE = "<!doctype html><html><body><h1>Simulated fault</h1></body></html>"
# What the hostile "device" of issue 11 (seen case 8) answered: a RecursionError for a naive
# JSON parser.
NESTED_ANSWER = b"[" * 60000
# Far above any sane answer of the protocol (a few KiB), and sent without a Content-Length,
# so a client has to count what it reads to stop.
OVERSIZED_ANSWER = 16 * 1024 * 1024
_CHUNK = 64 * 1024


class DeviceApp:
    """ASGI app serving the devices that `lookup` finds by local (host, port)."""

    def __init__(self, lookup: Callable[[Address | None], SimulatedDevice | None]) -> None:
        self._lookup = lookup
        self._routes = Starlette(routes=ROUTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        server = scope.get("server")
        device = self._lookup((server[0], server[1]) if server else None)
        if device is None:
            await PlainTextResponse("no simulated device here", 404)(scope, receive, send)
            return
        send = _closing(send)
        await device.wait_unhung()
        fault_response = _fault_response(device)
        if fault_response is not None:
            await fault_response(scope, receive, send)
            return
        await self._routes({**scope, _DEVICE: device}, receive, send)


def _closing(send: Send) -> Send:
    """`send` adding `Connection: close`, as the supervisor's Werkzeug server answers.

    Clients must not count on keep-alive with devices; this also spares the simulator an
    idle connection per device and client.
    """

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
        await send(message)

    return closing_send


def single_device_app(device: SimulatedDevice) -> DeviceApp:
    """An app serving `device` whatever the address (for httpx.ASGITransport and tests)."""
    return DeviceApp(lambda _address: device)


def _fault_response(device: SimulatedDevice) -> Response | None:
    if device.stopped:
        return PlainTextResponse("device stopped", 503)
    if device.fault is Fault.ERROR:
        return PlainTextResponse("500 Internal Server Error (simulated fault)", 500)
    if device.fault is Fault.HTML:
        return HTMLResponse(_FAULT_PAGE)
    if device.fault is Fault.NESTED:
        return Response(NESTED_ANSWER, media_type="application/json")
    if device.fault is Fault.OVERSIZED:
        return StreamingResponse(_oversized(), media_type="application/json")
    return None


async def _oversized() -> AsyncIterator[bytes]:
    """A valid JSON success of OVERSIZED_ANSWER bytes: only its size is wrong."""
    yield b'{"status": "success", "padding": "'
    for _ in range(OVERSIZED_ANSWER // _CHUNK):
        yield b"x" * _CHUNK
    yield b'"}'


def _device(request: Request) -> SimulatedDevice:
    device: SimulatedDevice = request.scope[_DEVICE]
    return device


def _error(message: str, status: int = 500) -> JSONResponse:
    return JSONResponse({"result": message, "status": "error"}, status)


async def description(request: Request) -> Response:
    return JSONResponse(_device(request).description())


async def health(request: Request) -> Response:
    device = _device(request)
    report = device.health(request.headers.get("x-forwarded-for"))
    known = "true" if device.orchestrator_url else "false"
    return JSONResponse(report, headers={"Custom-Orchestrator-Set": known})


async def register(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    url = body.get("url") if isinstance(body, dict) else None
    problem = await _device(request).register_orchestrator(url)
    if problem is not None:
        return _error(problem, 404)
    return JSONResponse({"status": "success"})


async def deploy(request: Request) -> Response:
    status, answer = await _device(request).deploy(
        await request.body(), request.headers.get("content-type")
    )
    if isinstance(answer, str):
        return PlainTextResponse(answer, status)
    return JSONResponse(answer, status)


async def undeploy(request: Request) -> Response:
    if _device(request).delete(request.path_params["deployment_id"]):
        return JSONResponse({"status": "success"})
    return _error("deployment does not exist", 404)


async def history(request: Request) -> Response:
    return JSONResponse([entry.to_json() for entry in _device(request).history])


async def history_entry(request: Request) -> Response:
    entry = _device(request).find(request.path_params["request_id"])
    if entry is None:
        return _error("no matching entry in history", 404)
    return JSONResponse(entry.to_json(), 200 if entry.success else 500)


async def module_result(request: Request) -> Response:
    device = _device(request)
    try:
        module = safe_name(request.path_params["module"])
        name = safe_name(request.path_params["file"])
    except ValueError:
        return _error("no such file", 404)
    path = device.folder / "params" / module / name
    if not path.is_file():
        return _error("no such file", 404)
    # Read here, not with FileResponse: its worker threads would outlive the request.
    return Response(path.read_bytes(), media_type="application/octet-stream")


async def execute(request: Request) -> Response:
    device = _device(request)
    deployment_id = request.path_params["deployment_id"]
    module = request.path_params["module"]
    found = device.deployments.get(deployment_id)
    if found is None:
        return _error("deployment does not exist", 404)
    if module not in found.modules:
        return _error(f"module {module} not found for this deployment")
    try:
        uploads = _save_uploads(request, await request.body(), device.folder / "uploads")
    except ValueError as exc:
        return _error(str(exc))
    # Flask's `request.args`: the first value of each name, in order; matched by position.
    args: dict[str, str] = {}
    for name, value in parse_qsl(request.url.query, keep_blank_values=True):
        args.setdefault(name, value)
    entry = await device.execute(
        deployment_id,
        module,
        request.path_params["function"],
        method=request.method,
        args=args,
        files=uploads,
    )
    # Built from the Host header, like the supervisor's `request.root_url`.
    base = str(request.base_url).rstrip("/")
    return JSONResponse({"resultUrl": f"{base}/request-history/{entry.request_id}"})


def _save_uploads(request: Request, body: bytes, folder: Path) -> dict[str, str]:
    """Save the multipart file parts (those with a filename, as Flask's `request.files`).

    Parsed with the standard library's email parser, not Starlette's `request.form()`: its
    UploadFile reads large parts through worker threads that outlive the request.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return {}
    header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    saved: dict[str, str] = {}
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is None:
            continue
        path = folder / safe_name(name)
        payload: Any = part.get_payload(decode=True)
        path.write_bytes(payload if isinstance(payload, bytes) else b"")
        saved[name] = str(path)
    return saved


ROUTES = [
    Route("/.well-known/wasmiot-device-description", description),
    Route("/health", health),
    Route("/register", register, methods=["POST"]),
    Route("/deploy", deploy, methods=["POST"]),
    Route("/deploy/{deployment_id}", undeploy, methods=["DELETE"]),
    Route("/request-history", history),
    Route("/request-history/{request_id}", history_entry),
    Route("/module_results/{module}/{file}", module_result),
    Route("/{deployment_id}/modules/{module}/{function}", execute, methods=["GET", "POST"]),
]
