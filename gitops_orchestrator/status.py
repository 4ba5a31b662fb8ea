"""The `status` command: where a running orchestrator stands, as `flux get` / `argocd app list`.

`fetch` reads `/api/v1/sync` and every page of `/api/v1/deployments` of a running orchestrator
(the token is passed in; this module never reads the environment); `render` turns them into
text for a person or JSON for a tool; `is_ok` is the exit status's rule: nothing failed and
nothing unplaceable. HTTP and JSON errors become `InventoryError`, as in `inventory`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from . import inventory
from .inventory import InventoryError

SYNC_ROUTE = "/api/v1/sync"
DEPLOYMENTS_ROUTE = "/api/v1/deployments"
BAD = frozenset({"failed", "unplaceable"})
"""Statuses that make `status` exit 1: each needs a person (a device refusing, no device fits)."""


@dataclass(frozen=True)
class Status:
    url: str
    sync: dict[str, Any]
    deployments: list[dict[str, Any]]


def fetch(url: str, *, token: str | None) -> Status:
    """The sync state and every deployment of the orchestrator at base URL `url`."""
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(headers=headers, timeout=inventory.TIMEOUT) as client:
            sync = inventory.fetch_document(client, base + SYNC_ROUTE)
    except httpx.HTTPError as exc:
        raise InventoryError(f"cannot reach {base}: {exc}") from exc
    if not isinstance(sync, dict):
        raise InventoryError(f"{base + SYNC_ROUTE} did not answer the sync state")
    items = inventory.fetch_items(base, token=token, listing=DEPLOYMENTS_ROUTE)
    return Status(base, sync, sorted(items, key=lambda item: str(item.get("name"))))


def problems(status: Status) -> list[str]:
    """`deployment: step N on DEVICE: status (reason)` for each failed or unplaceable step."""
    found = []
    for deployment in status.deployments:
        for step in deployment.get("steps", []):
            worst = _step_status(step)
            if worst in BAD:
                where = f" on {step['device']}" if step.get("device") else ""
                why = step.get("error") or step.get("reason") or ""
                found.append(f"{deployment['name']}: step {step['index']}{where}: {worst} ({why})")
        if deployment.get("status") in BAD and not any(
            line.startswith(f"{deployment['name']}:") for line in found
        ):
            found.append(f"{deployment['name']}: {deployment['status']}")
    return found


def is_ok(status: Status) -> bool:
    return not problems(status)


def render(status: Status, output_format: str) -> str:
    """Text (a person) or JSON (a tool: the API's own shapes, plus `ok` and `problems`)."""
    if output_format == "json":
        return json.dumps(
            {
                "orchestrator": status.url,
                "desired": status.sync.get("desired"),
                "last_rejected": status.sync.get("last_rejected"),
                "source": status.sync.get("source"),
                "deployments": status.deployments,
                "ok": is_ok(status),
                "problems": problems(status),
            },
            indent=2,
            ensure_ascii=False,
        )
    return "\n".join(_text(status))


def _text(status: Status) -> list[str]:
    sync, source = status.sync, status.sync.get("source") or {}
    lines = [f"orchestrator  {status.url}"]
    lines.append(f"source        {source.get('repo', '?')} (branch {source.get('branch') or '?'})")
    if source.get("error"):
        lines.append(f"source error  {source['error']}")
    lines.append("desired       " + _commit(sync.get("desired")))
    rejected = sync.get("last_rejected")
    lines.append("last rejected " + _commit(rejected))
    for problem in (rejected or {}).get("problems", []):
        line = f":{problem['line']}" if problem.get("line") else ""
        lines.append(f"                {problem['file']}{line}: {problem['message']}")
    lines.append("")
    if not status.deployments:
        lines.append("no deployments")
    width = max((len(str(d.get("name"))) for d in status.deployments), default=0)
    for deployment in status.deployments:
        lines.append(f"{deployment['name']:<{width}}  {deployment.get('status', '?')}")
        for step in deployment.get("steps", []):
            device = step.get("device") or "-"
            why = step.get("error") or step.get("reason") or ""
            lines.append(
                f"  {step['index']}. {step['module']}.{step['function']} on {device}: "
                f"{_step_status(step)}" + (f" ({why})" if why else "")
            )
    found = problems(status)
    lines.append("")
    lines.append(f"{len(found)} problem(s)" if found else "ok: nothing failed or unplaceable")
    return lines


def _commit(commit: dict[str, Any] | None) -> str:
    if not commit:
        return "none"
    subject = str(commit.get("message") or "").strip().splitlines()
    title = f" {subject[0]!r}" if subject else ""
    return f"{commit['sha'][:12]}{title} ({commit.get('author', '?')})"


def _step_status(step: dict[str, Any]) -> str:
    """The step's placement status, or its device's deploy status once it is placed."""
    if step.get("status") == "placed":
        return str(step.get("device_status") or "progressing")
    return str(step.get("status"))
