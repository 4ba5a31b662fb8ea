"""The JSON API under `/api/v1` (read-only), and `/healthz`.

Each answer is a view model (`views`) encoded once per store version: the encoded bytes are
cached by the request's path and query and served again, with an ETag, until the store changes
(`If-None-Match` gets 304). Lists are paged with `offset` and `limit`. Errors have one shape.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..store import Store
from . import views
from .responses import JSONResponse, error

MAX_LIMIT = 500
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer
DEFAULT_LIMIT = 100
CACHED_ANSWERS = 256
DEVICE_STATES = ("online", "offline", "gone")
# Device names are mDNS instance names (at most 63 bytes): a longer search can match nothing.
MAX_SEARCH = 200
# How often the event stream looks for new events, and how long it stays quiet at most.
STREAM_POLL = 0.25
STREAM_HEARTBEAT = 15.0


class AnswerCache:
    """Encoded answers by request, valid for one store version; bounded, oldest out first."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[int, bytes, str]] = OrderedDict()

    def get(self, key: str, version: int) -> tuple[bytes, str] | None:
        entry = self.entries.get(key)
        if entry is None or entry[0] != version:
            return None
        self.entries.move_to_end(key)
        return entry[1], entry[2]

    def put(self, key: str, version: int, body: bytes) -> tuple[bytes, str]:
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self.entries[key] = (version, body, etag)
        self.entries.move_to_end(key)
        while len(self.entries) > CACHED_ANSWERS:
            self.entries.popitem(last=False)
        return body, etag


async def answer(request: Request, build: Callable[[Store], BaseModel | None]) -> Response:
    """The view `build` makes, encoded and cached by store version, with an ETag."""
    store: Store = request.state.store
    cache: AnswerCache = request.state.answers
    # The raw path and query: building `request.url` costs more than the cached answer.
    key = request.scope["path"] + "?" + request.scope["query_string"].decode("latin-1")
    version = store.version
    cached = cache.get(key, version)
    if cached is None:
        model = await asyncio.to_thread(build, store)
        if model is None:
            return error(404, f"nothing at {request.url.path}")
        cached = cache.put(key, version, model.model_dump_json().encode())
    body, etag = cached
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


def paging(request: Request) -> tuple[int, int]:
    """`offset` and `limit` from the query, checked; ValueError names what is wrong."""
    if not request.scope["query_string"]:
        return 0, DEFAULT_LIMIT
    try:
        offset = int(request.query_params.get("offset", 0))
        limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise ValueError("offset and limit are whole numbers") from None
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(
            f"offset is between 0 and {MAX_OFFSET} and limit between 1 and {MAX_LIMIT}"
        )
    return offset, limit


def device_filters(request: Request) -> dict[str, Any]:
    """`state` (repeatable) and `search` of the devices list, checked; ValueError says why."""
    states = tuple(dict.fromkeys(s for s in request.query_params.getlist("state") if s))
    for state in states:
        if state not in DEVICE_STATES:
            raise ValueError(f"state is one of {', '.join(DEVICE_STATES)}, not {state[:40]!r}")
    search = request.query_params.get("search", "")
    if len(search) > MAX_SEARCH:
        raise ValueError(f"search is at most {MAX_SEARCH} characters")
    return {"states": states, "search": search}


Filters = Callable[[Request], dict[str, Any]]


def _paged(build: Callable[..., BaseModel], filters: Filters | None = None) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        try:
            offset, limit = paging(request)
            extra = filters(request) if filters else {}
        except ValueError as exc:
            return error(400, str(exc))
        return await answer(
            request, lambda store: build(store, offset=offset, limit=limit, **extra)
        )

    return endpoint


def _named(
    build: Callable[[Store, str], BaseModel | None], param: str = "name"
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        name = request.path_params[param]
        return await answer(request, lambda store: build(store, name))

    return endpoint


async def sync(request: Request) -> Response:
    state = request.state
    return await answer(
        request, lambda store: views.sync_view(store, repo=state.repo, branch=state.branch())
    )


async def overview(request: Request) -> Response:
    state = request.state
    return await answer(
        request, lambda store: views.overview(store, repo=state.repo, branch=state.branch())
    )


async def events(request: Request) -> Response:
    try:
        offset, limit = paging(request)
    except ValueError as exc:
        return error(400, str(exc))
    device = request.query_params.get("device")
    deployment = request.query_params.get("deployment")
    return await answer(
        request,
        lambda store: views.events_page(
            store, offset=offset, limit=limit, device=device, deployment=deployment
        ),
    )


async def event_stream(request: Request) -> Response:
    """Server-sent events: every new event as it is recorded (`id:` is the event id, `data:`
    the event as `/api/v1/events` lists it)."""
    store: Store = request.state.store
    start = request.headers.get("last-event-id", "")
    latest = store.events(limit=1)
    after = int(start) if start.isdigit() else (latest[0][0] if latest else 0)

    async def stream() -> AsyncIterator[str]:
        nonlocal after
        version, quiet = -1, 0.0
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            if store.version != version:
                version = store.version
                rows = await asyncio.to_thread(store.events_after, after)
                for row in rows:
                    event = views.event_view(row)
                    after = event.id
                    # Unnamed (`message`) events: a listener gets every kind, new ones too;
                    # the kind is in the data.
                    yield f"id: {event.id}\ndata: {event.model_dump_json()}\n\n"
                if rows:
                    quiet = 0.0
            if quiet >= STREAM_HEARTBEAT:
                yield ": still here\n\n"
                quiet = 0.0
            await asyncio.sleep(STREAM_POLL)
            quiet += STREAM_POLL

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


ROUTES: list[tuple[str, Callable[[Request], Any]]] = [
    ("/api/v1/sync", sync),
    ("/api/v1/overview", overview),
    ("/api/v1/commits", _paged(views.commits_page)),
    ("/api/v1/commits/{sha}", _named(views.commit_detail, "sha")),
    ("/api/v1/devices", _paged(views.devices_page, device_filters)),
    ("/api/v1/devices/{name}", _named(views.device_detail)),
    ("/api/v1/modules", _paged(views.modules_page)),
    ("/api/v1/modules/{name}", _named(views.module_detail)),
    ("/api/v1/deployments", _paged(views.deployments_page)),
    ("/api/v1/deployments/{name}", _named(views.deployment_detail)),
    ("/api/v1/events", events),
    ("/api/v1/events/stream", event_stream),
]
