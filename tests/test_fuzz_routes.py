"""Fuzzing the POST routes through the real app: junk gets a 4xx, never a 5xx (issue 12, item 4).

The app is the real one (`create_app`) served by uvicorn on 127.0.0.1, over a real SQLite store
that holds the sample repository as its desired commit, with the real deployment runner and the
real log sink. Two parts are fakes, because the real ones would send traffic beyond this
machine: the introducer (a registration makes it call the addresses it names, which fuzzing
makes up) only records what it was handed, and the fetch trigger of the webhook does nothing.
Nothing is placed on a device, so `/execute` never leaves the orchestrator either.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import copy_sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_metrics_security import live_app
from test_openapi_doc import CHECKS, SCHEMATHESIS

from gitops_orchestrator import manifests, repo, running
from gitops_orchestrator.logs import LogSink
from gitops_orchestrator.models import CommitInfo
from gitops_orchestrator.settings import WebSettings
from gitops_orchestrator.store import Store
from gitops_orchestrator.web import app as web_app

SECRET = "fuzz-secret"
FUZZED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow],
)  # fmt: skip


class RecordingIntroducer:
    """Takes registrations without calling anyone (the real one would dial made-up addresses)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, list[str], int, bool]] = []

    def submit(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None:
        self.submitted.append((name, addresses, port, tls))


class NoFetch:
    def trigger(self) -> None: ...


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    folder = tmp_path
    sample = copy_sample(folder / "repo")
    store = Store.open(folder / "data")
    tree = repo.FolderTree(sample)
    info = CommitInfo(sha="f" * 40, author="F <f@example.com>", time=int(time.time()), message="m")
    store.record_commit(info, manifests.load(tree), read=tree.read, now=time.time())
    http = httpx.AsyncClient()
    services = web_app.Services(
        store=store, repo=str(sample), branch="main", fetch=NoFetch(),
        introducer=RecordingIntroducer(), runner=running.Runner(store, http),
        logs=LogSink(store),
    )  # fmt: skip
    try:
        with live_app(
            store, services=services, settings=WebSettings(webhook_secret=SECRET)
        ) as served:
            yield served
    finally:
        store.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 5000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.fixed_dictionaries(
        {"name": st.text(max_size=70), "port": json_values, "properties": json_values,
         "addresses": json_values}
    ).map(lambda value: json.dumps(value).encode()),
)  # fmt: skip
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "multipart/form-data",
     "multipart/form-data; boundary=x", "text/plain", "", "application/json; charset=latin-1"]
)  # fmt: skip
# Any byte a header value may carry on the wire (RFC 9110: visible, space, tab and obs-text).
HEADER_BYTES = [0x09, *range(0x20, 0x7F), *range(0x80, 0x100)]
header_text = st.lists(st.sampled_from(HEADER_BYTES), max_size=80).map(
    lambda values: bytes(values).strip()
)
paths = st.sampled_from(
    ["/file/device/discovery/register", "/device/logs", "/hooks/git", "/execute/fibo-chain",
     "/execute/no-such", "/execute/count"]
)  # fmt: skip


def expect_no_server_error(answer: httpx.Response) -> None:
    what = (
        f"{answer.request.url} {answer.request.headers} -> {answer.status_code} {answer.text[:300]}"
    )
    # 503: /execute of a deployment that is on no device (nothing is placed here).
    assert answer.status_code < 500 or answer.status_code == 503, what
    if answer.status_code >= 400:
        assert answer.headers.get("content-type") == "application/json", what
        assert answer.json()["error"]["status"] == answer.status_code, what


@FUZZED
@given(path=paths, body=bodies, content_type=content_types, signature=header_text)
def test_junk_posts_get_a_4xx(
    client: httpx.Client, path: str, body: bytes, content_type: str, signature: bytes
) -> None:
    headers: dict[str, str | bytes] = {"Content-Type": content_type}
    if path == "/hooks/git":
        headers["X-Hub-Signature-256"] = b"sha256=" + signature
        headers["X-Gitea-Signature"] = signature
    expect_no_server_error(client.post(path, content=body, headers=headers))  # type: ignore[arg-type]


@FUZZED
@given(
    logdata=st.one_of(st.text(max_size=300), json_values.map(json.dumps)), field=st.text(max_size=8)
)
def test_log_posts_always_get_200(client: httpx.Client, logdata: str, field: str) -> None:
    answer = client.post("/device/logs", data={"logData": logdata, field or "x": "1"})
    assert answer.status_code == 200


@FUZZED
@given(query=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4))
def test_execute_queries_get_a_4xx(client: httpx.Client, query: dict[str, str]) -> None:
    expect_no_server_error(client.post("/execute/fibo-chain", params=query))


def test_schemathesis_on_every_post_route(client: httpx.Client, tmp_path: Path) -> None:
    """Positive and negative data from the OpenAPI document, for the routes `serve` can't fuzz."""
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{client.base_url}/openapi.json", "--checks", CHECKS,
         "--mode", "all", "--max-examples", "30", "--include-method", "POST",
         "--workers", "1", "--generation-database", "none", "--request-timeout", "10",
         "--suppress-health-check", "all", "--no-color", "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
