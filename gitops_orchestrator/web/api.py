"""The JSON API under `/api/v1` (read-only), and `/healthz`."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..store import CommitRecord, Store, SyncState
from .responses import JSONResponse, timestamp


def commit_json(record: CommitRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "sha": record.sha,
        "author": record.author,
        "committed_at": timestamp(record.committed_at),
        "message": record.message,
        "seen_at": timestamp(record.seen_at),
        "status": record.status,
        "problems": [
            {"file": p.file, "line": p.line, "message": p.message} for p in record.problems
        ],
    }


def sync_json(state: SyncState, *, repo: str, branch: str) -> dict[str, Any]:
    """`GET /api/v1/sync` (design §3): what is desired, what was seen, what was refused."""
    return {
        "desired": commit_json(state.desired),
        "last_seen": commit_json(state.last_seen),
        "last_rejected": commit_json(state.last_rejected),
        "source": {
            "repo": repo,
            "branch": branch,
            "fetched_at": timestamp(state.fetched_at),
            "error": state.error,
            "error_at": timestamp(state.error_at),
        },
    }


async def sync(request: Request) -> Response:
    store: Store = request.state.store
    state = await asyncio.to_thread(store.sync_state)
    return JSONResponse(sync_json(state, repo=request.state.repo, branch=request.state.branch))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})
