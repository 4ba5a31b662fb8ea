"""`/metrics`, `/readyz` and the access token, on real HTTP servers on loopback.

The app runs in uvicorn (in a thread of this process, or as a `serve` process); requests go
through httpx. `live_app` is shared with the other web tests.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import copy_sample, git_init_commit
from prometheus_client.parser import text_string_to_metric_families

from gitops_orchestrator.fleetdb import DeviceRecord, Event, PassRecord, StatusRecord
from gitops_orchestrator.models import CommitInfo, Devices, LoadResult, Problem, Snapshot
from gitops_orchestrator.settings import WebSettings
from gitops_orchestrator.store import Store
from gitops_orchestrator.web import app as web_app
from gitops_orchestrator.web import metrics, pages, security

TOKEN = "open-sesame-0123456789"
FAMILIES = {
    "gitops_sync_age_seconds": "gauge",
    "gitops_source_error": "gauge",
    "gitops_commits": "gauge",
    "gitops_devices": "gauge",
    "gitops_deploy_statuses": "gauge",
    "gitops_deploy_outcomes": "counter",
    "gitops_reconcile_pass_seconds": "histogram",
    "gitops_http_request_duration_seconds": "histogram",
}


class _Nothing:
    """The interfaces the app may trigger, doing nothing (these tests only read)."""

    @property
    def counts(self) -> dict[str, int]:
        return {}

    def trigger(self) -> None: ...

    def submit(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None: ...

    def accept(self, raw: str | None, *, peer: str | None) -> None: ...

    async def run(self, deployment: str, **options: Any) -> Any:
        raise AssertionError("nothing runs here")


@contextlib.contextmanager
def live_app(
    store: Store,
    *,
    token: str | None = None,
    services: web_app.Services | None = None,
    settings: WebSettings | None = None,
) -> Iterator[httpx.Client]:
    """The real app (`create_app`) served by uvicorn on 127.0.0.1, and a client for it.

    Without `services`, what the app may trigger does nothing (for tests that only read)."""
    nothing = _Nothing()
    services = services or web_app.Services(
        store=store, repo="/tmp/repo", branch="main", fetch=nothing, introducer=nothing,
        runner=nothing, logs=nothing,
    )  # fmt: skip
    app = web_app.create_app(services, settings or WebSettings(api_token=token))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", ws="none", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store.open(None)
    yield opened
    opened.close()


def commit(store: Store, sha: str, *, accepted: bool, now: float) -> None:
    info = CommitInfo(sha=sha, author="A <a@example.com>", time=int(now), message="m")
    if accepted:
        snapshot = Snapshot(commit_sha=sha, modules={}, deployments={}, devices=Devices())
        result = LoadResult(snapshot=snapshot, problems=())
    else:
        result = LoadResult(snapshot=None, problems=(Problem("devices.yaml", 1, "bad"),))
    store.record_commit(info, result, read=lambda path: b"", now=now)


def device(name: str, state: str) -> DeviceRecord:
    return DeviceRecord(
        device=name, url=f"http://127.0.0.1:9/{name}", addresses=("127.0.0.1",), port=9,
        interfaces=("fd_write",), platform={}, origin="registered", state=state,
        introduced_at=1.0, online_since=1.0, last_seen=1.0,
    )  # fmt: skip


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict[str, Any], family: str, suffix: str = "", **labels: str) -> float:
    """The sample of `family` (`suffix`: `_count` of a histogram) with exactly `labels`."""
    names = (family + suffix,) if suffix else (family, family + "_total")
    for sample in found[family].samples:
        if sample.labels == labels and sample.name in names:
            return float(sample.value)
    raise AssertionError(f"no {family}{suffix} sample with {labels}")


# Metrics


def test_store_figures_are_read_into_the_families(store: Store) -> None:
    now = time.time()
    commit(store, "a" * 40, accepted=True, now=now - 30)
    commit(store, "b" * 40, accepted=False, now=now - 10)
    for name, state in [("d1", "online"), ("d2", "online"), ("d3", "offline"), ("d4", "gone")]:
        store.upsert_device(device(name, state))
    outcomes = [Event("deployed", "x"), Event("deployed", "y"), Event("deploy_failed", "z"),
                Event("undeployed", "w"), Event("online", "not an outcome")]  # fmt: skip
    statuses = (StatusRecord("d1", "x", "synced", None, 0, now),
                StatusRecord("d2", "y", "failed", "boom", 3, now))  # fmt: skip
    store.record_pass(
        PassRecord(now=now, commit_sha="a" * 40, statuses=statuses, events=tuple(outcomes))
    )

    found = families(metrics.exposition(metrics.read_facts(store), now=now).decode())

    assert {name: found[name].type for name in FAMILIES} == FAMILIES
    assert 29 <= value(found, "gitops_sync_age_seconds") <= 31
    assert value(found, "gitops_commits", status="accepted") == 1
    assert value(found, "gitops_commits", status="rejected") == 1
    assert [value(found, "gitops_devices", state=s) for s in ("online", "offline", "gone")] == [
        2, 1, 1,
    ]  # fmt: skip
    assert value(found, "gitops_deploy_statuses", status="synced") == 1
    assert value(found, "gitops_deploy_statuses", status="failed") == 1
    assert value(found, "gitops_deploy_statuses", status="progressing") == 0
    assert value(found, "gitops_deploy_outcomes", action="deploy", outcome="ok") == 2
    assert value(found, "gitops_deploy_outcomes", action="deploy", outcome="failed") == 1
    assert value(found, "gitops_deploy_outcomes", action="undeploy", outcome="ok") == 1

    # Outcomes are counted as they come: later events add to the counter.
    store.add_events([Event("deployed", "again")], now=now)
    found = families(metrics.exposition(metrics.read_facts(store), now=now).decode())
    assert value(found, "gitops_deploy_outcomes", action="deploy", outcome="ok") == 3


def test_no_desired_commit_means_no_sync_age_sample(store: Store) -> None:
    found = families(metrics.exposition(metrics.read_facts(store), now=time.time()).decode())
    assert found["gitops_sync_age_seconds"].samples == []
    assert value(found, "gitops_commits", status="accepted") == 0


def test_requests_are_timed_by_route_template(store: Store) -> None:
    histogram = "gitops_http_request_duration_seconds_count"
    labels = {"method": "GET", "route": "/api/v1/devices/{name}", "status": "404"}
    before = metrics.INSTRUMENTS.registry.get_sample_value(histogram, labels) or 0
    with live_app(store) as client:
        assert client.get("/api/v1/devices/nobody").status_code == 404
        assert client.get("/no/such/path").status_code == 404
        text = client.get("/metrics").text
    assert metrics.INSTRUMENTS.registry.get_sample_value(histogram, labels) == before + 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert metrics.INSTRUMENTS.registry.get_sample_value(histogram, unmatched)
    assert "/api/v1/devices/nobody" not in text  # names never become labels


def test_reconcile_passes_are_observed() -> None:
    count = "gitops_reconcile_pass_seconds_count"
    before = metrics.INSTRUMENTS.registry.get_sample_value(count) or 0
    metrics.observe_pass(0.02)
    assert metrics.INSTRUMENTS.registry.get_sample_value(count) == before + 1


def test_metrics_and_readiness_of_a_serve_process(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    sha = git_init_commit(path)
    orchestrator = serve(str(path))
    orchestrator.until(lambda state: state["desired"] is not None, "the first commit")

    ready = orchestrator.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "desired": sha})
    answer = orchestrator.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    found = families(answer.text)
    assert {name: found[name].type for name in FAMILIES} == FAMILIES
    assert value(found, "gitops_commits", status="accepted") == 1
    assert value(found, "gitops_sync_age_seconds") >= 0
    synced = {"method": "GET", "route": "/api/v1/sync", "status": "200"}
    assert value(found, "gitops_http_request_duration_seconds", "_count", **synced) >= 1


# Readiness


def test_not_ready_before_the_first_sync(store: Store) -> None:
    with live_app(store) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["message"] == "waiting for the first sync of the repository"


def test_a_failed_first_fetch_is_the_reason(store: Store) -> None:
    store.record_fetch(now=time.time(), error="cannot reach git.example.com")
    with live_app(store) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert "cannot reach git.example.com" in answer.json()["error"]["message"]


def test_ready_after_a_first_commit_even_a_rejected_one(store: Store) -> None:
    commit(store, "c" * 40, accepted=False, now=time.time())
    with live_app(store) as client:
        answer = client.get("/readyz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ready", "desired": None})


def test_not_ready_when_the_store_is_closed() -> None:
    store = Store.open(None)
    commit(store, "d" * 40, accepted=True, now=time.time())
    with live_app(store) as client:
        assert client.get("/readyz").status_code == 200
        store.close()
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["message"].startswith("the store cannot be read")


# The access token

PROTECTED = ["/api/v1/sync", "/api/v1/devices", "/openapi.json", "/metrics", "/file/device",
             "/file/manifest", "/", "/devices"]  # fmt: skip


def test_without_a_token_protected_routes_answer_401(store: Store) -> None:
    with live_app(store, token=TOKEN) as client:
        for path in PROTECTED:
            answer = client.get(path)
            assert answer.status_code == 401, path
            assert answer.json()["error"]["status"] == 401
            assert "Authorization: Bearer" in answer.json()["error"]["message"]
            assert answer.headers["www-authenticate"] == "Bearer"
        execute = client.post("/execute/fibo-chain", json=[1])
        assert execute.status_code == 401
        wrong = client.get("/api/v1/sync", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        client.cookies.set(security.COOKIE, TOKEN)
        cookie = client.get("/api/v1/sync")
        assert cookie.status_code == 401  # the cookie holds a derived value, not the token


def test_a_bearer_token_opens_them(store: Store) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with live_app(store, token=TOKEN) as client:
        for path in ["/api/v1/sync", "/api/v1/devices", "/openapi.json", "/metrics",
                     "/file/device", "/file/manifest"]:  # fmt: skip
            assert client.get(path, headers=bearer).status_code == 200, path


def test_token_in_the_query_sets_a_cookie_that_opens_pages(store: Store) -> None:
    with live_app(store, token=TOKEN) as client:
        wrong = client.get("/devices", params={"token": "nope"})
        assert wrong.status_code == 401
        assert "does not match" in wrong.json()["error"]["message"]
        assert not client.cookies

        visit = client.get("/devices", params={"token": TOKEN, "state": "online"})
        assert visit.status_code == 303
        assert visit.headers["location"] == "/devices?state=online"
        assert TOKEN not in visit.headers["location"]
        set_cookie = visit.headers["set-cookie"]
        assert set_cookie.startswith(f"{security.COOKIE}=")
        assert TOKEN not in set_cookie
        assert "HttpOnly" in set_cookie
        assert "samesite=strict" in set_cookie.lower()
        assert "Path=/" in set_cookie

        # The client keeps the cookie, as a browser would.
        page = client.get("/")
        assert page.status_code == (200 if pages.ROUTES else 404)  # past the guard either way
        assert client.get("/api/v1/sync").status_code == 200
        bare = client.get("/", params={"token": TOKEN})
        assert (bare.status_code, bare.headers["location"]) == (303, "/")


def test_device_and_probe_routes_never_need_it(store: Store) -> None:
    with live_app(store, token=TOKEN) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503  # not ready, but not refused
        assert client.get("/file/module").status_code == 200
        assert client.get("/file/module/fibo").status_code == 404
        assert client.get("/file/module/fibo/wasm").status_code == 404
        assert client.get("/file/module/fibo/description").status_code == 404
        register = client.post("/file/device/discovery/register", json={"port": 1})
        assert register.status_code == 400
        assert client.post("/device/logs", data={"logData": "{}"}).status_code == 200
        assert client.post("/hooks/git", content=b"{}").status_code == 403  # HMAC's business


def test_without_a_token_nothing_is_checked(store: Store) -> None:
    with live_app(store) as client:
        for path in PROTECTED[:6]:
            assert client.get(path).status_code == 200, path


def test_the_middleware_for_a_configured_token() -> None:
    assert [m.cls for m in security.middleware(None)] == [metrics.RequestTimer]
    assert [m.cls for m in security.middleware("")] == [metrics.RequestTimer]
    timer, guard = security.middleware(TOKEN)
    assert (timer.cls, guard.cls, guard.kwargs) == (
        metrics.RequestTimer, security.TokenGuard, {"token": TOKEN},
    )  # fmt: skip


def test_the_guard_takes_its_token_from_the_constructor() -> None:
    guard = security.TokenGuard(app=lambda scope, receive, send: None, token=TOKEN)  # type: ignore[arg-type,return-value]
    assert guard._token({"type": "http", "app": None}) == TOKEN
    assert security.is_open("/file/module/fibo/wasm")
    assert security.is_open("/healthz")
    assert not security.is_open("/file/device")
    assert not security.is_open("/file/moduleX")
    assert not security.is_open("/healthz/")
