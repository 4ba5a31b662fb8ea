"""Module files for devices: `/file/module/<name>/wasm`, `/description` and data files.

Deploy bodies pin every URL to a digest (`?digest=<sha256>`), so a device that downloads while
a newer commit rolls out still gets the bytes it was sent for; those are served from the blob
store for as long as a kept snapshot has that file of that module with that digest. Without
`?digest=` the desired commit's file is served, as the original orchestrator did. These routes
never need a token (devices call them).
"""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..core import openapi
from ..models import LoadedModule
from ..store import Store
from .responses import JSONResponse, error

DIGEST = re.compile(r"^[0-9a-f]{64}$")


async def module_file(request: Request) -> Response:
    store: Store = request.state.store
    name, file = request.path_params["name"], request.path_params["file"]
    snapshot = await asyncio.to_thread(store.desired_snapshot)
    module = snapshot.modules.get(name) if snapshot else None
    if file == "description":
        if module is None:
            return error(404, f"no module {name!r} in the desired commit")
        return JSONResponse(openapi.module_description(module.spec))
    media_type = "application/wasm" if file == "wasm" else "application/octet-stream"
    pinned = request.query_params.get("digest")
    if pinned is not None:
        kept = (
            await asyncio.to_thread(store.file_digests, name, file) if DIGEST.match(pinned) else ()
        )
        if pinned not in kept or not store.blobs.has(pinned):
            return error(404, f"module {name!r} has no kept {file!r} with digest {pinned!r}")
        return FileResponse(store.blobs.path(pinned), media_type=media_type)
    digest = _digest(module, file) if module else None
    if digest is None:
        return error(404, f"module {name!r} has no file {file!r} in the desired commit")
    return FileResponse(store.blobs.path(digest), media_type=media_type)


def _digest(module: LoadedModule, file: str) -> str | None:
    if file == "wasm":
        return module.binary.digest
    facts = module.data.get(file)
    return facts.digest if facts else None
