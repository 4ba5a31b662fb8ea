"""Every commit has its own page and JSON: what it changed, its problems, its events.

A real `serve` follows a real git repository; the commits are made with the git CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import Orchestrator, copy_sample, git_init_commit, write_files


def test_each_commit_has_its_own_page_and_json(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    first = git_init_commit(path, "the sample")
    orchestrator: Orchestrator = serve(str(path))
    orchestrator.until(lambda s: s["desired"] and s["desired"]["sha"] == first, "the sample")
    write_files(path, {"deployments/broken.yaml": "name: broken\nsequence: []\n"})
    bad = git_init_commit(path, "a deployment without steps")
    orchestrator.until(lambda s: s["last_seen"]["sha"] == bad, "the rejection")
    (path / "deployments/broken.yaml").unlink()
    (path / "deployments/banner.yaml").unlink()
    write_files(path, {
        "deployments/again.yaml": "name: again\nsequence:\n- {module: double, function: double}\n",
        "modules/fibo/module.yaml": (path / "modules/fibo/module.yaml").read_text()
        .replace("method: get", "method: post"),
        "devices.yaml": (path / "devices.yaml").read_text().replace("garage", "cellar"),
    })  # fmt: skip
    third = git_init_commit(path, "again, not banner; fibo is a POST")
    orchestrator.until(lambda s: s["desired"]["sha"] == third, "the third commit")
    client = orchestrator.client

    accepted = client.get(f"/api/v1/commits/{third}")
    assert accepted.status_code == 200
    view = accepted.json()
    assert (view["sha"], view["status"], view["problems"]) == (third, "accepted", [])
    assert view["previous_accepted"] == first  # the rejected commit in between ran nowhere
    assert view["changes"] == [
        {"kind": "module", "name": "fibo", "change": "changed"},
        {"kind": "deployment", "name": "again", "change": "added"},
        {"kind": "deployment", "name": "banner", "change": "removed"},
        {"kind": "devices", "name": "devices.yaml", "change": "changed"},
    ]
    assert [e["kind"] for e in view["events"]] == ["commit_accepted"]
    assert view["events"][0]["commit_sha"] == third
    assert accepted.headers["etag"]

    rejected = client.get(f"/api/v1/commits/{bad}").json()
    assert rejected["status"] == "rejected"
    assert rejected["changes"] is None
    assert rejected["previous_accepted"] == first
    assert [p["file"] for p in rejected["problems"]] == ["deployments/broken.yaml"]
    assert [e["kind"] for e in rejected["events"]] == ["commit_rejected"]

    oldest = client.get(f"/api/v1/commits/{first}").json()
    assert (oldest["previous_accepted"], oldest["changes"]) == (None, None)

    for missing in ("0" * 40, "nope", first[:12]):
        answer = client.get(f"/api/v1/commits/{missing}")
        assert answer.status_code == 404, missing
        assert answer.json()["error"]["status"] == 404
        page = client.get(f"/commits/{missing}", headers={"Accept": "text/html"})
        assert page.status_code == 404
        assert "<h1>Not found</h1>" in page.text

    html = client.get(f"/commits/{third}", headers={"Accept": "text/html"}).text
    for expected in (third, "again, not banner", 'href="/deployments/again"',
                     'href="/modules/fibo"', ">removed</span> deployment", "<code>banner</code>",
                     "devices.yaml",
                     f'href="/commits/{first}"', "commit_accepted",
                     f'href="/api/v1/commits/{third}"'):  # fmt: skip
        assert expected in html, expected
    html = client.get(f"/commits/{bad}", headers={"Accept": "text/html"}).text
    assert "deployments/broken.yaml" in html
    assert "at least one step" in html or "sequence" in html
    history = client.get("/commits", headers={"Accept": "text/html"}).text
    for sha in (first, bad, third):
        assert f'href="/commits/{sha}"' in history
