"""The device inventory (design §3): a running orchestrator's devices, saved or fetched.

`gitops-orchestrator inventory --from URL` prints every page of `/api/v1/devices` as
`{"devices": [...]}` (items in the API's shape); `plan --inventory FILE|URL` reads that back
into the devices placement sees. Only what was *observed* is taken from an item (name, state,
url, interfaces, online_since, where its steps run): labels, admission and cordons come from
the devices.yaml of the commit being placed, as in the orchestrator. Extra keys are ignored, so
an inventory saved by a newer release still reads. This module maps httpx and JSON errors to
`InventoryError`; it never reads the environment (the token is passed in). Without an
inventory, `assumed` makes one of devices.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from .core.modulediff import CommitFacts
from .core.placement import StepKey
from .errors import OrchestratorError
from .models import DeviceId, DeviceState, DeviceView, Snapshot

DEVICES_ROUTE = "/api/v1/devices"
PAGE = 500
"""Items asked for per request: the API's largest page (`MAX_LIMIT`)."""
TIMEOUT = 10.0
"""Seconds for one page: an orchestrator answers a page from its cache in milliseconds."""


class InventoryError(OrchestratorError):
    """An inventory that cannot be read: a missing or malformed file, an unreachable URL."""


@dataclass(frozen=True)
class Inventory:
    devices: Mapping[DeviceId, DeviceView]
    """The devices as observed; labels, admission and cordons are not applied yet."""
    running: Mapping[StepKey, DeviceId]
    """Where the orchestrator runs each step now (the items' `runs`)."""
    source: str


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def load(source: str, *, token: str | None = None) -> Inventory:
    """The inventory in a file, or fetched from a running orchestrator at a URL."""
    if is_url(source):
        return parse({"devices": fetch_items(source, token=token)}, source=source)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read the inventory {source}: {exc}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InventoryError(f"the inventory {source} is not JSON: {exc}") from exc
    return parse(document, source=source)


def fetch_items(
    url: str, *, token: str | None = None, listing: str = DEVICES_ROUTE
) -> list[dict[str, Any]]:
    """Every item of `listing` (`/api/v1/devices`, or another list of the API) at `url` (an
    orchestrator's base URL), all pages."""
    base = url.rstrip("/")
    route = base if base.endswith(listing) else base + listing
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    items: dict[str, dict[str, Any]] = {}
    offset = 0
    try:
        with httpx.Client(headers=headers, timeout=TIMEOUT) as client:
            while True:
                page = _page(client, route, offset)
                for item in page["items"]:
                    items.setdefault(str(item.get("name")), item)  # a device may shift pages
                offset += len(page["items"])
                if not page["items"] or offset >= page["total"]:
                    break
    except httpx.HTTPError as exc:
        raise InventoryError(f"cannot reach {route}: {exc}") from exc
    return list(items.values())


def fetch_document(
    client: httpx.Client, route: str, params: Mapping[str, int] | None = None
) -> Any:
    """The JSON `route` answers with 200; InventoryError says why not (a token, a status)."""
    answer = client.get(route, params=params)
    if answer.status_code == 401:
        raise InventoryError(f"{route} needs a token: set GITOPS_API_TOKEN")
    if answer.status_code != 200:
        raise InventoryError(f"{route} answered {answer.status_code}: {answer.text[:200]}")
    try:
        return answer.json()
    except ValueError as exc:
        raise InventoryError(f"{route} did not answer JSON: {exc}") from exc


def _page(client: httpx.Client, route: str, offset: int) -> dict[str, Any]:
    page = fetch_document(client, route, {"offset": offset, "limit": PAGE})
    if (
        not isinstance(page, dict)
        or not isinstance(page.get("items"), list)
        or not isinstance(page.get("total"), int)
    ):
        raise InventoryError(f"{route} did not answer a page of items (items, total)")
    return page


def parse(document: Any, *, source: str) -> Inventory:
    """`{"devices": [items of /api/v1/devices]}` as the devices placement sees."""
    if not isinstance(document, dict) or not isinstance(document.get("devices"), list):
        raise InventoryError(f'{source}: an inventory is {{"devices": [...]}}')
    devices: dict[DeviceId, DeviceView] = {}
    running: dict[StepKey, DeviceId] = {}
    for number, item in enumerate(document["devices"]):
        view = _device(item, f"{source}: device {number + 1}")
        devices[view.name] = view
        for runs in item.get("runs") or ():
            if isinstance(runs, dict) and isinstance(runs.get("deployment"), str):
                for step in runs.get("steps") or ():
                    if isinstance(step, int):
                        running[(runs["deployment"], step)] = view.name
    return Inventory(devices=devices, running=running, source=source)


def assumed(
    snapshots: Iterable[Snapshot | None], facts: Iterable[CommitFacts]
) -> tuple[dict[str, DeviceView], str]:
    """The fleet without an inventory, and the note saying what was assumed.

    The devices of devices.yaml (either commit's; head's address wins) with an address are
    taken as online, those without one as known but offline (steps naming them wait). Their
    interfaces are unknown: all are taken to offer every import the modules of both commits
    need, since assuming less would call steps unplaceable for no reason. A device devices.yaml
    does not list is unknown, as nothing says the orchestrator discovered it.
    """
    needs = frozenset(
        name
        for commit in facts
        for module in commit.modules.values()
        for name in module.requirements
    )
    fleet: dict[str, DeviceView] = {}
    for snapshot in snapshots:
        for name, entry in snapshot.devices.devices.items() if snapshot else ():
            if entry.address:
                url = entry.address.rstrip("/")
                fleet[name] = DeviceView(name, url, DeviceState.ONLINE, needs)
            elif name not in fleet:
                fleet[name] = DeviceView(name, "", DeviceState.OFFLINE, needs)
    online = sorted(name for name, view in fleet.items() if view.state is DeviceState.ONLINE)
    offline = sorted(set(fleet) - set(online))
    note = (
        "no inventory: the devices of devices.yaml with an address "
        f"({', '.join(online) or 'none'}) are taken as online"
    )
    if offline:
        note += f", those without one ({', '.join(offline)}) as offline"
    note += (
        "; all as offering every import the modules need (a missing import is not detected), "
        "and no other device as known. Save the fleet with `gitops-orchestrator inventory "
        "--from URL` and plan with --inventory to see where steps really go"
    )
    return fleet, note


def _device(item: Any, where: str) -> DeviceView:
    if not isinstance(item, dict):
        raise InventoryError(f"{where} is not an object")
    name, url = item.get("name"), item.get("url", "")
    if not isinstance(name, str) or not name:
        raise InventoryError(f"{where} has no name")
    where = f"{where} ({name})"
    if not isinstance(url, str):
        raise InventoryError(f"{where}: url is not text")
    try:
        state = DeviceState(item.get("state", "online"))
    except ValueError:
        known = ", ".join(state.value for state in DeviceState)
        raise InventoryError(f"{where}: state is one of {known}") from None
    interfaces = item.get("interfaces", [])
    if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
        raise InventoryError(f"{where}: interfaces is a list of names")
    return DeviceView(
        name=name,
        url=url.rstrip("/"),
        state=state,
        interfaces=frozenset(interfaces),
        online_since=_seconds(item.get("online_since"), where),
    )


def _seconds(value: Any, where: str) -> float | None:
    """An API timestamp (ISO 8601, UTC) as seconds since the epoch."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        raise InventoryError(f"{where}: online_since is not an ISO 8601 time") from None
