"""The JSON API through a real serve process: shapes, paging, ETags, events and their stream."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Orchestrator, copy_sample, git_init_commit, write_files


@pytest.fixture
def api(serve: Any, tmp_path: Path) -> tuple[Orchestrator, Path]:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path, "the sample")
    orchestrator: Orchestrator = serve(str(path))
    orchestrator.until(lambda state: state["desired"] is not None, "the first commit")
    return orchestrator, path


def test_lists_are_paged_and_carry_etags(api: tuple[Orchestrator, Path]) -> None:
    orchestrator, _ = api
    client = orchestrator.client
    page = client.get("/api/v1/deployments", params={"limit": 2})
    assert page.status_code == 200
    document = page.json()
    assert (document["total"], document["offset"], document["limit"]) == (3, 0, 2)
    assert [item["name"] for item in document["items"]] == ["banner", "double"]
    rest = client.get("/api/v1/deployments", params={"offset": 2}).json()
    assert [item["name"] for item in rest["items"]] == ["fibo-chain"]
    etag = page.headers["etag"]
    again = client.get("/api/v1/deployments", params={"limit": 2}, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": "x"}):
        answer = client.get("/api/v1/modules", params=bad)
        assert answer.status_code == 400
        assert set(answer.json()["error"]) == {"status", "message"}


def test_details_and_missing_names(api: tuple[Orchestrator, Path]) -> None:
    orchestrator, _ = api
    client = orchestrator.client
    module = client.get("/api/v1/modules/banner").json()
    assert module["exports"] == {"count": 0, "render": 1}
    assert module["requirements"] == ["fd_close", "fd_read", "fd_write", "path_open"]
    assert list(module["data"]) == ["greeting.txt"]
    assert module["description"]["openapi"] == "3.0.3"
    deployment = client.get("/api/v1/deployments/fibo-chain").json()
    assert [(s["module"], s["function"]) for s in deployment["steps"]] == [
        ("fibo", "fibo"),
        ("double", "double"),
    ]
    # No device has registered: the named device is unknown, so the step cannot be placed.
    assert deployment["steps"][0]["status"] == "unplaceable"
    assert "sup1" in deployment["steps"][0]["reason"]
    for missing in ("/api/v1/modules/nope", "/api/v1/deployments/nope", "/api/v1/devices/x"):
        answer = client.get(missing)
        assert answer.status_code == 404
        assert answer.json()["error"]["status"] == 404
    commits = client.get("/api/v1/commits").json()
    assert commits["total"] == 1
    assert len(commits["items"][0]["sha"]) == 40


def test_events_are_filtered_and_streamed(api: tuple[Orchestrator, Path]) -> None:
    orchestrator, path = api
    client = orchestrator.client
    events = client.get("/api/v1/events").json()
    assert [e["kind"] for e in events["items"]] == ["commit_accepted"]
    received: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(base_url=orchestrator.url, timeout=10) as stream_client,
            stream_client.stream("GET", "/api/v1/events/stream") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                ready.set()
                if line.startswith("data: "):
                    received.append(json.loads(line.removeprefix("data: ")))
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    assert ready.wait(10)
    write_files(path, {"deployments/double.yaml": "name: double\nsequence: 3\n"})
    bad = git_init_commit(path, "break double")
    listener.join(timeout=15)
    assert received, "no event arrived on the stream"
    assert received[0]["kind"] == "commit_rejected"
    assert received[0]["commit_sha"] == bad
    only_commits = client.get("/api/v1/events", params={"deployment": "double"}).json()
    assert only_commits["items"] == []


def test_commit_history_says_what_each_commit_changed(api: tuple[Orchestrator, Path]) -> None:
    orchestrator, path = api
    (path / "deployments/banner.yaml").unlink()
    write_files(path, {"modules/fibo/module.yaml": (path / "modules/fibo/module.yaml")
                       .read_text().replace("method: get", "method: post")})  # fmt: skip
    second = git_init_commit(path, "fibo is queued; no banner")
    orchestrator.until(lambda state: state["desired"]["sha"] == second, "the second commit")
    items = orchestrator.client.get("/api/v1/commits").json()["items"]
    assert items[0]["changes"] == [
        {"kind": "module", "name": "fibo", "change": "changed"},
        {"kind": "deployment", "name": "banner", "change": "removed"},
    ]
    assert items[1]["changes"] is None  # the first commit has nothing before it
    page = orchestrator.client.get("/commits").text
    assert "removed deployment" in page
    assert 'href="/modules/fibo"' in page
