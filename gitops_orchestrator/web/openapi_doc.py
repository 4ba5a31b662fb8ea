"""The OpenAPI 3.1 document of the orchestrator's own HTTP surface, served at `/openapi.json`.

Answer schemas come from the view models (`views`, `compat`) through pydantic, so the document
cannot drift from what the routes encode; the rest (paths, parameters, the error shape, ETags,
the event stream, the routes devices and git hosts call) is written here, next to the list of
routes it describes. `python -m gitops_orchestrator.web.openapi_doc [FILE]` writes it to
`schema/openapi.json`; a test fails when the checked-in copy is stale. (Not to be confused with
`core.openapi`, which describes a module's functions on a device.)
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from . import api, compat, devices, views

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "schema" / "openapi.json"
REF = "#/components/schemas/{model}"
COOKIE = "gitops_token"
"""The token cookie's name: `security.COOKIE` (not imported: security imports this module's
route through `metrics`; a test checks that the two agree)."""
Json = dict[str, Any]

# Answers, by the name their schema has under components (serialization: what is sent).
ANSWERS: tuple[type[BaseModel], ...] = (
    views.SyncView,
    views.OverviewView,
    views.CommitPage,
    views.CommitDetailView,
    views.DevicePage,
    views.DeviceDetailView,
    views.ModulePage,
    views.ModuleDetailView,
    views.DeploymentPage,
    views.DeploymentDetailView,
    views.EventPage,
    views.EventView,
    compat.CompatDevices,
    compat.CompatModules,
    compat.CompatDeployments,
    compat.CompatDeployment,
)
# Request bodies (validation: what is accepted).
REQUESTS: tuple[type[BaseModel], ...] = (devices.Registration,)

ERROR: Json = {
    "type": "object",
    "description": "Every error the orchestrator answers.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}
EXTRA_SCHEMAS: dict[str, Json] = {
    "Error": ERROR,
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "desired"],
        "properties": {
            "status": {"const": "ready"},
            "desired": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    },
    "RunResult": {
        "type": "object",
        "required": ["result", "resultUrl"],
        "properties": {
            "result": {"description": "An integer, or the URL of the output file."},
            "resultUrl": {"type": "string"},
        },
    },
    "RunPending": {
        "type": "object",
        "description": "The result was not ready within the wait: follow `resultUrl`.",
        "required": ["error", "resultUrl"],
        "properties": {"error": ERROR["properties"]["error"], "resultUrl": {"type": "string"}},
    },
}

PROTECTED: list[Json] = [{"bearer": []}, {"cookie": []}, {}]
OPEN: list[Json] = []


def document() -> Json:
    """The whole OpenAPI document, as JSON-ready data."""
    schemas: dict[str, Json] = {}
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "serialization") for model in ANSWERS),
        *((model, "validation") for model in REQUESTS),
    ]
    refs, definitions = models_json_schema(models, ref_template=REF)
    schemas.update(definitions.get("$defs", {}))
    for (model, _), ref in refs.items():
        # Every model listed is named in components (pydantic inlines none of them then).
        assert ref == {"$ref": REF.format(model=model.__name__)}, (model, ref)
    schemas.update(EXTRA_SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gitops-orchestrator",
            "version": __version__,
            "description": (
                "The HTTP surface of the GitOps orchestrator for Wasm-IoT devices: the read-only "
                "API under /api/v1, the original orchestrator's routes under /file and "
                "/execute, the routes devices and git hosts call, probes, metrics and pages. "
                "With an access token set (--api-token), routes marked with the bearer or "
                "cookie scheme need it."
            ),
        },
        "security": PROTECTED,
        "paths": _paths(),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": COOKIE,
                    "description": "Set by opening any page once with ?token=<token>.",
                },
            },
            "parameters": {
                "offset": {
                    "name": "offset",
                    "in": "query",
                    "description": "How many items to skip.",
                    "schema": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": api.MAX_OFFSET,
                        "default": 0,
                    },
                },
                "limit": {
                    "name": "limit",
                    "in": "query",
                    "description": "How many items at most.",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": api.MAX_LIMIT,
                        "default": api.DEFAULT_LIMIT,
                    },
                },
                "ifNoneMatch": {
                    "name": "If-None-Match",
                    "in": "header",
                    "description": "The ETag of an earlier answer: 304 while it is current.",
                    "schema": {"type": "string"},
                },
            },
            "responses": {
                "NotModified": {
                    "description": "The answer is the one with the ETag given in If-None-Match.",
                    "headers": {"ETag": {"schema": {"type": "string"}}},
                },
                "Unauthorized": _error("The access token is missing or does not match."),
            },
        },
    }


def _ref(name: str) -> Json:
    return {"$ref": REF.format(model=name)}


def _error(description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json(name: str, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _name(where: str, what: str) -> Json:
    return {
        "name": where,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string"},
    }


def _cached(
    model: str,
    summary: str,
    *,
    paged: bool = False,
    named: str | None = None,
    tags: tuple[str, ...] = ("api",),
    extra: tuple[Json, ...] = (),
    param: str = "name",
) -> Json:
    """A GET answered from the cache: ETag, 304, and 404 for a name that is not there."""
    parameters: list[Json] = []
    if named is not None:
        parameters.append(_name(param, named))
    if paged:
        parameters += [
            {"$ref": "#/components/parameters/offset"},
            {"$ref": "#/components/parameters/limit"},
        ]
    parameters += [*extra, {"$ref": "#/components/parameters/ifNoneMatch"}]
    ok = _json(model, "The answer, with its ETag.")
    ok["headers"] = {"ETag": {"schema": {"type": "string"}}}
    responses: Json = {
        "200": ok,
        "304": {"$ref": "#/components/responses/NotModified"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
    }
    if paged:
        responses["400"] = _error("offset or limit (or a filter) is not valid.")
    if named is not None:
        responses["404"] = _error("Nothing by that name.")
    return {
        "get": {
            "summary": summary,
            "tags": list(tags),
            "parameters": parameters,
            "responses": responses,
        }
    }


def _page(
    summary: str,
    *,
    named: str | None = None,
    paged: bool = False,
    param: str = "name",
    extra: tuple[Json, ...] = (),
) -> Json:
    html = {"text/html": {"schema": {"type": "string"}}}
    parameters: list[Json] = [_name(param, named)] if named else []
    if paged:
        parameters += [
            {"$ref": "#/components/parameters/offset"},
            {"$ref": "#/components/parameters/limit"},
            *extra,
        ]
    responses: Json = {
        "200": {"description": "The page, with its ETag.", "content": html,
                "headers": {"ETag": {"schema": {"type": "string"}}}},
        "304": {"$ref": "#/components/responses/NotModified"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
    }  # fmt: skip
    if named:
        responses["404"] = {"description": "Nothing by that name.", "content": html}
    if paged:
        responses["400"] = {"description": "offset or limit is not valid.", "content": html}
    parameters.append({"$ref": "#/components/parameters/ifNoneMatch"})
    return {"get": {"summary": summary, "tags": ["pages"], "parameters": parameters,
                    "responses": responses}}  # fmt: skip


def _static() -> Json:
    return {
        "get": {
            "summary": "The pages' stylesheet and script.",
            "tags": ["pages"],
            "parameters": [_name("path", "A file of the pages' static folder.")],
            "responses": {
                "200": {"description": "The file.", "content": {"*/*": {}}},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "404": {
                    "description": "No such file: the error page when HTML is accepted.",
                    "content": {
                        "application/json": {"schema": _ref("Error")},
                        "text/html": {"schema": {"type": "string"}},
                    },
                },
            },
        }
    }


# The devices list's filters (`api.device_filters`).
DEVICE_FILTERS: tuple[Json, ...] = (
    {
        "name": "state",
        "in": "query",
        "description": "Only devices in this state; repeat it for several. Empty: any state.",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": {"enum": ["", *api.DEVICE_STATES]}},
    },
    {
        "name": "search",
        "in": "query",
        "description": "Only devices whose name contains this, in any case.",
        "schema": {"type": "string", "maxLength": api.MAX_SEARCH},
    },
)


def _paths() -> Json:
    query = {"in": "query", "schema": {"type": "string"}}
    return {
        "/api/v1/sync": _cached("SyncView", "What the orchestrator follows and where it stands."),
        "/api/v1/overview": _cached("OverviewView", "Sync state, counts and recent events."),
        "/api/v1/commits": _cached("CommitPage", "Commits looked at, newest first.", paged=True),
        "/api/v1/commits/{sha}": _cached(
            "CommitDetailView",
            "One commit: what it changed, its problems, its events.",
            named="A full 40-hex commit sha.",
            param="sha",
        ),
        "/api/v1/devices": _cached(
            "DevicePage", "Known devices, by name.", paged=True, extra=DEVICE_FILTERS
        ),
        "/api/v1/devices/{name}": _cached("DeviceDetailView", "One device.", named="A device."),
        "/api/v1/modules": _cached("ModulePage", "Modules of the desired commit.", paged=True),
        "/api/v1/modules/{name}": _cached("ModuleDetailView", "One module.", named="A module."),
        "/api/v1/deployments": _cached(
            "DeploymentPage", "Deployments of the desired commit.", paged=True
        ),
        "/api/v1/deployments/{name}": _cached(
            "DeploymentDetailView", "One deployment.", named="A deployment."
        ),
        "/api/v1/events": _cached(
            "EventPage",
            "What happened, newest first.",
            paged=True,
            extra=(
                {"name": "device", "description": "Only this device's events.", **query},
                {"name": "deployment", "description": "Only this deployment's.", **query},
            ),
        ),
        "/api/v1/events/stream": _event_stream(),
        "/file/device": _cached(
            "CompatDevices", "Devices, as the original listed them.", tags=("original",)
        ),
        "/file/module": _open(
            _cached("CompatModules", "Modules, as the original listed them.", tags=("original",))
        ),
        "/file/module/{name}": _open(
            _cached(
                "CompatModules",
                "One module, in an array of one.",
                named="A module.",
                tags=("original",),
            )
        ),
        "/file/module/{name}/{file}": _module_file(),
        "/file/manifest": _cached(
            "CompatDeployments", "Deployments, with their deploy bodies.", tags=("original",)
        ),
        "/file/manifest/{name}": _cached(
            "CompatDeployment",
            "One deployment, with its deploy bodies.",
            named="A deployment.",
            tags=("original",),
        ),
        "/file/device/discovery/register": _register(),
        "/device/logs": _logs(),
        "/execute/{deployment}": _execute(),
        "/hooks/git": _hook(),
        "/healthz": {
            "get": {
                "summary": "200 while the process serves requests.",
                "tags": ["probes"],
                "security": OPEN,
                "responses": {"200": _json("Status", "Serving.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "200 once there is a desired commit or the first sync ended.",
                "tags": ["probes"],
                "security": OPEN,
                "responses": {
                    "200": _json("Ready", "Ready."),
                    "503": _error("Not ready, and why."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Metrics in the Prometheus text format.",
                "tags": ["probes"],
                "responses": {
                    "200": {"description": "The metrics.", "content": {"text/plain": {}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "tags": ["api"],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                },
            }
        },
        "/": _page("Overview."),
        "/devices": _page("Devices, filtered.", paged=True, extra=DEVICE_FILTERS),
        "/devices/{name}": _page("One device.", named="A device."),
        "/modules": _page("Modules.", paged=True),
        "/modules/{name}": _page("One module.", named="A module."),
        "/deployments": _page("Deployments.", paged=True),
        "/deployments/{name}": _page(
            "One deployment, with a form to run it.", named="A deployment."
        ),
        "/commits": _page("Commits.", paged=True),
        "/commits/{sha}": _page("One commit.", named="A full 40-hex commit sha.", param="sha"),
        "/static/{path}": _static(),
    }


def _open(path_item: Json) -> Json:
    for operation in path_item.values():
        operation["security"] = OPEN
        operation["responses"].pop("401", None)
    return path_item


def _event_stream() -> Json:
    return {
        "get": {
            "summary": "Every new event as it is recorded (server-sent events; never ends).",
            "description": (
                "Each message is unnamed: `id: <event id>` and `data: <EventView as JSON>` "
                "(the kind is in the data); comments keep the connection alive. Reconnecting "
                "with Last-Event-ID resumes after that event."
            ),
            "tags": ["api"],
            "parameters": [
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The stream.",
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "itemSchema": _ref("EventView"),
                        }
                    },
                },
                "401": {"$ref": "#/components/responses/Unauthorized"},
            },
        }
    }


def _module_file() -> Json:
    binary = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
    return {
        "get": {
            "summary": "A module's binary (`wasm`), description, or data file, for devices.",
            "tags": ["devices"],
            "security": OPEN,
            "parameters": [
                _name("name", "A module."),
                _name("file", "`wasm`, `description`, or a data file's name."),
                {
                    "name": "digest",
                    "in": "query",
                    "description": "The sha256 of the exact bytes wanted (deploy bodies pin it).",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "The file; the description is the module's OpenAPI document.",
                    "content": {
                        "application/wasm": binary,
                        "application/octet-stream": binary,
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                "404": _error("No such module or file (or no kept file with that digest)."),
            },
        }
    }


def _register() -> Json:
    return {
        "post": {
            "summary": "A supervisor registers itself (answered at once).",
            "tags": ["devices"],
            "security": OPEN,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Registration")}},
            },
            "responses": {
                "204": {"description": "Accepted; the device is introduced in the background."},
                "400": _error("Not a registration."),
                "413": _error("Larger than a registration ever is."),
            },
        }
    }


def _logs() -> Json:
    return {
        "post": {
            "summary": "A supervisor ships a log line.",
            "tags": ["devices"],
            "security": OPEN,
            "requestBody": {
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "logData": {"type": "string", "description": "A JSON object."}
                            },
                        }
                    }
                }
            },
            "responses": {
                "200": _json("Status", "Taken (a malformed line is counted and dropped)."),
                "413": _error("Over the log body limit."),
            },
        }
    }


def _execute() -> Json:
    argument = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    return {
        "post": {
            "summary": "Run a deployment and answer its result.",
            "tags": ["original"],
            "parameters": [
                _name("deployment", "A deployment."),
                {
                    "name": "wait",
                    "in": "query",
                    "description": "Seconds to wait for the result (default 30, at most 300).",
                    "schema": {"type": "number"},
                },
            ],
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"type": "array", "items": argument},
                                {"type": "object", "additionalProperties": argument},
                            ]
                        }
                    },
                    "multipart/form-data": {"schema": {"type": "object"}},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                }
            },
            "responses": {
                "200": _json("RunResult", "The result."),
                "400": _error("The arguments are not valid."),
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "404": _error("No such deployment in the desired commit."),
                "413": _error("The request is too large."),
                "502": _error("A device failed the run."),
                "503": _error("The deployment is not deployed (yet), and why."),
                "504": _json("RunPending", "The result was not ready within the wait."),
            },
        }
    }


def _hook() -> Json:
    signature = {"in": "header", "schema": {"type": "string"}}
    return {
        "post": {
            "summary": "A push webhook (HMAC-signed): fetch the repository at once.",
            "tags": ["git"],
            "security": OPEN,
            "parameters": [
                {"name": "X-Hub-Signature-256", "description": "sha256=<hex>", **signature},
                {"name": "X-Gitea-Signature", "description": "<hex>", **signature},
            ],
            "requestBody": {"content": {"application/json": {"schema": {}}}},
            "responses": {
                "202": _json("Status", "Signed: a fetch follows."),
                "401": _error("The signature is missing or does not match."),
                "403": _error("No webhook secret is configured."),
                "413": _error("Larger than a webhook body ever is."),
            },
        }
    }


def rendered() -> str:
    """The document as checked in at `schema/openapi.json`."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@functools.cache
def _encoded() -> bytes:
    return rendered().encode()


async def openapi_json(request: Request) -> Response:
    return Response(_encoded(), media_type="application/json")


ROUTES: list[BaseRoute] = [Route("/openapi.json", openapi_json)]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FILE
    target.write_text(rendered(), encoding="utf-8")
