"""The Starlette application and its lifespan (the background loops run inside it).

`create_app` is handed everything it needs by the composition root (`cli.serve`, or a test):
the store to read, the fetch trigger for the webhook, and the background loops to run while the
app is up. Shutdown cancels the loops and waits for them, so SIGTERM and SIGINT stop cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..settings import WebSettings
from ..store import Store
from . import (
    api,
    compat,
    devices,
    execute,
    files,
    hooks,
    logs,
    metrics,
    openapi_doc,
    pages,
    responses,
    security,
)

logger = logging.getLogger(__name__)


class State(TypedDict):
    store: Store
    repo: str
    branch: Callable[[], str]
    answers: api.AnswerCache
    public_url: str


@dataclass(frozen=True)
class Services:
    """What the web layer reads and may trigger, wired by the composition root."""

    store: Store
    repo: str
    branch: str | Callable[[], str]
    """The branch, or how to read it: a remote reached late names its default branch late."""
    fetch: hooks.FetchTrigger
    introducer: devices.Introducer
    runner: execute.DeploymentRunner
    logs: logs.LogIntake
    public_url: str = "http://127.0.0.1:3000"
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=tuple)


def _reader(value: str | Callable[[], str]) -> Callable[[], str]:
    if callable(value):
        return value
    return lambda: value


def create_app(services: Services, settings: WebSettings | None = None) -> Starlette:
    settings = settings or WebSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        tasks = [asyncio.create_task(loop()) for loop in services.background]
        try:
            yield {
                "store": services.store,
                "repo": services.repo,
                "branch": _reader(services.branch),
                "answers": api.AnswerCache(),
                "public_url": services.public_url,
            }
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    secret = settings.webhook_secret.encode() if settings.webhook_secret else None
    routes: list[BaseRoute] = [
        Route("/healthz", api.healthz),
        *(Route(path, endpoint) for path, endpoint in api.ROUTES),
        Route(
            "/hooks/git",
            hooks.git_hook(secret, services.fetch, max_body=settings.max_hook_body),
            methods=["POST"],
        ),
        Route("/file/module/{name}/{file}", files.module_file),
        Route(
            "/file/device/discovery/register",
            devices.register(services.introducer),
            methods=["POST"],
        ),
        Route("/execute/{deployment}", execute.execute(services.runner), methods=["POST"]),
        Route(
            "/device/logs",
            logs.device_logs(services.logs, max_body=settings.max_log_body),
            methods=["POST"],
        ),
    ]
    routes += [*compat.ROUTES, *metrics.ROUTES, *openapi_doc.ROUTES, *pages.ROUTES]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=security.middleware(settings.api_token),
        exception_handlers={
            404: pages.not_found,
            HTTPException: _http_error,
            ClientDisconnect: _gone,
        },
    )
    app.state.try_it = settings.try_it
    app.state.log_counts = services.logs.counts
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Errors Starlette raises itself (a multipart body without a boundary, a wrong method), in
    the one error shape of the API."""
    assert isinstance(exc, HTTPException)
    answer = responses.error(exc.status_code, str(exc.detail))
    answer.headers.update(exc.headers or {})
    return answer


async def _gone(request: Request, exc: Exception) -> Response:
    """A client that left mid-request (or was cut off by the server) is no application error;
    the answer goes nowhere."""
    return Response(status_code=400)
