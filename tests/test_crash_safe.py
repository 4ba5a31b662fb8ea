"""Files in the data dir survive a kill -9 at any moment (the hostile-network issue, item 6).

A real process is killed with SIGKILL while it writes a large blob; opening the store again
finds only whole blobs, and nothing of the interrupted write is left on disk.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitops_orchestrator import blobs
from gitops_orchestrator.blobs import BlobStore

# Writes ever new 64 MiB blobs until it is killed: each write is long enough to be caught.
WRITER = """
import hashlib, os, sys
from pathlib import Path
from gitops_orchestrator.blobs import BlobStore
store = BlobStore(Path(sys.argv[1]))
for n in range(1000):
    data = n.to_bytes(8, "big") * (8 * 1024 * 1024)
    store.put(hashlib.sha256(data).hexdigest(), data)
"""


def incoming(root: Path) -> list[Path]:
    return list(root.glob(f"*/{blobs.INCOMING}*"))


def test_a_kill_during_a_blob_write_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)])
        try:
            deadline = time.monotonic() + 60
            while not incoming(root):
                assert writer.poll() is None, "the writer stopped by itself"
                assert time.monotonic() < deadline, "no write was seen in progress"
                time.sleep(0.001)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        assert incoming(root), "the kill came after the write: nothing was interrupted"
        store = BlobStore(root)
        assert incoming(root) == []
        for digest in store.digests():
            assert hashlib.sha256(store.path(digest).read_bytes()).hexdigest() == digest


def test_a_blob_and_its_folder_are_fsynced_before_it_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut cannot be staged here: the calls that make the write durable are counted."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = BlobStore(tmp_path)
    data = b"\0asm\1\0\0\0"
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data)
    folder = str(store.path(digest).parent)
    assert synced[-1] == folder  # the folder last, after the rename
    assert any(Path(path).name.startswith(blobs.INCOMING) for path in synced[:-1])
