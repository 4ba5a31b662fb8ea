"""The files users write (design §1), as strict pydantic models.

`module.yaml`, `deployments/<name>.yaml` and `devices.yaml` are parsed into these models by
`manifests`; `schema/` holds the JSON Schemas generated from them for editors. The models check
what a single file can tell; what needs several files or the wasm binary (exports, data files
on disk, references between files) is checked by `manifests`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

# Module and deployment names end up in URL paths on devices (`/<deployment>/modules/<module>/`)
# and are the ids on the wire, so they stay lower-case and URL-safe.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
# A device is its mDNS instance name, which supervisors never give a dot.
DEVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
# A wasm export name that also has to sit in a URL path segment.
FUNCTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
# Mount paths and data-file names become file names on the device and URL path segments.
FILE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]*$"
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
ADDRESS_PATTERN = r"^https?://[^/\s?#]+/?$"
NAME_RULES = {
    NAME_PATTERN: "use lower-case letters, digits, '-' and '_', starting with a letter or digit",
    DEVICE_PATTERN: "use letters, digits, '-' and '_' (a device's mDNS name has no dot)",
    FUNCTION_PATTERN: "use letters, digits, '-' and '_', not starting with a digit",
    FILE_PATTERN: "use a plain file name: letters, digits, '.', '-' and '_', no folders",
    LABEL_PATTERN: "use letters, digits, '.', '/', '-' and '_'",
    ADDRESS_PATTERN: "use http://host:port or https://host:port, without a path",
}
# 63 is the length of a DNS label, which a device name must fit in.
ModuleName = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN, max_length=63),
    Field(description=NAME_RULES[NAME_PATTERN]),
]
DeploymentName = ModuleName
DeviceName = Annotated[
    str,
    StringConstraints(pattern=DEVICE_PATTERN, max_length=63),
    Field(description=NAME_RULES[DEVICE_PATTERN]),
]
FunctionName = Annotated[
    str,
    StringConstraints(pattern=FUNCTION_PATTERN, max_length=128),
    Field(description=NAME_RULES[FUNCTION_PATTERN]),
]
FileName = Annotated[
    str,
    StringConstraints(pattern=FILE_PATTERN, max_length=128),
    Field(description=NAME_RULES[FILE_PATTERN]),
]
RelativePath = Annotated[
    str,
    StringConstraints(pattern=r"^[^/\\]", min_length=1, max_length=1024),
    Field(description="A path relative to the file that names it, with '/' separators."),
]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_PATTERN, max_length=63)]
LabelValue = Annotated[str, StringConstraints(max_length=253)]


class Method(StrEnum):
    GET = "get"
    POST = "post"


class Stage(StrEnum):
    """When a mounted file reaches the module (the supervisor's three mount lists)."""

    DEPLOYMENT = "deployment"
    EXECUTION = "execution"
    OUTPUT = "output"


class Admission(StrEnum):
    OPEN = "open"
    LISTED = "listed"


# Media types both field supervisors accept for files (the Python one accepts a few more, the
# Rust one only these); a module using another would deploy on one kind of device only.
MediaType = Literal["application/octet-stream", "image/jpeg", "image/jpg", "image/png"]
Output = Literal["integer", "application/octet-stream", "image/jpeg", "image/jpg", "image/png"]
FILE_MEDIA_TYPES: tuple[str, ...] = get_args(MediaType)
INTEGER = "integer"
# The URL path segments next to data files under /file/module/<name>/ (protocol §6).
RESERVED_DATA_NAMES = frozenset({"wasm", "description"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mount(Strict):
    """A file the function reads or writes in the module's folder on the device."""

    path: FileName
    stage: Stage
    media_type: MediaType = "application/octet-stream"


class Function(Strict):
    """One exported function of a module, as callable on a device."""

    method: Method = Method.GET
    params: list[Literal["integer"]] = Field(
        default_factory=list,
        description="Parameter types, in order; they become param0, param1, ...",
    )
    output: Output = Field(
        description="'integer', or the media type of the file the function writes."
    )
    mounts: list[Mount] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Function:
        paths = [mount.path for mount in self.mounts]
        duplicates = sorted({path for path in paths if paths.count(path) > 1})
        if duplicates:
            raise ValueError(f"mount path {duplicates[0]!r} is listed twice")
        outputs = [mount for mount in self.mounts if mount.stage is Stage.OUTPUT]
        if self.output == INTEGER and outputs:
            raise ValueError(
                f"output mount {outputs[0].path!r} is never returned: the output is 'integer'"
            )
        if self.output != INTEGER and not outputs:
            raise ValueError(
                f"output {self.output!r} is a file, so the function needs a mount with "
                "stage 'output' naming it"
            )
        return self

    @property
    def is_file_output(self) -> bool:
        return self.output != INTEGER


class Module(Strict):
    """`modules/<name>/module.yaml`."""

    name: ModuleName
    wasm: RelativePath = Field(description="The wasm binary, relative to module.yaml.")
    functions: dict[FunctionName, Function] = Field(min_length=1)
    data: dict[FileName, RelativePath] = Field(
        default_factory=dict,
        description="Files shipped at deploy time: name on the device -> path in the repository.",
    )

    @property
    def referenced(self) -> tuple[str, ...]:
        """The files this manifest names, relative to it: the binary, then the data files."""
        return (self.wasm, *self.data.values())

    @field_validator("data")
    @classmethod
    def _data_names(cls, data: dict[str, str]) -> dict[str, str]:
        for name in sorted(data):
            if name in RESERVED_DATA_NAMES:
                raise ValueError(
                    f"a data file may not be named {name!r}: 'wasm' and 'description' are the "
                    "module's own URLs"
                )
        return data


class Step(Strict):
    """One step of a deployment: a module function and where it may run."""

    module: ModuleName
    function: FunctionName
    device: DeviceName | None = None
    selector: dict[LabelKey, LabelValue] | None = Field(
        default=None, description="Labels (from devices.yaml) a device must all have.", min_length=1
    )
    failovers: list[DeviceName] = Field(
        default_factory=list, description="Devices to use, in order, while the first is not."
    )

    @model_validator(mode="after")
    def _one_target(self) -> Step:
        if self.device is not None and self.selector is not None:
            raise ValueError("give either 'device' or 'selector', not both")
        return self


class Deployment(Strict):
    """`deployments/<name>.yaml`: a sequence of module functions, each calling the next."""

    name: DeploymentName
    sequence: list[Step] = Field(min_length=1)


class DeviceEntry(Strict):
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    address: (
        Annotated[
            str,
            StringConstraints(pattern=ADDRESS_PATTERN, max_length=256),
            Field(description=NAME_RULES[ADDRESS_PATTERN]),
        ]
        | None
    ) = None
    cordoned: bool = Field(default=False, description="Never place work on this device.")


class Devices(Strict):
    """`devices.yaml`: labels, static devices, cordons and the admission policy."""

    admission: Admission = Field(
        default=Admission.OPEN,
        description="open: any discovered device may get work; listed: only those listed here.",
    )
    devices: dict[DeviceName, DeviceEntry] = Field(default_factory=dict)


# Records of a loaded repository (made by `manifests`, read by everything after it). Plain
# frozen dataclasses: they are built once per commit and read on every reconcile pass.


@dataclass(frozen=True)
class CommitInfo:
    """Who made a commit, when (seconds since the epoch) and why."""

    sha: str
    author: str
    time: int
    message: str


@dataclass(frozen=True)
class Problem:
    """Something wrong in the repository; `file` is relative to the repository root."""

    file: str
    line: int | None
    message: str


@dataclass(frozen=True)
class WasmImport:
    module: str
    name: str
    kind: str


@dataclass(frozen=True)
class Inspection:
    """What a wasm binary offers and needs: exported functions (name -> parameter count)."""

    functions: Mapping[str, int]
    imports: tuple[WasmImport, ...]


@dataclass(frozen=True)
class FileFacts:
    """A committed file sent to devices: where it is, its sha256 and size in bytes."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class LoadedModule:
    spec: Module
    binary: FileFacts
    inspection: Inspection
    data: Mapping[str, FileFacts] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def requirements(self) -> tuple[str, ...]:
        """Host functions a device must offer (its supervisorInterfaces) to run this module."""
        return tuple(sorted({item.name for item in self.inspection.imports if item.kind == "func"}))


@dataclass(frozen=True)
class Snapshot:
    """A valid repository: the desired state of the fleet."""

    commit_sha: str | None
    modules: Mapping[str, LoadedModule]
    deployments: Mapping[str, Deployment]
    devices: Devices


@dataclass(frozen=True)
class LoadResult:
    """A snapshot when the repository is valid, otherwise every problem found."""

    snapshot: Snapshot | None
    problems: tuple[Problem, ...]


# The fleet as the planner sees it (built by discovery and the store, read by `core`).

DeviceId = str


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    GONE = "gone"


@dataclass(frozen=True)
class DeviceView:
    """What placement needs to know about one device."""

    name: DeviceId
    url: str
    """Base URL of the supervisor, e.g. `http://10.0.0.5:5000` (no trailing slash)."""
    state: DeviceState
    interfaces: frozenset[str]
    """The host functions its description lists (`supervisorInterfaces`)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    admitted: bool = True
    cordoned: bool = False
    online_since: float | None = None
    """When it last became online (seconds since the epoch), for `return_after`."""

    @property
    def is_eligible(self) -> bool:
        """Only online, admitted, non-cordoned devices get work (design §2)."""
        return self.state is DeviceState.ONLINE and self.admitted and not self.cordoned
