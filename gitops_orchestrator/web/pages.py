"""The status pages: the view models of `views`, rendered as HTML for people.

Each page builds the same view model its `/api/v1` twin serves (in a worker thread, as `api`
does) and renders it with a Jinja2 template (autoescaped: every value from a repository or a
device is escaped). A rendered page is cached by store version with an ETag, like the API's
answers, so a browser revalidating an unchanged page costs a dictionary lookup. `static/live.js`
keeps an open page current: each new event on `/api/v1/events/stream` makes it re-fetch the
page and swap its live regions. Nothing here queries or writes the store directly (the one
extra read: a deployment page's try-it form takes its inputs from the first step's module view),
and the form posts to `/execute` from the browser: this module runs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..store import Store
from . import views
from .api import DEVICE_STATES, AnswerCache, Filters, device_filters, paging
from .responses import error

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# Rendered is (template name, context), or None when there is nothing by that name.
Rendered = tuple[str, dict[str, Any]] | None
Build = Callable[[Store], Rendered]

# The colour of each status, state and event kind; anything else is drawn neutral.
TONES = {
    **dict.fromkeys(("synced", "placed", "online", "accepted", "ok", "deployed"), "good"),
    **dict.fromkeys(("progressing", "introduced", "reintroduced", "undeployed"), "busy"),
    **dict.fromkeys(("waiting", "offline", "restart", "held"), "wait"),
    **dict.fromkeys(
        ("failed", "unplaceable", "rejected", "error", "deploy_failed", "undeploy_failed"), "bad"
    ),
}
# Pages say what they are and how they may be used: scripts only from here, no framing.
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
OFF = frozenset({"0", "false", "no", "off"})
# SQLite's largest integer: a larger offset cannot reach the database (and finds nothing).
MAX_OFFSET = 2**63 - 1


def _asset_version() -> str:
    """A digest of the static files, appended to their URLs so a new release is fetched."""
    digest = hashlib.sha256()
    for path in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (`cpu.clockSpeed.Hz`), for a plain two-column table."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda value: quote(str(value), safe="")
    env.filters["flat"] = _flat
    env.filters["size"] = _size
    env.filters["when"] = lambda at: at.replace("T", " ").replace("Z", " UTC") if at else "—"
    env.filters["tone"] = lambda status: TONES.get(status, "neutral")
    env.globals["asset_version"] = _asset_version()
    env.globals["device_states"] = DEVICE_STATES
    return env


TEMPLATES = Jinja2Templates(env=_environment())


def try_it_enabled(request: Request) -> bool:
    """Whether deployment pages offer the try-it form (`WebSettings.try_it`)."""
    return getattr(request.app.state, "try_it", True) is not False


async def render(
    request: Request, build: Build, *, api: str, section: str, variant: str = ""
) -> Response:
    """The page `build` describes, rendered once per store version and sent with an ETag.

    `variant` names what else the page depends on (a setting), so each variant is cached apart.
    """
    store: Store = request.state.store
    cache: AnswerCache = request.state.answers
    key = f"page{variant}:{request.url.path}?{request.url.query}"
    version = store.version
    cached = cache.get(key, version)
    if cached is None:
        common = {"api": api, "section": section}
        body = await asyncio.to_thread(_render, build, store, common)
        if body is None:
            message = f"There is nothing at {request.url.path}."
            return page_error(request, 404, message, section=section)
        cached = cache.put(key, version, body)
    body, etag = cached
    headers = {**HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return HTMLResponse(body, headers=headers)


def _render(build: Build, store: Store, common: dict[str, Any]) -> bytes | None:
    rendered = build(store)
    if rendered is None:
        return None
    name, context = rendered
    return TEMPLATES.get_template(name).render({**common, **context}).encode()


def page_error(
    request: Request, status: int, message: str, *, section: str | None = None
) -> HTMLResponse:
    """An error page with the look of the others (unknown names, bad paging)."""
    titles = {400: "Bad request", 404: "Not found"}
    body = TEMPLATES.get_template("error.html").render(
        api=None,
        section=section,
        status=status,
        title=titles.get(status, "Error"),
        message=message,
    )
    return HTMLResponse(body, status_code=status, headers=HEADERS)


async def not_found(request: Request, exc: Exception) -> Response:
    """A 404 handler for the app: the HTML page for browsers, the API's JSON error otherwise."""
    detail = exc.detail if isinstance(exc, HTTPException) else "Not Found"
    path = request.url.path
    wants_html = "text/html" in request.headers.get("accept", "")
    if wants_html and not path.startswith(("/api/", "/file/", "/execute/")):
        return page_error(request, 404, f"There is nothing at {path}.")
    return error(404, f"{detail}: nothing at {path}")


# The pages. Each one reads one view model; the deployment page's try-it form also reads the
# first step's module, for its parameters and input files.


async def overview(request: Request) -> Response:
    repo, branch = request.state.repo, request.state.branch()

    def build(store: Store) -> Rendered:
        view = views.overview(store, repo=repo, branch=branch)
        return "overview.html", {"view": view}

    return await render(request, build, api="/api/v1/overview", section="overview")


def _listing(
    template: str, section: str, build: Callable[..., views.Page], filters: Filters | None = None
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            offset, limit = paging(request)
            extra = filters(request) if filters else {}
        except ValueError as exc:
            return page_error(request, 400, str(exc), section=section)
        if offset > MAX_OFFSET:
            return page_error(request, 400, f"offset is at most {MAX_OFFSET}", section=section)
        # The filters again, as the query the pager's and the JSON twin's links start with.
        query = "".join(f"{key}={quote(value, safe='')}&" for key, value in _query(extra))

        def page(store: Store) -> Rendered:
            listed = build(store, offset=offset, limit=limit, **extra)
            return template, {"page": listed, "query": query}

        api = f"/api/v1/{section}?{query}offset={offset}&limit={limit}"
        return await render(request, page, api=api, section=section)

    return endpoint


def _query(filters: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The query parameters that ask for `filters` (as `device_filters` reads them)."""
    pairs = [("state", state) for state in filters.get("states", ())]
    if filters.get("search"):
        pairs.append(("search", filters["search"]))
    return pairs


def _detail(
    template: str,
    section: str,
    build: Callable[[Store, str], views.View | None],
    param: str = "name",
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        name: str = request.path_params[param]

        def page(store: Store) -> Rendered:
            view = build(store, name)
            return None if view is None else (template, {"view": view})

        api = f"/api/v1/{section}/{quote(name, safe='')}"
        return await render(request, page, api=api, section=section)

    return endpoint


async def deployment(request: Request) -> Response:
    name: str = request.path_params["name"]
    offer = try_it_enabled(request)

    def build(store: Store) -> Rendered:
        view = views.deployment_detail(store, name)
        if view is None:
            return None
        form = _try_it(store, view) if offer else None
        return "deployment.html", {"view": view, "try_it": offer, "form": form}

    api = f"/api/v1/deployments/{quote(name, safe='')}"
    variant = "+try" if offer else ""
    return await render(request, build, api=api, section="deployments", variant=variant)


def _try_it(store: Store, view: views.DeploymentView) -> dict[str, Any] | None:
    """The first step's integer parameters and execution-stage input files, for the form."""
    first = view.steps[0]
    module = views.module_detail(store, first.module)
    if module is None:
        return None
    function = next((f for f in module.functions if f.name == first.function), None)
    if function is None:
        return None
    operation = (
        module.description["paths"]
        .get(f"/{{deployment}}/modules/{first.module}/{first.function}", {})
        .get(function.method, {})
    )
    multipart = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
    # Deployment-stage mounts are the module's data files, shipped at deploy time: the caller
    # sends only the others (the execution-stage mounts).
    files = [f for f in multipart.get("schema", {}).get("properties", {}) if f not in module.data]
    return {
        "module": first.module,
        "function": first.function,
        "params": [f"param{index}" for index in range(function.params)],
        "files": files,
        "output": function.output,
    }


ROUTES: list[BaseRoute] = [
    Route("/", overview),
    Route("/devices", _listing("devices.html", "devices", views.devices_page, device_filters)),
    Route("/devices/{name}", _detail("device.html", "devices", views.device_detail)),
    Route("/modules", _listing("modules.html", "modules", views.modules_page)),
    Route("/modules/{name}", _detail("module.html", "modules", views.module_detail)),
    Route("/deployments", _listing("deployments.html", "deployments", views.deployments_page)),
    Route("/deployments/{name}", deployment),
    Route("/commits", _listing("commits.html", "commits", views.commits_page)),
    Route("/commits/{sha}", _detail("commit.html", "commits", views.commit_detail, "sha")),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
