"""The deploy body, read the way the Python supervisor reads it.

The supervisor turns the body's dicts into dataclasses with `**kwargs`, so it is strict exactly
where it builds objects (endpoints, requests, media types, schemas, mounts) and lenient
everywhere else: unknown top-level, module and `urls` keys are ignored, parameter objects are
never looked at, and a value that is not a dict where one is expected is kept as it is and only
fails when used. The classes below are built the same way, so a body fails with the exception
(and the message) the conformance corpus recorded. Pure: the downloads happen in `device`, the
runs in `execution`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# Media types the Python supervisor treats as files (protocol §3).
FILE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "application/octet-stream",
        "application/wasm",
        "text/html",
        "text/javascript",
    }
)


class SchemaType(StrEnum):
    # No `number` or `float`: corpus cases schema-type-number and schema-type-float.
    INTEGER = "integer"
    STRING = "string"
    OBJECT = "object"


class SchemaFormat(StrEnum):
    BINARY = "binary"


class MountStage(StrEnum):
    DEPLOYMENT = "deployment"
    EXECUTION = "execution"
    OUTPUT = "output"


# Fields typed `Any` are the ones the supervisor does not check when it builds the object.
@dataclass
class Schema:
    type: Any
    format: Any = None
    properties: Any = None

    def __post_init__(self) -> None:
        self.type = SchemaType(self.type)
        # Only a non-empty string is looked up: `format: ""` deployed in the recording.
        if self.format and isinstance(self.format, str):
            self.format = SchemaFormat(self.format)


@dataclass
class MediaTypeObject:
    media_type: Any
    schema: Any
    encoding: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.schema, dict):
            self.schema = Schema(**self.schema)


@dataclass
class EndpointRequest:
    parameters: Any  # never validated (corpus: parameter-dicts-unchecked)
    request_body: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.request_body, dict):
            self.request_body = MediaTypeObject(**self.request_body)


@dataclass
class Endpoint:
    url: Any
    path: Any
    method: Any  # any string deploys; upper case only fails as a chain's `to` (corpus c33, c34)
    request: Any
    response: Any

    def __post_init__(self) -> None:
        if isinstance(self.request, dict):
            self.request = EndpointRequest(**self.request)
        if isinstance(self.response, dict):
            self.response = MediaTypeObject(**self.response)


@dataclass
class MountPathFile:
    path: Any
    media_type: Any
    stage: Any

    def __post_init__(self) -> None:
        if isinstance(self.stage, str):
            self.stage = MountStage(self.stage)


@dataclass
class FunctionLink:
    """One `instructions.modules[M][F]`: where the call comes from and the next step, if any."""

    source: Any
    to: Any

    def __post_init__(self) -> None:
        if isinstance(self.source, dict):
            self.source = Endpoint(**self.source)
        if isinstance(self.to, dict):
            self.to = Endpoint(**self.to)


@dataclass(frozen=True)
class ModuleFiles:
    """A module of a deployment and where its downloaded files are on the device."""

    id: Any
    name: str
    binary: Path
    data_files: dict[str, Path]


Mounts = dict[MountStage, list[MountPathFile]]


@dataclass
class Deployment:
    """One accepted deploy body, as the device keeps it until it is replaced or deleted."""

    id: Hashable
    modules: dict[str, ModuleFiles]
    endpoints: dict[str, dict[str, Endpoint]]
    mounts: dict[str, dict[str, Mounts]]
    links: dict[str, dict[str, FunctionLink]]
    body: dict[str, Any] = field(repr=False)


def json_body(raw: bytes, content_type: str | None) -> Any:
    """Flask's `request.get_json(silent=True)`: None unless a JSON content type and body."""
    mimetype = (content_type or "").split(";")[0].strip().lower()
    if not (
        mimetype == "application/json"
        or (mimetype.startswith("application/") and mimetype.endswith("+json"))
    ):
        return None  # corpus body-wrong-content-type
    try:
        return json.loads(raw)
    except ValueError:  # corpus body-not-json
        return None


def build(body: Any, modules: list[ModuleFiles]) -> Deployment:
    """The deployment `body` describes, its modules already fetched.

    Raises what the supervisor raises on a bad body (KeyError, TypeError, ValueError,
    AttributeError); the caller answers 500 with it.
    """
    deployment_id = body["deploymentId"]
    hash(deployment_id)  # a dict key on the supervisor: a list or an object fails there too
    endpoints_json, instructions, mounts_json = (
        body["endpoints"],
        body["instructions"],
        body["mounts"],
    )
    endpoints = {
        module: {function: Endpoint(**endpoint) for function, endpoint in functions.items()}
        for module, functions in endpoints_json.items()
    }
    # A stage list may be missing (it fails when called: corpus missing-stage-list), a stage
    # key must be valid, and each mount item is strict (corpus mount-with-required).
    mounts = {
        module: {
            function: {
                MountStage(stage): [MountPathFile(**item) for item in items]
                for stage, items in stages.items()
            }
            for function, stages in functions.items()
        }
        for module, functions in mounts_json.items()
    }
    links = {
        module: {
            function: FunctionLink(source=link["from"], to=link["to"])
            for function, link in functions.items()
        }
        for module, functions in instructions["modules"].items()
    }
    return Deployment(
        id=deployment_id,
        modules={module.name: module for module in modules},
        endpoints=endpoints,
        mounts=mounts,
        links=links,
        body=body,
    )
