"""`POST /hooks/git`: a push webhook that makes the orchestrator fetch at once.

Only a body signed with the shared secret counts (HMAC-SHA256: GitHub's `X-Hub-Signature-256:
sha256=<hex>` or Gitea's `X-Gitea-Signature: <hex>`). The payload is not read: it only says
"look now", and the fetch itself decides what changed, so a forged or replayed hook can at
worst cause one extra fetch. Many hooks at once coalesce into one fetch in the source.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from .responses import BodyTooLarge, JSONResponse, error, limited_body


class FetchTrigger(Protocol):
    def trigger(self) -> None: ...


def is_signed(body: bytes, secret: bytes, *, github: str | None, gitea: str | None) -> bool:
    """Whether either signature header is the HMAC-SHA256 of `body` under `secret`."""
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    # Headers arrive as latin-1 text and may hold any byte: compared as bytes, a stranger's
    # non-ASCII signature is simply wrong (compare_digest refuses non-ASCII str).
    if github is not None and github.startswith("sha256="):
        offered = github.removeprefix("sha256=")
    elif gitea is not None:
        offered = gitea
    else:
        return False
    return hmac.compare_digest(offered.lower().encode("utf-8"), expected)


def git_hook(
    secret: bytes | None, trigger: FetchTrigger, *, max_body: int
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint, bound to its secret and to what it triggers."""

    async def endpoint(request: Request) -> Response:
        if not secret:
            return error(403, "the webhook is off: start serve with a webhook secret")
        try:
            body = await limited_body(request, max_body)
        except BodyTooLarge:
            return error(413, f"the hook body is larger than {max_body} bytes")
        github = request.headers.get("x-hub-signature-256")
        gitea = request.headers.get("x-gitea-signature")
        if github is None and gitea is None:
            return error(401, "missing signature (X-Hub-Signature-256 or X-Gitea-Signature)")
        if not is_signed(body, secret, github=github, gitea=gitea):
            return error(401, "the signature does not match the webhook secret")
        trigger.trigger()
        return JSONResponse({"status": "accepted"}, status_code=202)

    return endpoint
