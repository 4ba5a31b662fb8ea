"""One exported module record turned into `modules/<name>/`: module.yaml, binary, data files.

The functions come from the record's OpenAPI `description` (one path per function, its method,
query parameters and 200 response), the mounts from its `mounts`, the data files from
`dataFiles` found in the export's `files/`. Each function is checked against the binary's own
exports, so what is written is what a device can run; a function that cannot be expressed in
the repository format is left out and reported, never approximated silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import wasm
from ..models import (
    FILE_MEDIA_TYPES,
    FILE_PATTERN,
    FUNCTION_PATTERN,
    INTEGER,
    RESERVED_DATA_NAMES,
    Inspection,
    Stage,
)
from ..settings import LoaderSettings
from .export import Export, Record

# Every key an OpenAPI path item may use for an operation; the original wrote one of them.
OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CALLABLE = ("get", "post")
OCTET_STREAM = "application/octet-stream"
MODULE_FILE = "module.yaml"
FILE = re.compile(FILE_PATTERN)
FUNCTION = re.compile(FUNCTION_PATTERN)
MAX_FILE_NAME = 128  # the repository format's limit for function and file names


@dataclass(frozen=True)
class Converted:
    """A module as it will be written: `files` are relative to `modules/<name>/`."""

    record: Record
    name: str
    manifest: Mapping[str, Any]
    files: Mapping[str, bytes]


def convert(
    export: Export, record: Record, *, name: str, settings: LoaderSettings
) -> Converted | None:
    """The module folder for `record`, or None (with the reason noted) when it cannot be."""
    binary = _read(export, record, record.data.get("wasm"), "its wasm binary", settings)
    if binary is None:
        return None
    try:
        inspection = wasm.inspect(binary)
    except wasm.InvalidWasm as exc:
        export.note(record, f"its binary is not valid WebAssembly ({exc}): not imported")
        return None
    if not _matches_record(export, record, inspection):
        return None
    description = record.data.get("description")
    paths = description.get("paths") if isinstance(description, Mapping) else None
    if not isinstance(paths, Mapping) or not paths:
        export.note(
            record,
            "was never described (no functions in its description): not imported; write its "
            "module.yaml by hand",
        )
        return None
    data = _data_files(export, record, name, settings)
    functions: dict[str, dict[str, Any]] = {}
    for path, item in paths.items():
        function = str(path).rstrip("/").rsplit("/", 1)[-1]
        converted = _function(export, record, function, item, inspection, data)
        if converted is not None:
            functions[function] = converted
    if not functions:
        export.note(record, "has no function that can be imported: not imported")
        return None
    mounted = {
        mount["path"]
        for spec in functions.values()
        for mount in spec.get("mounts", ())
        if mount["stage"] == Stage.DEPLOYMENT
    }
    for mount in sorted(set(data) - mounted):
        export.note(
            record,
            f"data file {mount!r} is mounted at deployment by no imported function: not carried "
            "over",
        )
    manifest: dict[str, Any] = {"name": name, "wasm": f"{name}.wasm", "functions": functions}
    kept = {mount: data[mount] for mount in sorted(mounted)}
    if kept:
        manifest["data"] = {mount: mount for mount in kept}
    return Converted(record, name, manifest, {f"{name}.wasm": binary, **kept})


def _read(
    export: Export, record: Record, reference: Any, what: str, settings: LoaderSettings
) -> bytes | None:
    path, where = export.file(reference)
    if path is None:
        export.note(record, f"{what} {where}: not imported")
        return None
    try:
        size = path.stat().st_size
        if size > settings.max_binary_size:
            limit = settings.max_binary_size
            export.note(record, f"{what} {where} is {size} bytes, over the {limit}-byte limit")
            return None
        return path.read_bytes()
    except OSError as exc:
        export.note(record, f"{what} {where} cannot be read ({exc.strerror}): not imported")
        return None


def _matches_record(export: Export, record: Record, inspection: Inspection) -> bool:
    """The binary found must be this record's: two modules may share an original file name."""
    exports = record.data.get("exports")
    if not isinstance(exports, list) or not exports:
        return True
    listed = {
        str(item.get("name")): item.get("parameterCount")
        for item in exports
        if isinstance(item, dict)
    }
    found: dict[str, int] = dict(inspection.functions)
    # The original listed every exported function; another file lacks some of them.
    if any(found.get(name) != count for name, count in listed.items()):
        export.note(
            record,
            f"the binary in files/ exports {_signature(found)}, but the record lists "
            f"{_signature(listed)}: is it another module's file? Not imported",
        )
        return False
    return True


def _signature(functions: Mapping[Any, Any]) -> str:
    return ", ".join(f"{name}/{count}" for name, count in sorted(functions.items(), key=str))


def _data_files(
    export: Export, record: Record, name: str, settings: LoaderSettings
) -> dict[str, bytes]:
    """The data files by mount name, read from files/; the ones that cannot be are noted."""
    data_files = record.data.get("dataFiles")
    data: dict[str, bytes] = {}
    for mount, reference in data_files.items() if isinstance(data_files, Mapping) else ():
        if not _is_file_name(mount) or mount in {*RESERVED_DATA_NAMES, MODULE_FILE, f"{name}.wasm"}:
            export.note(record, f"data file {mount!r} cannot be a file name in the module folder")
            continue
        content = _read(export, record, reference, f"data file {mount!r}:", settings)
        if content is not None:
            data[mount] = content
    return data


def _function(
    export: Export,
    record: Record,
    function: str,
    item: Any,
    inspection: Inspection,
    data: Mapping[str, bytes],
) -> dict[str, Any] | None:
    def skip(why: str) -> dict[str, Any] | None:
        export.note(record, f"function {function!r} {why}: not imported")
        return None

    if not _is_function_name(function):
        return skip("has a name that cannot be a URL path segment")
    methods = (
        [key for key in item if str(key).lower() in OPERATIONS] if isinstance(item, Mapping) else []
    )
    if len(methods) != 1 or not isinstance(item[methods[0]], Mapping):
        return skip(f"has {len(methods)} operations in its description, not one")
    method, operation = str(methods[0]).lower(), item[methods[0]]
    if method not in CALLABLE:
        return skip(f"is called with {method.upper()}; devices call functions with GET or POST")
    params = []
    for parameter in operation.get("parameters") or ():
        if not isinstance(parameter, Mapping) or parameter.get("in") != "query":
            continue
        kind = _schema_type(parameter)
        if kind != INTEGER:
            return skip(f"takes {parameter.get('name')} as {kind!r}; only integers can be sent")
        params.append(INTEGER)
    output = _output(operation)
    if output is None:
        return skip("has no 200 response with a media type")
    if output.startswith("json:"):
        if output != f"json:{INTEGER}":
            return skip(f"returns {output[5:]!r}; only integer results are passed on")
        output = INTEGER
    elif output not in FILE_MEDIA_TYPES:
        export.note(
            record,
            f"function {function!r} writes {output!r}, which not every supervisor accepts: "
            f"written as {OCTET_STREAM}",
        )
        output = OCTET_STREAM
    mounts = _mounts(export, record, function, data)
    if mounts is None:
        return None
    outputs = [m for m in mounts if m["stage"] == Stage.OUTPUT]
    if output == INTEGER and outputs:
        return skip("returns an integer but has an output mount")
    if output != INTEGER and not outputs:
        return skip(f"returns a file ({output}) but has no output mount naming it")
    exported = inspection.functions.get(function)
    if exported is None:
        return skip("is not exported by its binary")
    if exported != len(params):
        return skip(f"takes {exported} parameters in the binary, but {len(params)} are described")
    spec: dict[str, Any] = {"method": method, "params": params, "output": output}
    if mounts:
        spec["mounts"] = mounts
    return spec


def _schema_type(parameter: Mapping[str, Any]) -> str:
    schema = parameter.get("schema")
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return str(kind) if kind else "no type"


def _output(operation: Mapping[str, Any]) -> str | None:
    """`json:<type>` for a number, else the media type of the file the function returns."""
    responses = operation.get("responses")
    ok = responses.get("200") if isinstance(responses, Mapping) else None
    content = ok.get("content") if isinstance(ok, Mapping) else None
    if not isinstance(content, Mapping) or not content:
        return None
    if "application/json" in content:
        schema = content["application/json"]
        schema = schema.get("schema") if isinstance(schema, Mapping) else None
        kind = schema.get("type") if isinstance(schema, Mapping) else None
        return f"json:{kind}"
    return str(next(iter(content)))


def _mounts(
    export: Export, record: Record, function: str, data: Mapping[str, bytes]
) -> list[dict[str, str]] | None:
    mounts = record.data.get("mounts")
    declared = mounts.get(function) if isinstance(mounts, Mapping) else None
    result: list[dict[str, str]] = []
    for path, mount in declared.items() if isinstance(declared, Mapping) else ():
        stage = mount.get("stage") if isinstance(mount, Mapping) else None
        problem = None
        if not _is_file_name(path):
            problem = f"mounts {path!r}, which cannot be a file name on a device"
        elif stage not in tuple(Stage):
            problem = f"mounts {path!r} at stage {stage!r}"
        elif stage == Stage.DEPLOYMENT and path not in data:
            problem = f"mounts {path!r} at deployment, but that data file is not in the export"
        if problem:
            export.note(record, f"function {function!r} {problem}: not imported")
            return None
        media_type = mount.get("mediaType") or OCTET_STREAM
        if media_type not in FILE_MEDIA_TYPES:
            # Only an output's type reaches a caller; an input's is a label on the device.
            export.note(
                record,
                f"function {function!r} mounts {path!r} as {media_type!r}, which not every "
                f"supervisor accepts: written as {OCTET_STREAM}",
                problem=stage == Stage.OUTPUT,
            )
            media_type = OCTET_STREAM
        result.append({"path": path, "stage": str(stage), "media_type": media_type})
    return result


def _is_file_name(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= MAX_FILE_NAME and bool(FILE.match(name))


def _is_function_name(name: str) -> bool:
    return len(name) <= MAX_FILE_NAME and bool(FUNCTION.match(name))
