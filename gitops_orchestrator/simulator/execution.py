"""One execution request: run the function, interpret its result, call the next step.

This follows the supervisor's `do_wasm_work` step by step, in the same order, so a bad
deployment fails at the same point with the same text in the history entry (corpus cases
missing-stage-list, function-missing-from-mounts, response-media-type-text-plain,
chain-to-method-uppercase-GET). Any exception becomes a failed (500) history entry; nothing
here answers HTTP.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import httpx

from . import runtime
from .deployment import FILE_TYPES, Deployment, MountPathFile, MountStage, SchemaType

# The functions of python-requests the supervisor can reach with `getattr(requests, method)`.
_REQUESTS_FUNCTIONS = frozenset({"get", "post", "put", "patch", "delete", "head", "options"})


@dataclass
class HistoryEntry:
    """A `/request-history` entry; `result` and `success` are set when the run ends."""

    request_id: str
    deployment_id: str
    module_name: str
    function_name: str
    method: str
    request_args: dict[str, str]
    request_files: dict[str, str]
    work_queued_at: datetime
    result: Any = None
    success: bool = False

    def to_json(self) -> dict[str, Any]:
        """The entry as the supervisor serves it (Flask sorts the keys)."""
        return {
            "deployment_id": self.deployment_id,
            "function_name": self.function_name,
            "method": self.method,
            "module_name": self.module_name,
            "request_args": self.request_args,
            "request_files": self.request_files,
            "request_id": self.request_id,
            "result": self.result,
            "success": self.success,
            "work_queued_at": format_datetime(self.work_queued_at, usegmt=True),
        }


class Log(Protocol):
    """`SimulatedDevice.log`: ships one log line to the orchestrator, never raises."""

    async def __call__(self, level: str, message: str, function: str, **extra: str) -> None: ...


@dataclass(frozen=True)
class Context:
    """What a run needs from its device."""

    params_folder: Path
    http: httpx.AsyncClient
    interfaces: Collection[str]
    chain_timeout: float
    log: Log


async def work(entry: HistoryEntry, deployment: Deployment, context: Context) -> Any:
    """Run the entry's function; its history `result`: `[value, files]` or the next resultUrl."""
    module = deployment.modules[entry.module_name]
    function = entry.function_name
    folder = context.params_folder / module.name
    compiled = await asyncio.to_thread(runtime.load, module.binary)
    converters = runtime.param_converters(compiled, function)
    # Query values are matched to parameters by position; extra ones are ignored.
    args = [
        convert(value)
        for value, convert in zip(entry.request_args.values(), converters, strict=False)
    ]
    mounts = deployment.mounts[module.name][function]
    _mount_inputs(mounts, entry.request_files, module.data_files, folder)
    output = await asyncio.to_thread(
        runtime.call,
        compiled,
        function,
        args,
        folder=folder,
        interfaces=context.interfaces,
    )
    ids = {
        "request_id": entry.request_id,
        "deployment_id": entry.deployment_id,
        "module_name": module.name,
    }
    await context.log("DEBUG", f"Execution result: {output}", "do_wasm_work", **ids)
    value, files = _interpret(
        deployment.endpoints[module.name][function].response, mounts[MountStage.OUTPUT], output
    )
    next_step = deployment.links[module.name][function].to
    if not next_step:
        return [value, None if files is None else [mount.path for mount in files]]
    return await _call(next_step, value, files or [], folder, context, ids)


def _mount_inputs(
    mounts: dict[MountStage, list[MountPathFile]],
    uploads: dict[str, str],
    data_files: dict[str, Path],
    folder: Path,
) -> None:
    """Put the uploaded and deployment-stage files where the module opens them."""
    deployment_stage = mounts[MountStage.DEPLOYMENT]
    execution_stage = mounts[MountStage.EXECUTION]
    expected = {mount.path for mount in execution_stage}
    received = {mount.path for mount in deployment_stage}
    for name, saved in uploads.items():
        if name not in expected:
            raise RuntimeError(f'Unexpected input file "{name}"')
        if name in received:
            raise RuntimeError(f'Input file "{saved}" already mapped to "{name}"')
        received.add(name)
    missing = {mount.path for mount in chain(deployment_stage, execution_stage)} - received
    if missing:
        raise RuntimeError(f"required input files not found:  {missing}")
    # The output list is looked up here, before the run, as the supervisor does.
    for mount in chain(execution_stage, deployment_stage, mounts[MountStage.OUTPUT]):
        # By the item's own stage, not the list it is in, as the supervisor does.
        if mount.stage == MountStage.OUTPUT:
            continue
        source = None
        if mount.stage == MountStage.EXECUTION and mount.path in uploads:
            source = Path(uploads[mount.path])
        elif mount.stage == MountStage.DEPLOYMENT:
            source = data_files.get(mount.path)
        if source is None:
            raise RuntimeError(f'Missing input file "{mount.path}"')
        target = folder / safe_name(mount.path)
        if source != target:
            shutil.copyfile(source, target)


def _interpret(
    response: Any, outputs: list[MountPathFile], output: Any
) -> tuple[str | None, list[MountPathFile] | None]:
    """The step's result: a JSON-encoded integer, or the output mount holding a file."""
    if response.media_type == "application/json":
        if response.schema.type == SchemaType.INTEGER:
            return json.dumps(output), None
        raise NotImplementedError("Non-primitive JSON from Wasm output not supported yet")
    if response.media_type in FILE_TYPES:
        if len(outputs) != 1:
            raise AssertionError(
                f'One and only one output file expected for media type "{response.media_type}"'
            )
        return None, [outputs[0]]
    raise NotImplementedError(f'Unsupported response media type "{response.media_type}"')


async def _call(
    to: Any,
    value: str | None,
    files: list[MountPathFile],
    folder: Path,
    context: Context,
    ids: dict[str, str],
) -> Any:
    """Call the next step with this step's result; its resultUrl is this step's result."""
    url = to.url.rstrip("/") + to.path
    if value:
        # The integer goes in under the next endpoint's first parameter name (transcript §8).
        url += f"?{to.request.parameters[0]['name']}={value}"
    method = to.method
    if not isinstance(method, str):
        raise TypeError(f"attribute name must be string, not '{type(method).__name__}'")
    if method not in _REQUESTS_FUNCTIONS:
        # `getattr(requests, "GET")` on the supervisor (corpus chain-to-method-uppercase-GET).
        raise AttributeError(f"module 'requests' has no attribute '{method}'")
    message = f"Making sub-call from '{ids['module_name']}' to '{url}'"
    await context.log("DEBUG", message, "do_wasm_work", **ids)
    # File results go as multipart parts named after the output mounts.
    parts = {}
    for mount in files:
        name = safe_name(mount.path)
        parts[name] = (name, (folder / name).read_bytes())
    response = await context.http.request(
        method.upper(), url, files=parts or None, timeout=context.chain_timeout
    )
    return response.json()["resultUrl"]


def safe_name(name: Any) -> str:
    """`name` if it is a plain file name, so that it stays inside the folder it is used in."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"not a plain file name: {name!r}")
    return name
