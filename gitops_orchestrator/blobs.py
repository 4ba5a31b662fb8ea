"""Content-addressed storage for module binaries and data files, beside the database.

A blob is stored once under its sha256 digest, whichever commits use it. Files are written to a
temporary name, fsynced, renamed, and their folder fsynced (`durable_write`), so neither a crash
nor a power cut leaves a partial blob under a real digest; what an interrupted write leaves
behind (`.incoming-*`) is removed when the store opens. The store decides which digests are
still referenced; this module only keeps bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

INCOMING = ".incoming-"


def durable_write(target: Path, data: bytes) -> None:
    """Write `data` to `target` so that after a crash it holds all of it or is absent."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=INCOMING)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename is only durable once the folder that holds the name is on disk too.
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def remove_leftovers(root: Path) -> int:
    """Delete what interrupted writes left under `root` (a kill -9 skips every `finally`)."""
    removed = 0
    for leftover in root.glob(f"*/{INCOMING}*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        remove_leftovers(root)
        # Digests present, read once: `has` is asked for every file of every commit, and only
        # this class adds or deletes blobs.
        self._known = set(self.digests())

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return digest in self._known

    def put(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest`, refusing bytes that do not match it."""
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ValueError(f"blob content has digest {actual}, expected {digest}")
        target = self.path(digest)
        if target.is_file():
            self._known.add(digest)
            return
        target.parent.mkdir(exist_ok=True)
        durable_write(target, data)
        self._known.add(digest)

    def digests(self) -> Iterator[str]:
        for folder in self.root.iterdir():
            if folder.is_dir():
                yield from (p.name for p in folder.iterdir() if not p.name.startswith("."))

    def keep_only(self, referenced: Iterable[str]) -> int:
        """Delete every blob not in `referenced`; return how many were deleted."""
        keep = set(referenced)
        removed = 0
        for digest in list(self.digests()):
            if digest not in keep:
                self.path(digest).unlink(missing_ok=True)
                self._known.discard(digest)
                removed += 1
        return removed
