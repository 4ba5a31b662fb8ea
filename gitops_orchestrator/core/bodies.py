"""Deploy bodies: the exact JSON each supervisor gets on `POST /deploy` (protocol §3).

This is a purely computational function with no side-effects: the snapshot, a placement and
the devices' URLs go in, one body per (device, deployment) comes out, ready for `json.dumps`.
It is consumed by `planning.plan`, which compares bodies (by `body_digest`) with what each
device is known to run, and by the executor, which posts them. This is the one module that
speaks the wire's camelCase (`deploymentId`, `contentType`); every key and value kind here is
one the accepted cases of the conformance corpus use.

Bodies share sub-objects (a function's request and response, a module's URLs) so that a pass
over thousands of devices builds each of them once: treat bodies as read-only values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from ..models import Deployment, DeviceId, DeviceView, Function, LoadedModule, Snapshot, Stage
from . import openapi
from .placement import Placement

Body: TypeAlias = dict[str, Any]
"""One deploy body, as protocol §3 spells it."""

Bodies: TypeAlias = dict[DeviceId, dict[str, Body]]
"""Device -> deployment -> body."""

# The order of a mounts entry's three lists; the supervisor needs all three (protocol §3).
STAGES = (Stage.EXECUTION, Stage.DEPLOYMENT, Stage.OUTPUT)
BINARY = {"type": "string", "format": "binary"}


def deploy_bodies(
    snapshot: Snapshot,
    *,
    placement: Placement,
    fleet: Mapping[DeviceId, DeviceView],
    base_url: str,
) -> Bodies:
    """Device -> deployment -> wire body, for every deployment whose every step is placed.

    One body per (deployment, device) holds every step of the deployment placed on that
    device. A deployment with a step that is not placed is deployed nowhere: the step before
    it would chain (`to`) into an endpoint that runs on no device, so the deployment would
    accept calls and then fail half-way, instead of showing as waiting.
    """
    parts = _Parts(snapshot, base_url.rstrip("/"))
    bodies: Bodies = {}
    for name in sorted(placement.complete):
        deployment = snapshot.deployments.get(name)
        if deployment is None:
            continue
        steps = [placement.steps.get((name, number)) for number in range(len(deployment.sequence))]
        devices = [step.device for step in steps if step and step.device and step.device in fleet]
        if len(devices) != len(steps):  # placed against another fleet: bad data is never fatal
            continue
        endpoints = [
            parts.endpoint(name, module=step.module, function=step.function, url=fleet[device].url)
            for step, device in zip(deployment.sequence, devices, strict=True)
        ]
        for device in dict.fromkeys(devices):
            body = _body(
                deployment, devices=devices, device=device, endpoints=endpoints, parts=parts
            )
            bodies.setdefault(device, {})[name] = body
    return {device: bodies[device] for device in sorted(bodies)}


def body_digest(body: Mapping[str, Any]) -> str:
    """The sha256 of the body's canonical JSON: equal bodies, equal digests."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """The body as compact JSON with sorted keys: the bytes `body_digest` hashes."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _body(
    deployment: Deployment,
    *,
    devices: list[DeviceId],
    device: DeviceId,
    endpoints: list[dict[str, Any]],
    parts: _Parts,
) -> Body:
    modules: list[dict[str, Any]] = []
    by_module: dict[str, dict[str, Any]] = {}
    instructions: dict[str, dict[str, Any]] = {}
    mounts: dict[str, dict[str, Any]] = {}
    last = len(deployment.sequence) - 1
    for number, step in enumerate(deployment.sequence):
        if devices[number] != device:
            continue
        if step.module not in by_module:
            modules.append(parts.module(step.module))
            by_module[step.module], instructions[step.module], mounts[step.module] = {}, {}, {}
        endpoint = endpoints[number]
        by_module[step.module][step.function] = endpoint
        # `to` is the next step's endpoint with *its* device's url: the device calls it.
        following = endpoints[number + 1] if number < last else None
        instructions[step.module][step.function] = {"from": endpoint, "to": following}
        mounts[step.module][step.function] = parts.mounts(step.module, step.function)
    return {
        "deploymentId": deployment.name,
        "modules": modules,
        "endpoints": by_module,
        "instructions": {"modules": instructions},
        "mounts": mounts,
    }


class _Parts:
    """The pieces of bodies that do not depend on the device, each built once per pass."""

    def __init__(self, snapshot: Snapshot, base_url: str) -> None:
        self.modules = snapshot.modules
        self.base_url = base_url
        self._modules: dict[str, dict[str, Any]] = {}
        self._requests: dict[tuple[str, str], dict[str, Any]] = {}
        self._responses: dict[tuple[str, str], dict[str, Any]] = {}
        self._mounts: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = {}

    def module(self, name: str) -> dict[str, Any]:
        entry = self._modules.get(name)
        if entry is None:
            entry = _module_entry(self.modules[name], self.base_url)
            self._modules[name] = entry
        return entry

    def endpoint(self, deployment: str, *, module: str, function: str, url: str) -> dict[str, Any]:
        key = (module, function)
        if key not in self._requests:
            spec = self.modules[module].spec.functions[function]
            self._requests[key] = _request(spec)
            media_type, schema = openapi.response_content(spec)
            self._responses[key] = {"media_type": media_type, "schema": schema}
        # Exactly these five keys: the supervisor builds an object from them with **kwargs.
        return {
            "url": url,
            "path": f"/{deployment}/modules/{module}/{function}",
            "method": self.modules[module].spec.functions[function].method.value,
            "request": self._requests[key],
            "response": self._responses[key],
        }

    def mounts(self, module: str, function: str) -> dict[str, list[dict[str, str]]]:
        key = (module, function)
        entry = self._mounts.get(key)
        if entry is None:
            spec = self.modules[module].spec.functions[function]
            entry = {
                stage.value: [
                    {"path": mount.path, "media_type": mount.media_type, "stage": stage.value}
                    for mount in spec.mounts
                    if mount.stage is stage
                ]
                for stage in STAGES
            }
            self._mounts[key] = entry
        return entry


def _module_entry(module: LoadedModule, base_url: str) -> dict[str, Any]:
    # Pinned to the digest: a device that downloads while a newer commit rolls out still gets
    # the bytes its body was made for (design §2, URLs).
    root = f"{base_url}/file/module/{module.name}"
    return {
        "id": module.name,
        "name": module.name,
        "urls": {
            "binary": f"{root}/wasm?digest={module.binary.digest}",
            "description": f"{root}/description",
            # An object even when empty: a list here crashes the supervisor (protocol §3).
            "other": {
                name: f"{root}/{name}?digest={facts.digest}"
                for name, facts in sorted(module.data.items())
            },
        },
    }


def _request(function: Function) -> dict[str, Any]:
    request: dict[str, Any] = {"parameters": openapi.query_parameters(function)}
    files = openapi.input_files(function)
    if files:
        # Deployment-stage files are listed too, as the original orchestrator did (corpus
        # case deployment-data-file); the device ignores a part it already has.
        request["request_body"] = {
            "media_type": "multipart/form-data",
            "schema": {"type": "object", "properties": {name: dict(BINARY) for name in files}},
            "encoding": {
                mount.path: {"contentType": mount.media_type}
                for mount in function.mounts
                if mount.stage in openapi.INPUT_STAGES
            },
        }
    return request
