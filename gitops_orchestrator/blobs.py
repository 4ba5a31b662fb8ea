"""Content-addressed storage for module binaries and data files, beside the database.

A blob is stored once under its sha256 digest, whichever commits use it; files are written to a
temporary name and renamed, so a crash never leaves a partial blob under a real digest. The
store decides which digests are still referenced; this module only keeps bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
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
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, target)
            self._known.add(digest)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

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
