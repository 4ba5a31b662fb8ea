"""Reading the original orchestrator's `init/` export: its JSON records and its files.

The export (docs/migration.md) is `device/`, `module/` and `deployment/` folders of `*.json`
files, each holding one record or an array of them, and `files/` with the binaries and data
files under their original file names. Records stay plain JSON objects that remember where they
came from; nothing here interprets them further, and nothing here writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError

KINDS = ("device", "module", "deployment")
FILES = "files"
# A file name the export may refer to: a plain name inside files/, never a path.
PLAIN_FILE = re.compile(r"^[^/\\\0]+$")


@dataclass(frozen=True)
class Finding:
    """Something of the export that was not carried over as it was, and why.

    A problem (`problem=True`) is something a user may have to act on; a note is an expected
    skip, such as the orchestrator's own device entry.
    """

    source: str
    """Where the record is: `module/modules.json[2]`, relative to the export."""
    record: str
    """The record as people know it: `module 'fibo' (_id 6862...)`."""
    message: str
    problem: bool = True


@dataclass(frozen=True)
class Record:
    """One exported document (a MongoDB document serialised as JSON)."""

    kind: str
    source: str
    data: Mapping[str, Any]

    @property
    def id(self) -> str | None:
        return object_id(self.data.get("_id"))

    @property
    def name(self) -> str | None:
        name = self.data.get("name")
        return name if isinstance(name, str) and name else None

    @property
    def label(self) -> str:
        name = repr(self.name) if self.name else "without a name"
        return f"{self.kind} {name} (_id {self.id or 'missing'})"


@dataclass
class Export:
    """The records of one export, by kind, and the findings met while reading them."""

    root: Path
    records: dict[str, list[Record]]
    findings: list[Finding] = field(default_factory=list)

    def note(self, record: Record, message: str, *, problem: bool = True) -> None:
        self.findings.append(Finding(record.source, record.label, message, problem))

    def ids(self, kind: str) -> set[str]:
        return {record.id for record in self.records[kind] if record.id}

    def file(self, reference: Any) -> tuple[Path | None, str]:
        """The file under files/ that `{originalFilename, fileName}` names, or why there is none.

        The original copies `files/<originalFilename>` back at start-up; its own store keeps
        the same bytes under `fileName`, so a copy of that folder is accepted too.
        """
        if not isinstance(reference, Mapping):
            return None, "has no file record ({originalFilename, fileName, path})"
        names = [reference.get("originalFilename"), reference.get("fileName")]
        wanted = [name for name in names if isinstance(name, str) and name]
        if not wanted:
            return None, "names no file (no originalFilename)"
        for name in wanted:
            if not PLAIN_FILE.match(name) or name in (".", ".."):
                return None, f"names the file {name!r}, which is not a plain file name"
            path = self.root / FILES / name
            if path.is_symlink():
                return None, f"{FILES}/{name} is a symbolic link (never followed)"
            if path.is_file():
                return path, f"{FILES}/{name}"
        return None, f"{FILES}/{wanted[0]} is missing from the export"


def object_id(value: Any) -> str | None:
    """A MongoDB id as exported: a 24-hex string, or extended JSON `{"$oid": ...}`."""
    if isinstance(value, Mapping):
        value = value.get("$oid")
    return value if isinstance(value, str) and value else None


def read(root: Path) -> Export:
    """Every record of the export at `root` (the `init/` folder, or the folder holding it)."""
    if not root.is_dir():
        raise ExportError(f"{root} is not a folder")
    if not any((root / kind).is_dir() for kind in KINDS) and (root / "init").is_dir():
        root = root / "init"
    if not any((root / kind).is_dir() for kind in KINDS):
        raise ExportError(
            f"{root} holds no export: expected device/, module/ and deployment/ folders of "
            "JSON files (see docs/migration.md)"
        )
    export = Export(root=root, records={kind: [] for kind in KINDS})
    for kind in KINDS:
        seen: dict[str, Record] = {}
        folder = root / kind
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            for record in _records(export, kind, path):
                earlier = seen.get(record.id) if record.id else None
                if earlier is not None:
                    same = "the same record" if earlier.data == record.data else "another record"
                    export.note(
                        record, f"has the _id of {earlier.source} ({same}): ignored",
                        problem=earlier.data != record.data,
                    )  # fmt: skip
                    continue
                if record.id:
                    seen[record.id] = record
                export.records[kind].append(record)
    return export


def _records(export: Export, kind: str, path: Path) -> list[Record]:
    source = f"{kind}/{path.name}"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        message = f"cannot be read as JSON: {exc}"
        export.findings.append(Finding(source, f"{kind} file", message))
        return []
    items = document if isinstance(document, list) else [document]
    records = []
    for index, item in enumerate(items):
        where = f"{source}[{index}]" if isinstance(document, list) else source
        if isinstance(item, dict):
            records.append(Record(kind, where, item))
        else:
            message = f"is a JSON {type(item).__name__}, not a record: ignored"
            export.findings.append(Finding(where, f"{kind} entry", message))
    return records
