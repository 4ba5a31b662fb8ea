"""`gitops-orchestrator serve` as a real process on 127.0.0.1: sync API, webhook, shutdown."""

from __future__ import annotations

import hashlib
import hmac
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, SERVE_BOUND, WEBHOOK_SECRET, copy_sample, git_init_commit, write_files
from conftest import free_port as free_port  # re-exported for other tests

from gitops_orchestrator.settings import WebSettings


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_sync_api_shows_desired_and_rejected_commits(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    first = git_init_commit(path, "the sample fleet")
    orchestrator = serve(str(path))
    state = orchestrator.until(lambda s: s["desired"] is not None, "the first commit")
    assert state["desired"]["sha"] == first
    assert len(state["desired"]["sha"]) == 40
    assert state["desired"]["message"].strip() == "the sample fleet"
    assert state["last_rejected"] is None
    assert state["source"] == {
        "repo": str(path), "branch": "main", "fetched_at": state["source"]["fetched_at"],
        "error": None, "error_at": None,
    }  # fmt: skip

    write_files(path, {"modules/fibo/module.yaml": "name: fibo\nwasm: fibo.wasm\n"})
    bad = git_init_commit(path, "forget the functions")
    state = orchestrator.until(lambda s: s["last_seen"]["sha"] == bad, "the bad commit")
    assert state["desired"]["sha"] == first
    assert state["last_rejected"]["sha"] == bad
    assert state["last_rejected"]["problems"] == [
        {"file": "modules/fibo/module.yaml", "line": 1, "message": "functions: is required"}
    ]
    assert orchestrator.client.get("/healthz").json() == {"status": "ok"}


def test_webhook_checks_signatures_and_fetches_at_once(serve: Any, tmp_path: Path) -> None:
    origin = copy_sample(tmp_path / "origin")
    first = git_init_commit(origin)
    # A fetch interval of an hour: only the webhook can bring the second commit in time.
    orchestrator = serve(origin.as_uri(), "--fetch-interval", "3600")
    orchestrator.until(lambda s: (s["desired"] or {}).get("sha") == first, "the first fetch")
    write_files(origin, {"devices.yaml": "admission: listed\n"})
    second = git_init_commit(origin, "listed only")
    body = b'{"ref": "refs/heads/main"}'

    missing = orchestrator.hook(body, {})
    assert missing.status_code == 401
    assert "missing signature" in missing.json()["error"]["message"]
    wrong = orchestrator.hook(body, {"X-Hub-Signature-256": "sha256=" + signed(body, "nope")})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["status"] == 401
    assert orchestrator.hook(body, {"X-Gitea-Signature": "0" * 64}).status_code == 401
    assert orchestrator.sync()["desired"]["sha"] == first

    statuses = {
        orchestrator.hook(body, {"X-Hub-Signature-256": "sha256=" + signed(body)}).status_code
        for _ in range(30)
    }
    assert statuses == {202}
    orchestrator.until(lambda s: s["desired"]["sha"] == second, "the hooked fetch")
    assert orchestrator.hook(body, {"X-Gitea-Signature": signed(body)}).status_code == 202


def test_webhook_limits_and_without_a_secret(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    guarded = serve(str(path))
    huge = b"x" * (WebSettings.max_hook_body + 1)
    too_large = guarded.hook(huge, {"X-Gitea-Signature": signed(huge)})
    assert too_large.status_code == 413
    assert guarded.client.get("/healthz").status_code == 200
    unguarded = serve(str(path), secret=None)
    off = unguarded.hook(b"{}", {"X-Gitea-Signature": signed(b"{}")})
    assert off.status_code == 403
    assert "secret" in off.json()["error"]["message"]


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_stop_serve_cleanly(serve: Any, tmp_path: Path, number: int) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    orchestrator = serve(str(path))
    orchestrator.until(lambda s: s["desired"] is not None, "the first commit")
    orchestrator.process.send_signal(number)
    orchestrator.process.communicate(timeout=SERVE_BOUND)
    stderr = orchestrator.log_text()
    assert orchestrator.process.returncode == 0, stderr
    assert "Application shutdown complete." in stderr
    assert "Traceback" not in stderr


def test_serve_refuses_a_path_that_is_not_a_repository(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CLI), "serve", "--repo", str(tmp_path), "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=SERVE_BOUND, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "is not a git repository" in done.stderr


def test_serve_starts_before_the_remote_exists_and_syncs_when_it_appears(
    serve: Any, tmp_path: Path
) -> None:
    work = copy_sample(tmp_path / "work")
    sha = git_init_commit(work, "the fleet")
    bare = tmp_path / "remote" / "fleet.git"  # not there yet: the remote is unreachable
    orchestrator = serve(bare.as_uri())
    ready = orchestrator.client.get("/readyz")
    assert ready.status_code == 503
    assert "waiting for the first sync" in ready.json()["error"]["message"]
    orchestrator.until(lambda s: s["source"]["error"] is not None, "the first failed attempt")
    assert "cannot reach" in orchestrator.client.get("/readyz").json()["error"]["message"]
    assert orchestrator.process.poll() is None

    bare.parent.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--bare", str(work), str(bare)], check=True)
    state = orchestrator.until(lambda s: s["desired"] is not None, "the remote to be synced")
    assert state["desired"]["sha"] == sha
    assert state["source"]["branch"] == "main"
    assert state["source"]["error"] is None
    assert orchestrator.client.get("/readyz").json() == {"status": "ready", "desired": sha}
