"""The module description: the OpenAPI document behind a deploy body's `urls.description`.

Shaped as the original orchestrator generated it (protocol §3): one path per function under
`/{deployment}/modules/<module>/<function>`, positional integer query parameters `param0...`,
a multipart body with one binary part per input file, and a 200 answer that is either a JSON
integer or a file. Supervisors never fetch it; people and tools read it. Pure: a module spec in,
a JSON-ready dict out.
"""

from __future__ import annotations

from typing import Any

from ..models import Function, Module, Stage

OPENAPI_VERSION = "3.0.3"
INPUT_STAGES = (Stage.DEPLOYMENT, Stage.EXECUTION)


def module_description(module: Module) -> dict[str, Any]:
    """The OpenAPI 3.0 document describing how to call `module`'s functions on a device."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": module.name,
            "description": f"Functions of the WebAssembly module {module.name!r}",
            "version": "1.0.0",
        },
        "servers": [
            {
                "url": "http://{serverIp}:{port}",
                "variables": {"serverIp": {"default": "localhost"}, "port": {"default": "5000"}},
            }
        ],
        "paths": {
            f"/{{deployment}}/modules/{module.name}/{name}": _path_item(name, function)
            for name, function in module.functions.items()
        },
    }


def query_parameters(function: Function) -> list[dict[str, Any]]:
    """Positional integer parameters; the supervisor matches them by order, not by name."""
    return [
        {"name": f"param{index}", "in": "query", "required": True, "schema": {"type": "integer"}}
        for index, _ in enumerate(function.params)
    ]


def input_files(function: Function) -> list[str]:
    """Files the function reads, sent as multipart parts named after their mount path."""
    return [mount.path for mount in function.mounts if mount.stage in INPUT_STAGES]


def response_content(function: Function) -> tuple[str, dict[str, str]]:
    """The media type and schema of a successful call's result."""
    if function.is_file_output:
        return function.output, {"type": "string", "format": "binary"}
    return "application/json", {"type": "integer"}


def _path_item(name: str, function: Function) -> dict[str, Any]:
    media_type, schema = response_content(function)
    operation: dict[str, Any] = {
        "summary": f"Call {name}",
        "parameters": query_parameters(function),
        "responses": {
            "200": {
                "description": "The function's result",
                "content": {media_type: {"schema": schema}},
            }
        },
    }
    files = input_files(function)
    if files:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {f: {"type": "string", "format": "binary"} for f in files},
                    },
                    "encoding": {
                        mount.path: {"contentType": mount.media_type}
                        for mount in function.mounts
                        if mount.stage in INPUT_STAGES
                    },
                }
            },
        }
    return {
        "parameters": [
            {"name": "deployment", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        function.method.value: operation,
    }
