"""Junk at the open routes gets a 4xx with a reason, never a 500 (the hostile-network issue).

The real app runs in uvicorn on 127.0.0.1 (`live_app`); requests are sent as a stranger on the
network would send them, some byte for byte over a raw socket where httpx would tidy them up.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Orchestrator, copy_sample, git_init_commit
from test_metrics_security import TOKEN, live_app

from gitops_orchestrator.store import Store
from gitops_orchestrator.web import hooks

DEEP = "[" * 2000 + "]" * 2000


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store.open(None)
    yield opened
    opened.close()


def raw_get(client: httpx.Client, target: str) -> tuple[int, str]:
    """`GET target` exactly as written (httpx would resolve `//host/` against its base):
    the status and the `Location` header."""
    base = urlsplit(str(client.base_url))
    connection = http.client.HTTPConnection(base.hostname or "", base.port, timeout=5)
    try:
        connection.request("GET", target)
        answer = connection.getresponse()
        return answer.status, answer.getheader("location") or ""
    finally:
        connection.close()


@pytest.mark.parametrize(
    "target", ["//evil.example/?token=" + TOKEN, "///evil.example/x?token=" + TOKEN]
)
def test_the_token_redirect_never_leaves_this_server(store: Store, target: str) -> None:
    with live_app(store, token=TOKEN) as client:
        status, location = raw_get(client, target)
        assert status == 303
        assert location.startswith("/")
        assert not location.startswith("//"), location
        assert urlsplit(location).netloc == ""


@pytest.mark.parametrize(
    "header", ["x-hub-signature-256", "x-gitea-signature"], ids=["github", "gitea"]
)
def test_a_non_ascii_signature_is_refused_not_a_crash(header: str) -> None:
    body = b'{"ref": "refs/heads/main"}'
    value = "sha256=caf\u00e9" if header == "x-hub-signature-256" else "caf\u00e9"
    github = value if header == "x-hub-signature-256" else None
    gitea = value if header == "x-gitea-signature" else None
    assert not hooks.is_signed(body, b"secret", github=github, gitea=gitea)


def test_non_ascii_signatures_over_http_get_401(serve_with_secret: httpx.Client) -> None:
    for header in ("X-Hub-Signature-256", "X-Gitea-Signature"):
        value = "sha256=\u00e9\u00e9" if header.startswith("X-Hub") else "\u00e9\u00e9"
        # httpx sends str headers as ASCII; bytes go on the wire as they are.
        answer = serve_with_secret.post(
            "/hooks/git", content=b"{}", headers={header: value.encode("utf-8")}
        )
        assert answer.status_code == 401, (header, answer.text)


@pytest.fixture
def serve_with_secret(serve: Callable[..., Orchestrator], tmp_path: Path) -> Iterator[httpx.Client]:
    repo = copy_sample(tmp_path / "repo")
    git_init_commit(repo)
    orchestrator = serve(str(repo))
    orchestrator.until(lambda state: state["desired"] is not None, "the sample to be desired")
    return orchestrator.client


def test_deep_json_is_a_bad_request_everywhere(serve_with_secret: httpx.Client) -> None:
    client = serve_with_secret
    headers = {"Content-Type": "application/json"}
    execute = client.post("/execute/fibo-chain", content=DEEP, headers=headers)
    assert execute.status_code == 400, execute.text
    assert "nested" in execute.json()["error"]["message"]
    register = client.post("/file/device/discovery/register", content=DEEP, headers=headers)
    assert register.status_code == 400, register.text
    deep_object = '{"name": "sup9", "port": 5000, "x": ' + DEEP + "}"
    register = client.post("/file/device/discovery/register", content=deep_object)
    assert register.status_code == 400, register.text
    logs = client.post("/device/logs", data={"logData": DEEP})
    assert logs.status_code == 200


def test_an_empty_address_property_is_no_address(serve_with_secret: httpx.Client) -> None:
    """The OpenAPI document allows any string; an empty one means the peer's address."""
    registration = {
        "name": "sup9", "port": 5009, "type": "_webthing._tcp.local.",
        "properties": {"path": "/", "tls": "0", "address": ""},
    }  # fmt: skip
    answer = serve_with_secret.post("/file/device/discovery/register", json=registration)
    assert answer.status_code == 204, answer.text


def test_wrong_argument_counts_are_refused_before_any_device_is_called(
    serve_with_secret: httpx.Client,
) -> None:
    """`fibo` takes one integer: `[]` or `[1, 2]` are the caller's mistakes (400), not 502."""
    client = serve_with_secret
    for body in ([], [1, 2], {"param0": 1, "param1": 2}, [[1]], [{"a": 1}]):
        # Nothing is deployed here (no devices): the arguments are checked before that (503).
        answer = client.post("/execute/fibo-chain", content=json.dumps(body))
        assert answer.status_code == 400, (body, answer.text)
