"""Names for imported modules and deployments: safe, unique, and every change reported.

The original let two modules (or deployments) share a name and allowed any text in one; ours
are ids on the wire and parts of URLs, so each record gets a name of the repository format.
A name that must change is reported with the new one; nothing is renamed silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..models import NAME_PATTERN
from .export import Export, Record

NAME = re.compile(NAME_PATTERN)
MAX_NAME = 63
# Records sharing a name each get the end of their _id: enough to tell them apart, short
# enough to read, and the same on every run.
ID_SUFFIX = 6


def safe_name(raw: str) -> str:
    """`raw` as a module or deployment name: lower case, other characters turned into '-'."""
    name = re.sub(r"[^a-z0-9_-]+", "-", raw.strip().lower())
    name = re.sub(r"-{2,}", "-", name).lstrip("-_")
    return name[:MAX_NAME].rstrip("-_")


def assign(export: Export, records: Iterable[Record], what: str) -> dict[int, str]:
    """A repository name for each record (by `id()` of the record) that can have one."""
    wanted: dict[int, str] = {}
    by_name: dict[str, list[Record]] = {}
    for record in records:
        if record.name is None:
            export.note(record, f"has no name: the {what} is not imported")
            continue
        name = safe_name(record.name)
        if not name:
            export.note(record, f"name {record.name!r} has no letter or digit to keep")
            continue
        wanted[id(record)] = name
        by_name.setdefault(name, []).append(record)
    names: dict[int, str] = {}
    for name, group in by_name.items():
        for record in group:
            final = name
            if len(group) > 1:
                suffix = (record.id or str(group.index(record)))[-ID_SUFFIX:].lower()
                final = f"{name[: MAX_NAME - ID_SUFFIX - 1]}-{suffix}"
                others = ", ".join(r.source for r in group if r is not record)
                export.note(
                    record,
                    f"shares the name {record.name!r} with {others}: written as {final!r}",
                )
            elif name != record.name:
                export.note(
                    record,
                    f"name {record.name!r} is written as {final!r} ({what} names are lower-case "
                    "letters, digits, '-' and '_')",
                )
            names[id(record)] = final
    return names


def is_valid(name: str) -> bool:
    return bool(NAME.match(name)) and len(name) <= MAX_NAME
