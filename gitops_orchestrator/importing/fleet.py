"""Exported devices and deployments turned into `devices.yaml` and `deployments/<name>.yaml`.

Devices keep their names (a device is its mDNS instance name, so renaming one would lose it);
`blacklisted` becomes `cordoned`. Deployment steps refer to devices and modules by `_id` and
are resolved through the records already converted: a step keeps the device the original
placed it on (its original device when it is in failover) and its failovers in order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import ADDRESS_PATTERN, DEVICE_PATTERN
from .export import Export, Record, object_id
from .modules import Converted

ORCHESTRATOR = "orchestrator"
"""The name under which the original listed itself as a device (to host its core modules)."""
DEVICE = re.compile(DEVICE_PATTERN)
ADDRESS = re.compile(ADDRESS_PATTERN)
MAX_DEVICE = 63
MAX_ADDRESS = 256  # the repository format's limit


@dataclass
class Devices:
    """The exported devices: names by `_id`, and the entries of devices.yaml."""

    names: dict[str, str] = field(default_factory=dict)
    orchestrator: set[str] = field(default_factory=set)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)


def convert_devices(export: Export, *, static_addresses: bool) -> Devices:
    """Every exported device but the orchestrator, by name; the rest is noted."""
    devices = Devices()
    first: dict[str, Record] = {}
    for record in export.records["device"]:
        name = record.name
        if name == ORCHESTRATOR:
            if record.id:
                devices.orchestrator.add(record.id)
            export.note(record, "is the original orchestrator itself: skipped", problem=False)
            continue
        if name is None or not DEVICE.match(name) or len(name) > MAX_DEVICE:
            export.note(
                record,
                "has a name that cannot be a device's mDNS instance name: not imported; steps "
                "placed on it are left to placement",
            )
            continue
        if record.id:
            devices.names[record.id] = name
        entry = devices.entries.setdefault(name, {})
        if name in first:
            export.note(
                record, f"is the device of {first[name].source} again: merged", problem=False
            )
        first.setdefault(name, record)
        if record.data.get("blacklisted") is True:
            entry["cordoned"] = True
        if static_addresses and "address" not in entry:
            address = _address(record.data.get("communication"))
            if address is None:
                export.note(record, "has no usable address and port: listed without one")
            else:
                entry["address"] = address
    return devices


def _address(communication: Any) -> str | None:
    """`http://<addresses[0]>:<port>`: the original only ever used the first address."""
    if not isinstance(communication, Mapping):
        return None
    addresses, port = communication.get("addresses"), communication.get("port")
    if not isinstance(addresses, list) or not addresses or not isinstance(addresses[0], str):
        return None
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or not 0 < port < 65536:
        return None
    host = addresses[0]
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    # One malformed address would make the loader reject devices.yaml, cordons and all.
    return address if ADDRESS.match(address) and len(address) <= MAX_ADDRESS else None


def devices_manifest(devices: Devices) -> dict[str, Any] | None:
    """devices.yaml: every imported device, admission left open as the original had it."""
    if not devices.entries:
        return None
    return {"devices": dict(sorted(devices.entries.items()))}


def convert_deployment(
    export: Export,
    record: Record,
    *,
    name: str,
    modules: Mapping[str, Converted],
    core: Mapping[str, str],
    devices: Devices,
) -> dict[str, Any] | None:
    """deployments/<name>.yaml for `record`, or None (with the reason noted)."""
    sequence = record.data.get("sequence")
    if not isinstance(sequence, list) or not sequence:
        export.note(record, "has no sequence: not imported")
        return None
    groups = record.data.get("failoversBySequence")
    groups = groups if isinstance(groups, list) else []
    steps = []
    for index, item in enumerate(sequence, start=1):
        if not isinstance(item, Mapping):
            export.note(record, f"step {index} is not an object: not imported")
            return None
        module_id = object_id(item.get("module"))
        module = modules.get(module_id or "")
        function = item.get("func")
        if module is None:
            if module_id and module_id in core:
                why = f"calls the original's core module {core[module_id]!r}, which is not kept"
            elif module_id in export.ids("module"):
                why = f"uses module _id {module_id}, which was not imported (see above)"
            else:
                why = f"refers to module _id {module_id}, which is not in the export"
            export.note(record, f"step {index} {why}: not imported")
            return None
        if not isinstance(function, str) or function not in module.manifest["functions"]:
            export.note(
                record,
                f"step {index} calls {module.name}.{function}, which was not imported: "
                "not imported",
            )
            return None
        step: dict[str, Any] = {"module": module.name, "function": function}
        group = groups[index - 1] if index - 1 < len(groups) else None
        chosen = _chosen_device(export, record, index, item, group, devices)
        if chosen:
            step["device"] = chosen
        failovers = _failovers(export, record, index, group, devices, chosen)
        if failovers:
            step["failovers"] = failovers
        steps.append(step)
    if record.data.get("active") is False:
        export.note(
            record,
            "was not active in the original; it is imported and will be deployed (remove its "
            "file to keep it off)",
        )
    return {"name": name, "sequence": steps}


def _chosen_device(
    export: Export,
    record: Record,
    index: int,
    item: Mapping[str, Any],
    group: Any,
    devices: Devices,
) -> str | None:
    """The step's device: its original one from the failover group, else where it ran."""
    placed = object_id(item.get("device"))
    original = object_id(group[0]) if isinstance(group, list) and group else None
    device_id = original or placed
    if original and placed and original != placed and record.data.get("isInFailover"):
        export.note(
            record,
            f"step {index} was running on a failover; it names its original device again",
            problem=False,
        )
    if device_id is None:
        return None
    if device_id in devices.orchestrator:
        export.note(
            record, f"step {index} ran on the original orchestrator: left to placement",
            problem=False,
        )  # fmt: skip
        return None
    name = devices.names.get(device_id)
    if name is None:
        export.note(
            record,
            f"step {index} was placed on device _id {device_id}, which is not imported: "
            "left to placement",
        )
    return name


def _failovers(
    export: Export,
    record: Record,
    index: int,
    group: Any,
    devices: Devices,
    chosen: str | None,
) -> list[str]:
    failovers: list[str] = []
    for value in group[1:] if isinstance(group, list) else ():
        device_id = object_id(value)
        name = devices.names.get(device_id or "")
        if name is None:
            export.note(
                record,
                f"step {index} has failover device _id {device_id}, which is not imported: "
                "left out",
            )
        elif name != chosen and name not in failovers:
            failovers.append(name)
    return failovers
