"""The optional access token (`--api-token`, design §3), and the app's middleware stack.

With a token set, every route needs it except those devices, probes and git hosts call: module
files under `/file/module`, register, logs, `/healthz`, `/readyz` and the webhook (which its
HMAC secret guards). Unknown paths need it too: a new route is guarded until it is listed here.
The token comes as `Authorization: Bearer <token>`, or as a cookie that visiting any page once
with `?token=<token>` sets (HttpOnly, SameSite=Strict), so a browser, its event stream and the
try-it form work; that visit is redirected to the same URL without the token. Comparisons take
constant time. Without a token, nothing is checked.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import metrics
from .responses import error

COOKIE = "gitops_token"
QUERY = "token"
# Called by devices, probes and git hosts, which cannot hold a token (design §3).
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/file/module", "/file/device/discovery/register", "/device/logs",
     "/hooks/git"}
)  # fmt: skip
OPEN_PREFIXES = ("/file/module/",)


def is_open(path: str) -> bool:
    """Whether `path` never needs the token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the token itself is never stored."""
    return hmac.new(token.encode(), b"gitops-orchestrator session", hashlib.sha256).hexdigest()


class TokenGuard:
    """ASGI middleware refusing requests without the access token (401, the one error shape).

    `token=None` reads `app.state.api_token` at each request (empty or missing: no token).
    """

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token
        self._cookies: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self._token(scope)
        if scope["type"] != "http" or not token or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        answer = self._check(scope, token)
        if answer is None:
            await self.app(scope, receive, send)
        else:
            await answer(scope, receive, send)

    def _token(self, scope: Scope) -> str | None:
        if self.token is not None:
            return self.token
        app = scope.get("app")
        token: str | None = getattr(getattr(app, "state", None), "api_token", None)
        return token

    def _check(self, scope: Scope, token: str) -> Response | None:
        """None when the request may pass, else the answer to send instead."""
        expected = self._cookies.get(token)
        if expected is None:
            expected = self._cookies[token] = cookie_value(token)
        # A token in the URL is checked first, so that it leaves the address bar either way.
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offered = [value for name, value in query if name == QUERY]
        if offered and scope["method"] in ("GET", "HEAD"):
            if not _equal(offered[-1], token):
                return _refused("the token does not match")
            return _remember(scope, query, expected)
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _equal(credentials.strip(), token):
            return None
        if _equal(HTTPConnection(scope).cookies.get(COOKIE, ""), expected):
            return None
        return _refused(
            "this route needs the access token: send 'Authorization: Bearer <token>', or open "
            "any page once with ?token=<token>"
        )


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refused(message: str) -> Response:
    answer = error(401, message)
    answer.headers["WWW-Authenticate"] = "Bearer"
    return answer


def _remember(scope: Scope, query: list[tuple[str, str]], value: str) -> Response:
    """Set the cookie and send the browser to the same URL without the token in it."""
    path = scope.get("raw_path") or scope["path"].encode()
    # `//host/...` in a Location header is another server: only a path of ours is sent back.
    location = "/" + path.decode("latin-1").lstrip("/\\")
    rest = urlencode([(name, v) for name, v in query if name != QUERY])
    if rest:
        location += "?" + rest
    answer = Response(status_code=303, headers={"Location": location, "Cache-Control": "no-store"})
    answer.set_cookie(
        COOKIE, value, path="/", httponly=True, samesite="strict", secure=scope["scheme"] == "https"
    )
    return answer


def middleware(token: str | None) -> list[Middleware]:
    """The app's middleware, outermost first: request timing, then the guard if there is a token."""
    guard = [Middleware(TokenGuard, token=token)] if token else []
    return [*metrics.MIDDLEWARE, *guard]
