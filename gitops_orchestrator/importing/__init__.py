"""`import-init`: an original orchestrator's `init/` export turned into a fleet repository.

`export` reads the records, `naming` gives modules and deployments repository names,
`modules` and `fleet` convert each record, and `repository` checks the result with the
loader, writes it and commits it. Every record (or part of one) not carried over as it was is
a `Finding` with its place in the export and the reason. Nothing here reaches the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..settings import LoaderSettings
from . import export as exports
from . import fleet, modules, naming, repository
from .export import Finding, Record


@dataclass(frozen=True)
class Imported:
    """What one import wrote, and what it could not carry over."""

    source: Path
    into: Path
    commit_sha: str
    modules: Mapping[str, str]
    """Imported module name -> the original record's `_id`."""
    deployments: Mapping[str, str]
    devices: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.problem)


def run(
    source: Path, into: Path, *, settings: LoaderSettings, static_addresses: bool = False
) -> Imported:
    """Convert the export at `source` into a new repository at `into` and commit it."""
    repository.check_target(into)
    export = exports.read(source)
    converted, core = _modules(export, settings)
    devices = fleet.convert_devices(export, static_addresses=static_addresses)
    files: dict[str, bytes] = {}
    owners: dict[str, Record] = {}
    for module in converted.values():
        folder = f"modules/{module.name}"
        owners[folder] = module.record
        files[f"{folder}/module.yaml"] = _yaml(module.manifest, module.record)
        files.update({f"{folder}/{path}": data for path, data in module.files.items()})
    names = naming.assign(export, export.records["deployment"], "deployment")
    for record in export.records["deployment"]:
        name = names.get(id(record))
        manifest = name and fleet.convert_deployment(
            export, record, name=name, modules=converted, core=core, devices=devices
        )
        if name and manifest:
            owners[f"deployments/{name}.yaml"] = record
            files[f"deployments/{name}.yaml"] = _yaml(manifest, record)
    devices_manifest = fleet.devices_manifest(devices)
    if devices_manifest:
        files["devices.yaml"] = _yaml(devices_manifest, None)
    files = _checked(export, files, owners, settings)
    if not any(path.startswith("modules/") for path in files):
        message = "holds nothing this orchestrator can run: the repository has no modules"
        export.findings.append(Finding(".", "the export", message))
    imported_modules = {
        m.name: m.record.id or ""
        for m in converted.values()
        if f"modules/{m.name}/module.yaml" in files
    }
    findings = tuple(sorted(export.findings, key=_export_order))
    sha = repository.write(into, files, _message(imported_modules, findings))
    return Imported(
        source=export.root,
        into=into,
        commit_sha=sha,
        modules=dict(sorted(imported_modules.items())),
        deployments={
            path[len("deployments/") : -len(".yaml")]: record.id or ""
            for path, record in sorted(owners.items())
            if path.startswith("deployments/") and path in files
        },
        devices=tuple(sorted(devices.entries)) if "devices.yaml" in files else (),
        findings=findings,
    )


def _modules(
    export: exports.Export, settings: LoaderSettings
) -> tuple[dict[str, modules.Converted], dict[str, str]]:
    """The converted modules by the original `_id`, and the core modules' names by `_id`."""
    core: dict[str, str] = {}
    candidates = []
    for record in export.records["module"]:
        if record.data.get("isCoreModule"):
            export.note(record, "is a core module of the original: skipped", problem=False)
            if record.id:
                core[record.id] = record.name or "?"
        else:
            candidates.append(record)
    names = naming.assign(export, candidates, "module")
    converted: dict[str, modules.Converted] = {}
    for record in candidates:
        name = names.get(id(record))
        done = modules.convert(export, record, name=name, settings=settings) if name else None
        if done is not None:
            # A record without an _id is imported, though no deployment can refer to it.
            converted[record.id or f"no _id: {name}"] = done
    return converted, core


def _checked(
    export: exports.Export,
    files: dict[str, bytes],
    owners: Mapping[str, Record],
    settings: LoaderSettings,
) -> dict[str, bytes]:
    """`files` without what the loader rejects, each rejection reported on its record."""
    files, dropped = repository.settle(files, settings)
    for part, problem in dropped:
        owner = owners.get(part)
        where = f"{problem.file}:{problem.line}" if problem.line else problem.file
        message = f"not imported: the result would not validate ({where}: {problem.message})"
        if owner is not None:
            export.note(owner, message)
        else:
            export.findings.append(Finding(part, part, message))
    return files


def _yaml(document: Mapping[str, Any], record: Record | None) -> bytes:
    origin = (
        f"# Imported by gitops-orchestrator import-init from the original orchestrator's "
        f"{record.kind} {json.dumps(record.name)} (_id {record.id}).\n"
        if record is not None
        else "# Imported by gitops-orchestrator import-init from the original orchestrator.\n"
    )
    # Flow style for the innermost lists and mappings, as the docs write them: `params: [integer]`.
    body = yaml.safe_dump(
        dict(document), sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )
    return (origin + body).encode("utf-8")


def _export_order(finding: Finding) -> tuple[int, str, int]:
    """Devices, modules, then deployments; by file, then by place in the file."""
    kind, _, rest = finding.source.partition("/")
    file, _, index = rest.partition("[")
    rank = exports.KINDS.index(kind) if kind in exports.KINDS else len(exports.KINDS)
    number = index.rstrip("]")
    return rank, file, int(number) if number.isdigit() else 0


def _message(modules: Mapping[str, str], findings: tuple[Finding, ...]) -> str:
    problems = [f for f in findings if f.problem]
    lines = ["Import the original orchestrator's init/ export", ""]
    lines.append(f"{len(modules)} modules imported; {len(problems)} things not carried over:")
    lines.extend(f"- {f.source} {f.record}: {f.message}" for f in problems)
    return "\n".join(lines)


def text(imported: Imported) -> str:
    """The report people read: every finding, then what was written."""
    lines = []
    for finding in imported.findings:
        kind = "" if finding.problem else "note: "
        lines.append(f"{finding.source}: {kind}{finding.record}: {finding.message}")
    problems = len(imported.problems)
    notes = len(imported.findings) - problems
    lines.append(
        f"{imported.into}: {len(imported.modules)} modules, {len(imported.deployments)} "
        f"deployments, {len(imported.devices)} devices imported and committed "
        f"({imported.commit_sha[:12]}); {problems} problem{'s' if problems != 1 else ''}, "
        f"{notes} note{'s' if notes != 1 else ''}"
    )
    return "\n".join(lines)


def as_json(imported: Imported) -> dict[str, Any]:
    return {
        "source": str(imported.source),
        "into": str(imported.into),
        "commit_sha": imported.commit_sha,
        "modules": dict(imported.modules),
        "deployments": dict(imported.deployments),
        "devices": list(imported.devices),
        "problems": [_finding(f) for f in imported.findings if f.problem],
        "notes": [_finding(f) for f in imported.findings if not f.problem],
    }


def _finding(finding: Finding) -> dict[str, str]:
    return {"source": finding.source, "record": finding.record, "message": finding.message}
