"""Module facts: what a module is in one commit, and what differs between two versions of it.

Pure: `review.py` (the shell) reads the facts of both commits, from a snapshot or leniently from
an invalid commit; `module_changes` compares them field by field (binary digest and size, wasm
file, exports, imports, data files, declared functions), one line per fact for people. The
breaking changes (`breaking`) and the report build on these records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import wording


class Change(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


@dataclass(frozen=True)
class ModuleFacts:
    """What a module is in one commit: enough to compare two versions of it."""

    name: str
    wasm: str
    digest: str | None
    """The binary's sha256; None when it could not be read (its problem is listed)."""
    size: int | None
    exports: Mapping[str, int] = field(default_factory=dict)
    """Exported functions of the binary: name -> parameter count."""
    imports: tuple[str, ...] = ()
    """Every import of the binary, as `module.name`."""
    requirements: tuple[str, ...] = ()
    """The host functions a device must offer to run it (`supervisorInterfaces`)."""
    functions: Mapping[str, str] = field(default_factory=dict)
    """Functions declared in module.yaml -> their signature (`review.signature`)."""
    data: Mapping[str, str] = field(default_factory=dict)
    """Data file name -> sha256."""


@dataclass(frozen=True)
class CommitFacts:
    """The modules of one commit and which module functions its deployments call."""

    modules: Mapping[str, ModuleFacts] = field(default_factory=dict)
    calls: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """Deployment -> (module, function) of each step, in order."""


@dataclass(frozen=True)
class ModuleChange:
    name: str
    change: Change
    base: ModuleFacts | None
    head: ModuleFacts | None
    details: tuple[str, ...]
    """What differs, one fact per line, for people."""


def module_changes(base: CommitFacts, head: CommitFacts) -> list[ModuleChange]:
    """Modules added, changed and removed, by name."""
    changes = []
    for name in sorted(set(base.modules) | set(head.modules)):
        old, new = base.modules.get(name), head.modules.get(name)
        if old is None:
            changes.append(ModuleChange(name, Change.ADDED, None, new, ()))
        elif new is None:
            changes.append(ModuleChange(name, Change.REMOVED, old, None, ()))
        elif old != new:
            changes.append(ModuleChange(name, Change.CHANGED, old, new, _module_details(old, new)))
    return changes


def _module_details(old: ModuleFacts, new: ModuleFacts) -> tuple[str, ...]:
    details = []
    if old.digest != new.digest:
        size = ""
        if old.size is not None and new.size is not None:
            size = f" ({old.size} → {new.size} bytes, {new.size - old.size:+d})"
        was, now = wording.short(old.digest), wording.short(new.digest)
        details.append(f"binary sha256:{was} → sha256:{now}{size}")
    if old.wasm != new.wasm:
        details.append(f"wasm file {old.wasm} → {new.wasm}")
    added, removed, kept = split_keys(old.exports, new.exports)
    if added:
        details.append("exports added: " + ", ".join(f"{n}({new.exports[n]})" for n in added))
    if removed:
        details.append("exports removed: " + ", ".join(f"{n}({old.exports[n]})" for n in removed))
    for name in kept:
        if old.exports[name] != new.exports[name]:
            had = wording.count(old.exports[name], "parameter")
            details.append(f"export {name}: {had} → {new.exports[name]}")
    added, removed, _ = split_keys(dict.fromkeys(old.imports), dict.fromkeys(new.imports))
    if added:
        details.append("imports added: " + ", ".join(added))
    if removed:
        details.append("imports removed: " + ", ".join(removed))
    added, removed, kept = split_keys(old.data, new.data)
    changed = [name for name in kept if old.data[name] != new.data[name]]
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            details.append(f"data files {label}: " + ", ".join(names))
    added, removed, kept = split_keys(old.functions, new.functions)
    for name in added:
        details.append(f"function {name} declared: {new.functions[name]}")
    for name in removed:
        details.append(f"function {name} no longer declared")
    for name in kept:
        if old.functions[name] != new.functions[name]:
            details.append(f"function {name}: {old.functions[name]} → {new.functions[name]}")
    return tuple(details)


def split_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], ...]:
    """Keys only in `new`, only in `old`, and in both; each sorted."""
    return (
        sorted(new.keys() - old.keys()),
        sorted(old.keys() - new.keys()),
        sorted(old.keys() & new.keys()),
    )


def binary(facts: ModuleFacts) -> str:
    """`modules/fibo/fibo.wasm sha256:0123456789ab`."""
    return f"{facts.wasm} sha256:{wording.short(facts.digest)}"
