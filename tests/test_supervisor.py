"""`SupervisorClient`: what counts as success, and how every failure becomes one of ours.

This is the one place where the device is faked: the fakes are plain callables handed to
`httpx.MockTransport` (httpx's own test style), so each test states the exact answer a device
gives and the exact request it receives. Everywhere else, tests talk to simulated supervisors
over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from test_serve import free_port

from gitops_orchestrator.errors import SupervisorError, SupervisorRejected, SupervisorUnreachable
from gitops_orchestrator.supervisor import (
    DESCRIPTION_PATH,
    MAX_ANSWER,
    MAX_NESTING,
    SupervisorClient,
)

T = TypeVar("T")
Handler = Callable[[httpx.Request], httpx.Response]

DEVICE = "http://10.0.0.5:5000"
BODY: dict[str, Any] = {
    "deploymentId": "fibo-chain",
    "modules": [
        {
            "id": "fibo",
            "name": "fibo",
            "urls": {
                "binary": "http://orch:3000/file/module/fibo/wasm?digest=ab",
                "description": "http://orch:3000/file/module/fibo/description",
                "other": {},
            },
        }
    ],
    "endpoints": {},
    "instructions": {"modules": {}},
    "mounts": {},
}
ERROR_PAGE = (
    "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    "<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was "
    "unable to complete your request. Either the server is overloaded or there is an error "
    "in the application.</p>\n" + "<!-- padding -->\n" * 40
)


class Recorder:
    """A fake device: answers every request with `answer(request)` and keeps the requests."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def call(handler: Handler, action: Callable[[SupervisorClient], Coroutine[Any, Any, T]]) -> T:
    """Run `action` on a SupervisorClient whose device is `handler`."""

    async def main() -> T:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await action(SupervisorClient(client))

    return asyncio.run(main())


def answering(status: int, **content: Any) -> Recorder:
    return Recorder(lambda _request: httpx.Response(status, **content))


def deploy(supervisor: SupervisorClient) -> Coroutine[Any, Any, None]:
    return supervisor.deploy(DEVICE, BODY)


# -- deploy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [{"status": "success"}, {"status": "success", "deploymentId": "fibo-chain"}],
    ids=["python", "rust"],
)
def test_deploy_succeeds_on_status_success(answer: dict[str, str]) -> None:
    device = answering(200, json=answer)
    call(device, deploy)
    [request] = device.requests
    assert request.method == "POST"
    assert str(request.url) == DEVICE + "/deploy"  # one slash, unlike the original
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == BODY


@pytest.mark.parametrize(
    ("status", "content", "shown"),
    [
        (200, {"json": {"message": "Non-existent or malformed deployment data"}}, "malformed"),
        (200, {"json": {"status": "error"}}, "200"),
        (200, {"json": ["success"]}, "200"),
        (200, {"text": "success"}, "200 success"),
        (200, {"content": b""}, "200"),
        (400, {"json": {"status": "success"}}, "400"),
        (400, {"json": {"result": "bad schema", "status": "error"}}, "bad schema"),
        (500, {"json": {"result": "KeyError: 'mounts'", "status": "error"}}, "KeyError"),
        (503, {"text": "device stopped"}, "503 device stopped"),
    ],
    ids=[
        "200-message", "200-status-error", "200-json-list", "200-not-json", "200-empty",
        "400-even-with-success", "400-json", "500-json", "503-text",
    ],
)  # fmt: skip
def test_deploy_anything_but_success_is_rejected(
    status: int, content: dict[str, Any], shown: str
) -> None:
    with pytest.raises(SupervisorRejected, match="deploy refused") as raised:
        call(answering(status, **content), deploy)
    assert shown in str(raised.value)


def test_a_500_html_page_becomes_a_short_one_line_message() -> None:
    page = answering(500, text=ERROR_PAGE, headers={"Content-Type": "text/html"})
    with pytest.raises(SupervisorRejected) as raised:
        call(page, deploy)
    message = str(raised.value)
    assert message.startswith("deploy refused: 500 <!doctype html> <html lang=en>")
    assert "\n" not in message
    assert len(message) <= 250
    assert message.endswith("...")


def test_an_answer_over_the_limit_is_rejected_whatever_it_says() -> None:
    padding = " " * MAX_ANSWER
    huge = answering(200, content=f'{{"status": "success"{padding}}}'.encode())
    with pytest.raises(SupervisorRejected, match="more than"):
        call(huge, deploy)
    # The limit itself is fine.
    exact = '{"status":"success"}'
    fits = answering(200, content=(exact + " " * (MAX_ANSWER - len(exact))).encode())
    call(fits, deploy)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("server disconnected without sending a response"),
        httpx.ReadError("connection reset by peer"),
    ],
    ids=["refused", "connect-timeout", "read-timeout", "disconnected", "reset"],
)
def test_no_answer_is_unreachable(failure: httpx.TransportError) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        failure.request = request
        raise failure

    for action in (
        deploy,
        lambda s: s.undeploy(DEVICE, "fibo-chain"),
        lambda s: s.register(DEVICE, "http://orch:3000"),
        lambda s: s.description(DEVICE),
    ):
        with pytest.raises(SupervisorUnreachable) as raised:
            call(broken, action)
        assert raised.value.__cause__ is failure
        assert DEVICE in str(raised.value)


def test_a_timeout_says_so() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(
        SupervisorUnreachable, match=r"POST http://10\.0\.0\.5:5000/deploy timed out"
    ):
        call(slow, deploy)


def test_a_real_refused_connection_is_unreachable() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            # A port just bound and released: nothing listens on it.
            await SupervisorClient(client).deploy(f"http://127.0.0.1:{free_port()}", BODY)

    with pytest.raises(SupervisorUnreachable):
        asyncio.run(main())


# -- undeploy and register -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "content"),
    [
        (200, {"json": {"status": "success"}}),
        (404, {"json": {"result": "deployment does not exist", "status": "error"}}),
        (404, {"text": "Not Found"}),
    ],
    ids=["removed", "already-gone", "already-gone-text"],
)
def test_undeploy_is_done_on_200_and_404(status: int, content: dict[str, Any]) -> None:
    device = answering(status, **content)
    call(device, lambda s: s.undeploy(DEVICE, "fibo-chain"))
    [request] = device.requests
    assert request.method == "DELETE"
    assert str(request.url) == DEVICE + "/deploy/fibo-chain"


@pytest.mark.parametrize("status", [400, 500, 503])
def test_undeploy_refused(status: int) -> None:
    with pytest.raises(SupervisorRejected, match=f"undeploy refused: {status}"):
        call(answering(status, text="nope"), lambda s: s.undeploy(DEVICE, "fibo-chain"))


def test_register_posts_our_url() -> None:
    device = answering(200, json={"status": "success"})
    call(device, lambda s: s.register(DEVICE, "http://192.168.1.2:3000"))
    [request] = device.requests
    assert (request.method, str(request.url)) == ("POST", DEVICE + "/register")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"url": "http://192.168.1.2:3000"}


def test_register_refused_on_the_supervisors_404() -> None:
    refused = answering(404, json={"result": "Orchestrator url is invalid", "status": "error"})
    with pytest.raises(SupervisorRejected, match="url is invalid"):
        call(refused, lambda s: s.register(DEVICE, "nonsense"))


# -- description -----------------------------------------------------------------------------


def test_description_is_returned_as_the_device_sent_it() -> None:
    document = {
        "platform": {"cpu": {"humanReadableName": "Dual-core Arm Cortex-M0+"}},
        "supervisorInterfaces": ["millis", "fd_write"],
    }
    device = answering(200, json=document)
    assert call(device, lambda s: s.description(DEVICE)) == document
    [request] = device.requests
    assert (request.method, str(request.url)) == ("GET", DEVICE + DESCRIPTION_PATH)


def test_description_with_no_interfaces_is_fine() -> None:
    assert call(
        answering(200, json={"supervisorInterfaces": []}), lambda s: s.description(DEVICE)
    ) == {"supervisorInterfaces": []}


@pytest.mark.parametrize(
    ("status", "content", "match"),
    [
        (200, {"text": "<html>hello</html>"}, "answered 200"),
        (200, {"json": ["millis"]}, "answered 200"),
        (200, {"json": {"platform": {}}}, "not a list of names"),
        (200, {"json": {"supervisorInterfaces": "millis"}}, "not a list of names"),
        (200, {"json": {"supervisorInterfaces": ["millis", 5]}}, "not a list of names"),
        (200, {"json": {"supervisorInterfaces": [["millis"]]}}, "not a list of names"),
        (200, {"json": {"supervisorInterfaces": None}}, "not a list of names"),
        (404, {"json": {"supervisorInterfaces": ["millis"]}}, "answered 404"),
        (500, {"text": "Internal Server Error"}, "answered 500 Internal Server Error"),
    ],
    ids=[
        "not-json", "json-list", "interfaces-missing", "interfaces-string",
        "interfaces-number", "interfaces-nested", "interfaces-null", "404", "500",
    ],
)  # fmt: skip
def test_description_of_the_wrong_shape_is_rejected(
    status: int, content: dict[str, Any], match: str
) -> None:
    with pytest.raises(SupervisorRejected, match=match):
        call(answering(status, **content), lambda s: s.description(DEVICE))


# -- bounded answers (issue 11, seen case 8) -------------------------------------------------

DEEP = "[" * 60000  # what the hostile device of seen case 8 answered


def health(supervisor: SupervisorClient) -> Coroutine[Any, Any, Any]:
    return supervisor.health(DEVICE, forwarded_for="10.0.0.1", timeout=5.0)


EVERY_CALL: dict[str, Callable[[SupervisorClient], Coroutine[Any, Any, Any]]] = {
    "deploy": deploy,
    "health": health,
    "description": lambda s: s.description(DEVICE),
    "register": lambda s: s.register(DEVICE, "http://orch:3000"),
    "undeploy": lambda s: s.undeploy(DEVICE, "fibo-chain"),
    "fetch": lambda s: fetch_json(s),
}
# The calls whose answer is read as JSON (register and undeploy look at the status only).
JSON_CALLS = {name: EVERY_CALL[name] for name in ("deploy", "health", "description", "fetch")}


async def fetch_json(supervisor: SupervisorClient) -> Any:
    answer = await supervisor.fetch("GET", DEVICE + "/request-history/fibo:fibo:fibo:1")
    return answer.json()


@pytest.mark.parametrize("action", JSON_CALLS.values(), ids=JSON_CALLS.keys())
@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_is_the_devices_failure_not_a_recursion_error(
    action: Callable[[SupervisorClient], Coroutine[Any, Any, Any]], status: int
) -> None:
    hostile = answering(status, content=DEEP.encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(SupervisorRejected, match="nested deeper than"):
        call(hostile, action)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 900])
def test_nesting_over_the_limit_is_rejected_even_when_python_could_parse_it(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    document = '{"cpuUsage": 1, "deep": ' + nested + "}"
    hostile = answering(200, content=document.encode())
    with pytest.raises(SupervisorRejected, match=f"nested deeper than {MAX_NESTING}"):
        call(hostile, health)


def test_nesting_up_to_the_limit_is_fine() -> None:
    nested = "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1)
    report, known = call(answering(200, content=f'{{"deep": {nested}}}'.encode()), health)
    assert "deep" in report
    assert known is None


class Endless(httpx.AsyncByteStream):
    """An answer that never ends, counting what was read of it."""

    def __init__(self, chunk: bytes = b" " * 65536) -> None:
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self) -> Any:
        while self.sent < 64 * MAX_ANSWER:  # a bound, so a broken client fails, not hangs
            self.sent += len(self.chunk)
            yield self.chunk


@pytest.mark.parametrize("action", EVERY_CALL.values(), ids=EVERY_CALL.keys())
def test_an_endless_answer_is_read_only_up_to_the_limit(
    action: Callable[[SupervisorClient], Coroutine[Any, Any, Any]],
) -> None:
    stream = Endless()
    with pytest.raises(SupervisorRejected, match=f"more than {MAX_ANSWER} bytes"):
        call(lambda _request: httpx.Response(200, stream=stream), action)
    assert stream.sent <= MAX_ANSWER + 2 * len(stream.chunk)


def test_a_declared_length_over_the_limit_is_rejected_before_reading() -> None:
    stream = Endless()
    headers = {"Content-Length": str(10 * MAX_ANSWER)}
    with pytest.raises(SupervisorRejected, match=f"more than {MAX_ANSWER} bytes"):
        call(lambda _request: httpx.Response(200, stream=stream, headers=headers), health)
    assert stream.sent == 0


def test_a_compressed_answer_is_not_inflated() -> None:
    import gzip

    bomb = gzip.compress(b" " * (8 * MAX_ANSWER))
    device = answering(200, content=bomb, headers={"Content-Encoding": "gzip"})
    with pytest.raises(SupervisorRejected, match="gzip"):
        call(device, health)
    [request] = device.requests
    assert request.headers["accept-encoding"] == "identity"


def test_fetch_returns_status_and_json_for_the_runner() -> None:
    entry = {"result": ["233", None], "success": True}
    answer = call(
        answering(200, json=entry),
        lambda s: s.fetch("GET", DEVICE + "/request-history/x", params={"param0": "1"}),
    )
    assert (answer.status_code, answer.json()) == (200, entry)
    assert call(answering(404, text="pending"), EVERY_CALL["fetch"]) is None


# -- health checks over real sockets, through httpx and through `probe` -------------------------


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


def answering_with(raw: bytes) -> Serve:
    """A device that reads the request head, writes `raw` and closes (like Werkzeug)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        writer.close()

    return serve


def check_on(serve: Serve, *, direct: bool, timeout: float = 5.0) -> Any:
    """`health()` of a real server on 127.0.0.1 running `serve` per connection."""

    async def main() -> Any:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                supervisor = SupervisorClient(client, direct_health=direct)
                return await supervisor.health(
                    f"http://127.0.0.1:{port}", forwarded_for="127.0.0.1", timeout=timeout
                )
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def http_answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*head, "Connection: close"]) + "\r\n\r\n").encode() + body


BOTH = pytest.mark.parametrize("direct", [False, True], ids=["httpx", "probe"])


@BOTH
def test_a_health_answer_as_werkzeug_sends_it(direct: bool) -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        body = b'{\n  "cpuUsage": 0.0,\n  "memoryUsage": 0.01696944731363944\n}\n'
        writer.write(http_answer(body, "Server: Werkzeug/3.1.9", "Custom-Orchestrator-Set: false"))
        writer.close()

    report, known = check_on(serve, direct=direct)
    assert report == {"cpuUsage": 0.0, "memoryUsage": 0.01696944731363944}
    assert known is False
    [head] = seen
    assert head.startswith(b"GET /health HTTP/1.1\r\n")
    assert b"\r\nx-forwarded-for: 127.0.0.1\r\n" in head.lower()
    assert b"\r\naccept-encoding: identity\r\n" in head.lower()


@BOTH
@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        (http_answer(DEEP.encode()), SupervisorRejected, "nested deeper than"),
        (http_answer(b"{}", f"Content-Length: {10 * MAX_ANSWER}"), SupervisorRejected, "more than"),
        (http_answer(b"x", "Content-Encoding: gzip"), SupervisorRejected, "gzip"),
        (http_answer(b"<html></html>", status="500 INTERNAL SERVER ERROR"), SupervisorRejected,
         "answered 500"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", SupervisorError, r"127\.0\.0\.1"),
        (b"", SupervisorUnreachable, r"127\.0\.0\.1"),
    ],
    ids=["deep", "declared-too-long", "gzip", "500", "not-http", "closed-at-once"],
)  # fmt: skip
def test_a_bad_health_answer_is_the_devices_failure(
    direct: bool, raw: bytes, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        check_on(answering_with(raw), direct=direct)


@BOTH
def test_an_endless_health_answer_stops_at_the_limit(direct: bool) -> None:
    sent = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 65536
        try:
            while sent[0] < 64 * MAX_ANSWER:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent[0] += len(chunk)
        except ConnectionError:
            pass  # the client hung up: what we want
        writer.close()

    with pytest.raises(SupervisorRejected, match=f"more than {MAX_ANSWER} bytes"):
        check_on(serve, direct=direct)
    assert sent[0] < 16 * MAX_ANSWER  # socket buffers aside, it stopped reading


@BOTH
def test_a_hanging_device_times_out(direct: bool) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            await asyncio.sleep(5)
        finally:
            writer.close()

    started = time.monotonic()
    with pytest.raises(SupervisorUnreachable, match="timed out"):
        check_on(serve, direct=direct, timeout=0.3)
    assert time.monotonic() - started < 3


@BOTH
def test_a_refused_health_check_is_unreachable(direct: bool) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            await SupervisorClient(client, direct_health=direct).health(
                f"http://127.0.0.1:{free_port()}", forwarded_for="127.0.0.1", timeout=2
            )

    with pytest.raises(SupervisorUnreachable, match=r"127\.0\.0\.1"):
        asyncio.run(main())
