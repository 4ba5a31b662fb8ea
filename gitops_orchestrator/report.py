"""`plan`'s output: one review rendered as text, as Markdown for a pull request, or as JSON.

Every format starts with the one-line summary and the warnings (base moved on since the merge
base), then head's problems, the steps that cannot be placed, the breaking changes and the prune
guard (what blocks a merge), then what the files change (deployments, modules, devices.yaml),
what each device gains, changes and loses, the steps waiting for a device, and the notes. The
Markdown is written to be posted as a pull-request comment: a table per device, details
collapsed when long, and kept under the size a comment may have. Rendering only; nothing here
decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .core import wording
from .core.breaking import Breaking
from .core.devicediff import DeploymentChange, DeviceChange
from .core.modulediff import Change, ModuleFacts
from .core.repodiff import DeploymentDiff, DeviceEntryDiff
from .core.review import Review, StepIssue
from .models import Problem
from .review import Planned, problem_file

MARKDOWN_LIMIT = 60_000
"""Characters of a Markdown plan: GitHub refuses comments over 65,536."""
TABLE_ROWS = 100
"""Devices in the Markdown table; the rest are in the details (and in the JSON)."""
COLLAPSE_LINES = 15
"""Detail lines shown open; past this they are folded in a <details> block."""


def render(planned: Planned, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(as_json(planned), indent=2, ensure_ascii=False)
    if output_format == "markdown":
        return markdown(planned)
    return text(planned)


def _origin(planned: Planned) -> str:
    result = planned.review
    where = (
        f"the inventory {planned.inventory}" if planned.inventory else "devices.yaml (no inventory)"
    )
    base = _sha(planned.base_tip or result.base_sha)
    if planned.merge_base and planned.merge_base != planned.base_tip:
        base += f", merge base {_sha(planned.merge_base)}"
    return (
        f"base {planned.base_ref} ({base}), head {planned.head_ref} "
        f"({_sha(result.head_sha)}); {result.fleet} devices from {where}"
    )


# Text


def text(planned: Planned) -> str:
    result = planned.review
    lines = [f"plan: {result.summary}", _origin(planned)]
    lines.extend(f"warning: {warning}" for warning in planned.warnings)

    def section(title: str, entries: Iterable[str]) -> None:
        entries = list(entries)
        if entries:
            lines.extend(["", f"{title}:", *(f"  {entry}" for entry in entries)])

    section("head's problems", (_problem(planned, p) for p in result.head_problems))
    section("cannot be placed", (_issue(issue) for issue in result.unplaceable))
    breaking = []
    for item in result.breaking:
        breaking.extend([item.message, f"  base: {item.base}", f"  head: {item.head}"])
    section("breaking changes", breaking)
    if result.prune:
        section("prune guard", [result.prune.text])
    section("deployments", _deployment_lines(result))
    section("modules", _module_lines(result))
    section("devices.yaml", _devices_yaml_lines(result))
    devices = []
    for device in result.devices:
        devices.append(f"{device.device} ({device.state})")
        devices.extend(f"  {line}" for line in _device_lines(device))
    section("devices", devices)
    section("waiting for a device (not an error)", (_issue(i) for i in result.waiting))
    section("notes", result.notes)
    return "\n".join(lines)


def _device_lines(device: DeviceChange) -> list[str]:
    lines = []
    for kind in ("gains", "changes", "loses"):
        for change in getattr(device, kind):
            lines.append(f"{kind} {_deployment(change)}: {change.reason}")
    for label, names in (
        ("modules gained", device.modules_gained),
        ("modules changed", device.modules_changed),
        ("modules lost", device.modules_lost),
    ):
        if names:
            lines.append(f"{label}: {', '.join(names)}")
    return lines


def _deployment_lines(result: Review) -> list[str]:
    return [_change_line(diff.deployment, diff) for diff in result.deployments]


def _devices_yaml_lines(result: Review) -> list[str]:
    lines = []
    if result.devices_yaml.admission:
        lines.append("admission: {} → {}".format(*result.devices_yaml.admission))
    lines.extend(_change_line(diff.device, diff) for diff in result.devices_yaml.devices)
    return lines


def _change_line(name: str, diff: DeploymentDiff | DeviceEntryDiff) -> str:
    if diff.change is Change.CHANGED or isinstance(diff, DeviceEntryDiff):
        return f"{name} {diff.change.value}: {'; '.join(diff.details)}"
    was = "was " if diff.change is Change.REMOVED else ""
    return f"{name} {diff.change.value}: {was}{' then '.join(diff.details)}"


def _module_lines(result: Review) -> list[str]:
    lines = []
    for module in result.modules:
        if module.change is Change.CHANGED:
            lines.append(f"{module.name} changed: {'; '.join(module.details) or 'see JSON'}")
        elif module.change is Change.ADDED and module.head:
            lines.append(f"{module.name} added: {_facts(module.head)}")
        elif module.base:
            lines.append(f"{module.name} removed: was {_facts(module.base)}")
    return lines


# Markdown


def markdown(planned: Planned) -> str:
    result = planned.review
    out = [f"### Plan: {_md(result.summary)}", "", _md(_origin(planned))]
    for warning in planned.warnings:
        out.extend(["", f"> **Warning:** {_md(warning)}"])

    def section(title: str, entries: Iterable[str]) -> None:
        entries = list(entries)
        if len(entries) > COLLAPSE_LINES:
            out.extend(["", f"<details><summary>{title} ({len(entries)})</summary>", ""])
            out.extend([*(f"- {entry}" for entry in entries), "", "</details>"])
        elif entries:
            out.extend(["", f"**{title}**", "", *(f"- {entry}" for entry in entries)])

    section(
        "Head's problems (the orchestrator would reject this commit)",
        (_md(_problem(planned, p), code_prefix=True) for p in result.head_problems),
    )
    section("Steps that cannot be placed", (_md_issue(i) for i in result.unplaceable))
    section(
        "Breaking changes",
        (
            f"{_md(b.message)}<br>base: {_md(b.base)}<br>head: {_md(b.head)}"
            for b in result.breaking
        ),
    )
    if result.prune:
        held = "Held by the prune guard" if result.prune.held else "Prune guard"
        out.extend(["", f"**{held}:** {_md(result.prune.text)}"])
    section("Deployments", (_md_change(d.deployment, d) for d in result.deployments))
    section("devices.yaml", _md_devices_yaml(result))
    if result.devices:
        out.extend(["", "| device | gains | changes | loses |", "|---|---|---|---|"])
        for device in result.devices[:TABLE_ROWS]:
            out.append(
                f"| `{device.device}` | {_cell(device.gains, device.modules_gained)} | "
                f"{_cell(device.changes, device.modules_changed)} | "
                f"{_cell(device.loses, device.modules_lost)} |"
            )
        if len(result.devices) > TABLE_ROWS:
            more = len(result.devices) - TABLE_ROWS
            out.extend(["", f"…and {more} more devices, in the details below."])
    section(
        "Waiting for a device (not an error: they deploy once it can take them)",
        (_md_issue(i) for i in result.waiting),
    )
    details = _md_details(result)
    if len(details) > COLLAPSE_LINES:
        devices = wording.count(len(result.devices), "device")
        count = f"{devices}, {wording.count(len(result.modules), 'module')}"
        out.extend(["", f"<details><summary>Details ({count})</summary>", "", *details])
        out.extend(["", "</details>"])
    elif details:
        out.extend(["", *details])
    return _within_limit(out)


def _md_details(result: Review) -> list[str]:
    lines = []
    for device in result.devices:
        lines.extend(["", f"**`{device.device}`** ({device.state})", ""])
        lines.extend(f"- {_md(line)}" for line in _device_lines(device))
    modules = _module_lines(result)
    if modules:
        lines.extend(["", "**Modules**", "", *(f"- {_md(line)}" for line in modules)])
    if result.notes:
        lines.extend(["", "**Notes**", "", *(f"- {_md(note)}" for note in result.notes)])
    return lines[1:] if lines and not lines[0] else lines


def _cell(changes: tuple[DeploymentChange, ...], modules: tuple[str, ...]) -> str:
    parts = [f"`{change.deployment}`" for change in changes]
    if modules:
        parts.append("modules " + ", ".join(f"`{m}`" for m in modules))
    return "<br>".join(parts) or " "


def _md_devices_yaml(result: Review) -> list[str]:
    admission = _devices_yaml_lines(result)[:1] if result.devices_yaml.admission else []
    return [
        *(_md(line) for line in admission),
        *(_md_change(diff.device, diff) for diff in result.devices_yaml.devices),
    ]


def _md_change(name: str, diff: DeploymentDiff | DeviceEntryDiff) -> str:
    _, _, rest = _change_line(name, diff).partition(" ")
    return f"`{name}` {_md(rest)}"


def _md_issue(issue: StepIssue) -> str:
    return (
        f"`{issue.deployment}` step {issue.step} (`{issue.module}.{issue.function}`): "
        f"{_md(issue.reason)}"
    )


def _md(text: str, *, code_prefix: bool = False) -> str:
    """Free text made inert in Markdown: no HTML, no table breaks."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = escaped.replace("|", "\\|")
    if code_prefix and ": " in escaped:
        where, _, message = escaped.partition(": ")
        return f"`{where}`: {message}"
    return escaped


def _within_limit(lines: list[str]) -> str:
    document = "\n".join(lines)
    if len(document) <= MARKDOWN_LIMIT:
        return document
    cut = document[: MARKDOWN_LIMIT - 200].rsplit("\n", 1)[0]
    closing = "\n\n</details>" if cut.count("<details>") > cut.count("</details>") else ""
    return (
        f"{cut}\n\n…cut to fit a comment: run `gitops-orchestrator plan --format text` "
        f"(or json) for the whole plan.{closing}"
    )


# JSON


def as_json(planned: Planned) -> dict[str, Any]:
    result = planned.review
    return {
        "summary": result.summary,
        "ok": result.ok,
        "base": {
            "ref": planned.base_ref,
            "sha": planned.base_tip or result.base_sha,
            "merge_base": planned.merge_base,
            "moved_on": planned.moved_on,
            "valid": result.base_valid,
        },
        "head": {
            "ref": planned.head_ref,
            "sha": result.head_sha,
            "valid": result.valid,
            "problems": [
                {"file": problem_file(planned, p), "line": p.line, "message": p.message}
                for p in result.head_problems
            ],
        },
        "warnings": list(planned.warnings),
        "inventory": {"source": planned.inventory, "devices": result.fleet},
        "unplaceable": [vars(issue) for issue in result.unplaceable],
        "breaking": [_json_breaking(item) for item in result.breaking],
        "prune_guard": _json_prune(result),
        "deployments": [_json_diff(diff) for diff in result.deployments],
        "devices_yaml": {
            "admission": (
                dict(zip(("base", "head"), result.devices_yaml.admission, strict=True))
                if result.devices_yaml.admission
                else None
            ),
            "devices": [_json_diff(diff) for diff in result.devices_yaml.devices],
        },
        "devices": [_json_device(device) for device in result.devices],
        "waiting": [vars(issue) for issue in result.waiting],
        "modules": [
            {
                "module": m.name,
                "change": m.change.value,
                "details": list(m.details),
                "base": _json_facts(m.base),
                "head": _json_facts(m.head),
            }
            for m in result.modules
        ],
        "notes": list(result.notes),
    }


def _json_prune(result: Review) -> dict[str, Any]:
    if result.prune is None:
        return {"held": False}
    return {"held": result.prune.held, "reason": result.prune.text, **vars(result.prune)}


def _json_diff(diff: DeploymentDiff | DeviceEntryDiff) -> dict[str, Any]:
    return {**vars(diff), "change": diff.change.value, "details": list(diff.details)}


def _json_breaking(item: Breaking) -> dict[str, Any]:
    return {**vars(item), "kind": item.kind.value, "callers": list(item.callers)}


def _json_device(device: DeviceChange) -> dict[str, Any]:
    def entries(changes: tuple[DeploymentChange, ...]) -> list[dict[str, Any]]:
        return [
            {"deployment": c.deployment, "steps": list(c.steps), "reason": c.reason,
             "details": list(c.details), "modules": list(c.modules)}
            for c in changes
        ]  # fmt: skip

    return {
        "device": device.device,
        "state": device.state,
        "gains": entries(device.gains),
        "changes": entries(device.changes),
        "loses": entries(device.loses),
        "modules": {
            "gained": list(device.modules_gained),
            "changed": list(device.modules_changed),
            "lost": list(device.modules_lost),
        },
    }


def _json_facts(facts: ModuleFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    return {
        "wasm": facts.wasm, "digest": facts.digest, "size": facts.size,
        "exports": dict(facts.exports), "imports": list(facts.imports),
        "requirements": list(facts.requirements), "functions": dict(facts.functions),
        "data": dict(facts.data),
    }  # fmt: skip


# Shared


def _problem(planned: Planned, problem: Problem) -> str:
    line = f":{problem.line}" if problem.line else ""
    return f"{problem_file(planned, problem)}{line}: {problem.message}"


def _issue(issue: StepIssue) -> str:
    return f"{issue.deployment} step {issue.step} ({issue.module}.{issue.function}): {issue.reason}"


def _deployment(change: DeploymentChange) -> str:
    return f"{change.deployment} [{', '.join(change.steps)}]"


def _facts(facts: ModuleFacts) -> str:
    exports = ", ".join(f"{name}({count})" for name, count in sorted(facts.exports.items()))
    size = f", {facts.size} bytes" if facts.size is not None else ""
    needs = ", ".join(facts.requirements) or "no host function"
    return f"sha256:{_sha(facts.digest)}{size}, exports {exports or 'nothing'}, needs {needs}"


def _sha(sha: str | None) -> str:
    return sha[:12] if sha else "?"
