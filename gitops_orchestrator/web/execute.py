"""`POST /execute/<deployment>`: run a deployment and answer its result (protocol §4).

Arguments come as JSON (`{"param0": 12}` or `[12]`), as form fields `param0...`, or in the
query string; input files as multipart parts named after the first function's execution
mounts. The answer is `{"result": ..., "resultUrl": ...}`; 504 with the `resultUrl` when the
result is not ready within the wait (30 s by default, `?wait=` seconds, at most 300).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from ..errors import RunFailed
from .responses import BodyTooLarge, JSONResponse, error, limited_body

INTEGER = re.compile(r"-?\d{1,20}")
DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
# Input files for IoT functions (an image, a sensor dump) are small; larger is a mistake.
MAX_EXECUTE_BODY = 16 * 1024 * 1024


class RunOutcome(Protocol):
    @property
    def result(self) -> Any: ...

    @property
    def result_url(self) -> str: ...


class DeploymentRunner(Protocol):
    async def run(
        self,
        deployment: str,
        *,
        args: Sequence[str],
        files: Mapping[str, tuple[str, bytes, str]],
        wait: float,
    ) -> RunOutcome: ...


def execute(runner: DeploymentRunner) -> Callable[[Request], Awaitable[Response]]:
    """The execute endpoint, running deployments with `runner`."""

    async def endpoint(request: Request) -> Response:
        deployment = request.path_params["deployment"]
        try:
            wait = float(request.query_params.get("wait", DEFAULT_WAIT))
            if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT:
                raise ValueError(f"wait is a number of seconds from 0 to {MAX_WAIT:g}")
            args, files = await _arguments(request)
        except BodyTooLarge:
            return error(413, f"the request is larger than {MAX_EXECUTE_BODY} bytes")
        except ValueError as exc:
            return error(400, f"invalid arguments: {exc}")
        try:
            outcome = await runner.run(deployment, args=args, files=files, wait=wait)
        except RunFailed as exc:
            if exc.result_url is not None and exc.status == 504:
                return JSONResponse(
                    {"error": {"status": 504, "message": exc.message}, "resultUrl": exc.result_url},
                    status_code=504,
                )
            return error(exc.status, exc.message)
        return JSONResponse({"result": outcome.result, "resultUrl": outcome.result_url})

    return endpoint


async def _arguments(request: Request) -> tuple[list[str], dict[str, tuple[str, bytes, str]]]:
    values: dict[str, Any] = dict(request.query_params)
    values.pop("wait", None)
    files: dict[str, tuple[str, bytes, str]] = {}
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_EXECUTE_BODY:
            raise BodyTooLarge
        async with request.form(max_files=16, max_fields=64) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    files[key] = (value.filename or key, data, value.content_type or "")
                else:
                    values[key] = value
    else:
        body = await limited_body(request, MAX_EXECUTE_BODY)
        if body.strip():
            try:
                document = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError("the body is not JSON") from exc
            except RecursionError as exc:
                raise ValueError("the body is nested too deeply to be arguments") from exc
            if isinstance(document, list):
                values |= {f"param{i}": v for i, v in enumerate(document)}
            elif isinstance(document, dict):
                values |= document
            else:
                raise ValueError("give a list of arguments or an object of param0, param1, ...")
    return _positional(values), files


def _positional(values: Mapping[str, Any]) -> list[str]:
    """param0, param1, ... in order; the supervisor matches them by position."""
    args = []
    for index in range(len(values)):
        if f"param{index}" not in values:
            raise ValueError(f"expected param0..param{len(values) - 1}, got {sorted(values)}")
        value = values[f"param{index}"]
        is_integer = isinstance(value, int) and not isinstance(value, bool)
        if not (is_integer or (isinstance(value, str) and INTEGER.fullmatch(value.strip()))):
            raise ValueError(f"param{index} must be an integer, not {str(value)[:40]!r}")
        args.append(str(value).strip())
    return args
