"""The original orchestrator's read routes (protocol §6), with its field names.

`GET /file/device`, `/file/module`, `/file/module/<id>` (an array of one), `/file/manifest` and
`/file/manifest/<id>` keep working for the original's GUIs, curl scripts and `init/` export.
Every `_id` is a name (design §2, Identity). A manifest's `fullManifest` holds the deploy bodies
as the reconciler builds them, rebuilt from the desired snapshot and the step placements its
last pass recorded. This is the one web module that speaks the original's camelCase; the
answers are cached by store version like `/api/v1`'s. Nothing here writes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..core import bodies, openapi
from ..core.placement import Placement, StepPlacement, StepStatus
from ..fleetdb import DeviceRecord
from ..models import DeviceState, DeviceView, LoadedModule, Snapshot
from ..store import Store
from . import api
from .responses import timestamp


class Compat(BaseModel):
    # Python names stay snake_case; the wire gets the original's names (the aliases).
    model_config = ConfigDict(frozen=True, serialize_by_alias=True)


class Communication(Compat):
    addresses: list[str]
    port: int


class DeviceDescription(Compat):
    platform: dict[str, Any]
    supervisor_interfaces: list[str] = Field(serialization_alias="supervisorInterfaces")


class DeviceHealth(Compat):
    report: dict[str, Any] | None
    """The last health report, or null before the first check."""
    time_of_query: str | None = Field(serialization_alias="timeOfQuery")


class CompatDevice(Compat):
    id: str = Field(serialization_alias="_id")
    name: str
    communication: Communication
    description: DeviceDescription
    status: Literal["active", "inactive"]
    """active while the device is online."""
    health: DeviceHealth


class Export(Compat):
    name: str
    parameter_count: int = Field(serialization_alias="parameterCount")


class Requirement(Compat):
    module: str
    name: str
    kind: str


class FileReference(Compat):
    original_filename: str = Field(serialization_alias="originalFilename")
    file_name: str = Field(serialization_alias="fileName")
    """The file's sha256 digest: the name it is kept under."""
    url: str
    """Where devices fetch it (the desired commit's bytes)."""


class MountInfo(Compat):
    media_type: str = Field(serialization_alias="mediaType")
    stage: str


class CompatModule(Compat):
    id: str = Field(serialization_alias="_id")
    name: str
    exports: list[Export]
    requirements: list[Requirement]
    wasm: FileReference
    data_files: dict[str, FileReference] = Field(serialization_alias="dataFiles")
    mounts: dict[str, dict[str, MountInfo]]
    """Function -> mount path -> its media type and stage."""
    description: dict[str, Any]
    """The module's OpenAPI description (protocol §3)."""


class SequenceItem(Compat):
    device: str | None
    """The device the step is placed on, or null while it is not placed."""
    module: str
    func: str


class CompatDeployment(Compat):
    id: str = Field(serialization_alias="_id")
    name: str
    sequence: list[SequenceItem]
    full_manifest: dict[str, dict[str, Any]] = Field(serialization_alias="fullManifest")
    """Device -> the deploy body it gets (protocol §3); empty until every step is placed."""
    active: bool
    """Every step is placed and every device of `fullManifest` runs its body."""


class CompatDevices(RootModel[list[CompatDevice]]):
    model_config = ConfigDict(frozen=True)


class CompatModules(RootModel[list[CompatModule]]):
    model_config = ConfigDict(frozen=True)


class CompatDeployments(RootModel[list[CompatDeployment]]):
    model_config = ConfigDict(frozen=True)


# Builders: they read the store (in a worker thread, through `api.answer`).


def device_document(record: DeviceRecord) -> CompatDevice:
    return CompatDevice(
        id=record.device,
        name=record.device,
        communication=Communication(addresses=list(record.addresses), port=record.port),
        description=DeviceDescription(
            platform=dict(record.platform), supervisor_interfaces=list(record.interfaces)
        ),
        status="active" if record.state == DeviceState.ONLINE else "inactive",
        health=DeviceHealth(
            report=dict(record.health) if record.health is not None else None,
            time_of_query=timestamp(record.checked_at),
        ),
    )


def devices(store: Store) -> CompatDevices:
    return CompatDevices([device_document(record) for record in store.devices()])


def module_document(module: LoadedModule, *, base_url: str) -> CompatModule:
    root = f"{base_url}/file/module/{module.name}"
    return CompatModule(
        id=module.name,
        name=module.name,
        exports=[
            Export(name=name, parameter_count=count)
            for name, count in module.inspection.functions.items()
        ],
        # The original listed the function imports only, with WebAssembly's JS kind name.
        requirements=[
            Requirement(module=item.module, name=item.name, kind="function")
            for item in module.inspection.imports
            if item.kind == "func"
        ],
        wasm=FileReference(
            original_filename=module.spec.wasm.rsplit("/", 1)[-1],
            file_name=module.binary.digest,
            url=f"{root}/wasm",
        ),
        data_files={
            name: FileReference(
                original_filename=module.spec.data.get(name, name).rsplit("/", 1)[-1],
                file_name=facts.digest,
                url=f"{root}/{name}",
            )
            for name, facts in sorted(module.data.items())
        },
        mounts={
            function: {
                mount.path: MountInfo(media_type=mount.media_type, stage=mount.stage.value)
                for mount in spec.mounts
            }
            for function, spec in module.spec.functions.items()
        },
        description=openapi.module_description(module.spec),
    )


def modules(store: Store, *, base_url: str) -> CompatModules:
    snapshot = store.desired_snapshot()
    found = snapshot.modules if snapshot else {}
    return CompatModules(
        [module_document(found[name], base_url=base_url) for name in sorted(found)]
    )


def module(store: Store, name: str, *, base_url: str) -> CompatModules | None:
    snapshot = store.desired_snapshot()
    found = snapshot.modules.get(name) if snapshot else None
    if found is None:
        return None
    return CompatModules([module_document(found, base_url=base_url)])


def deployments(store: Store, *, base_url: str, only: str | None = None) -> CompatDeployments:
    """Every deployment of the desired commit (or only the one named), with its bodies."""
    snapshot = store.desired_snapshot()
    if snapshot is None:
        return CompatDeployments([])
    records = store.devices()
    placement = recorded_placement(snapshot, store)
    fleet = {
        record.device: DeviceView(
            name=record.device,
            url=record.url,
            state=DeviceState(record.state),
            interfaces=frozenset(record.interfaces),
        )
        for record in records
    }
    wire = bodies.deploy_bodies(snapshot, placement=placement, fleet=fleet, base_url=base_url)
    by_deployment: dict[str, dict[str, bodies.Body]] = {}
    for device, held in wire.items():
        for name, body in held.items():
            by_deployment.setdefault(name, {})[device] = body
    synced = {(s.device, s.deployment) for s in store.deploy_statuses() if s.status == "synced"}
    names = sorted(snapshot.deployments) if only is None else [only]
    documents = []
    for name in names:
        spec = snapshot.deployments.get(name)
        if spec is None:
            continue
        manifest = by_deployment.get(name, {})
        documents.append(
            CompatDeployment(
                id=name,
                name=name,
                sequence=[
                    SequenceItem(
                        device=_device_of(placement, name, index),
                        module=step.module,
                        func=step.function,
                    )
                    for index, step in enumerate(spec.sequence)
                ],
                full_manifest=manifest,
                active=bool(manifest) and all((device, name) in synced for device in manifest),
            )
        )
    return CompatDeployments(documents)


def recorded_placement(snapshot: Snapshot, store: Store) -> Placement:
    """The placement of the reconciler's last pass, as `core.placement.place` returned it."""
    steps: dict[tuple[str, int], StepPlacement] = {}
    for record in store.step_placements():
        try:
            status = StepStatus(record.status)
        except ValueError:  # a status this release does not know: never fatal for a read
            continue
        steps[(record.deployment, record.step)] = StepPlacement(
            record.device, status, record.reason
        )
    complete = frozenset(
        name
        for name, deployment in snapshot.deployments.items()
        if all(
            (step := steps.get((name, index))) is not None and step.status is StepStatus.PLACED
            for index in range(len(deployment.sequence))
        )
    )
    return Placement(steps=steps, complete=complete)


def _device_of(placement: Placement, deployment: str, index: int) -> str | None:
    step = placement.steps.get((deployment, index))
    return step.device if step is not None and step.status is StepStatus.PLACED else None


def base_url(request: Request) -> str:
    """The URL devices reach us at, for module URLs in documents and bodies.

    The orchestrator's `--public-url`: answers are cached for every client, so they must not
    depend on the Host header of the request that built them.
    """
    public: str | None = getattr(request.state, "public_url", None)
    return (public or str(request.base_url)).rstrip("/")


async def device_list(request: Request) -> Response:
    return await api.answer(request, devices)


async def module_list(request: Request) -> Response:
    url = base_url(request)
    return await api.answer(request, lambda store: modules(store, base_url=url))


async def module_item(request: Request) -> Response:
    url, name = base_url(request), request.path_params["name"]
    return await api.answer(request, lambda store: module(store, name, base_url=url))


async def manifest_list(request: Request) -> Response:
    url = base_url(request)
    return await api.answer(request, lambda store: deployments(store, base_url=url))


async def manifest_item(request: Request) -> Response:
    url, name = base_url(request), request.path_params["name"]

    def build(store: Store) -> CompatDeployment | None:
        found = deployments(store, base_url=url, only=name).root
        return found[0] if found else None

    return await api.answer(request, build)


# `/file/module/{name}` has one segment fewer than the module files' route: they never clash.
ROUTES: list[BaseRoute] = [
    Route("/file/device", device_list),
    Route("/file/module", module_list),
    Route("/file/module/{name}", module_item),
    Route("/file/manifest", manifest_list),
    Route("/file/manifest/{name}", manifest_item),
]
