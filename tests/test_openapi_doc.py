"""The OpenAPI document: checked in, complete, valid, and true of a live server (schemathesis)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
from conftest import copy_sample, git_init_commit
from starlette.routing import Mount, Route
from test_metrics_security import _Nothing, live_app

from gitops_orchestrator.store import Store
from gitops_orchestrator.web import app as web_app
from gitops_orchestrator.web import openapi_doc, security

ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = ROOT / "schema" / "openapi.json"
SCHEMATHESIS = Path(sys.executable).with_name("st")
# Never fuzzed: the event stream never ends; a registration makes the server call the
# addresses it names; /execute calls devices. Each has its own tests.
NOT_FUZZED = r"^/api/v1/events/stream$|^/file/device/discovery/register$|^/execute/"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")  # fmt: skip


def test_checked_in_document_is_current() -> None:
    on_disk = CHECKED_IN.read_text(encoding="utf-8")
    assert on_disk == openapi_doc.rendered(), (
        "stale: run `python -m gitops_orchestrator.web.openapi_doc` and commit schema/"
    )


def test_every_schema_is_valid_json_schema() -> None:
    document = openapi_doc.document()
    assert document["openapi"].startswith("3.1")
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_route_is_documented_and_every_path_is_a_route() -> None:
    nothing = _Nothing()
    services = web_app.Services(
        store=None, repo="", branch="", fetch=nothing, introducer=nothing,  # type: ignore[arg-type]
        runner=nothing, logs=nothing,
    )  # fmt: skip
    routes = set()
    for route in web_app.create_app(services).routes:
        if isinstance(route, Mount):
            routes.add(route.path + "/{path}")
        elif isinstance(route, Route):
            routes.add(route.path)
    assert set(openapi_doc.document()["paths"]) == routes


def test_cookie_name_agrees_with_the_guard() -> None:
    schemes = openapi_doc.document()["components"]["securitySchemes"]
    assert schemes["cookie"]["name"] == security.COOKIE


def test_open_routes_are_marked_open() -> None:
    for path, item in openapi_doc.document()["paths"].items():
        for operation in item.values():
            if security.is_open(path.replace("{name}", "x").replace("{file}", "wasm")):
                assert operation.get("security") == [], path
            else:
                assert "security" not in operation, path
                assert "401" in operation["responses"], path


def test_schemathesis_finds_nothing_on_a_live_server(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    # Quiet: `serve` pipes stderr unread, and hundreds of access-log lines would fill the pipe.
    orchestrator = serve(str(path), "--log-level", "warning")
    orchestrator.until(lambda state: state["desired"] is not None, "the first commit")
    served = orchestrator.client.get("/openapi.json")
    assert served.json() == json.loads(CHECKED_IN.read_text(encoding="utf-8"))

    # Bounded: a few examples per operation, one worker (hypothesis is not thread-safe here),
    # no health checks (on a busy machine "too slow" would fail the run, not the server).
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{orchestrator.url}/openapi.json", "--checks", CHECKS,
         "--max-examples", "10", "--exclude-path-regex", NOT_FUZZED,
         "--workers", "1", "--generation-database", "none", "--request-timeout", "10",
         "--suppress-health-check", "all",
         "--no-color", "--report-dir", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=90, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_an_offset_past_sqlite_integers_is_a_client_error() -> None:
    store = Store.open(None)
    try:
        with live_app(store) as client:
            answer = client.get("/api/v1/commits", params={"offset": 2**64})
        assert answer.status_code == 400
    finally:
        store.close()
