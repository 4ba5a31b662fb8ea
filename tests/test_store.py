"""The SQLite store: commits, snapshots, blobs, retention, restart and migrations."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import copy_sample, git, git_init_commit, wat, write_files

from gitops_orchestrator import manifests, repo
from gitops_orchestrator.errors import StoreError
from gitops_orchestrator.settings import StoreSettings
from gitops_orchestrator.store import DATABASE_FILE, MIGRATIONS, Store


def record_head(store: Store, path: Path, *, now: float) -> repo.GitTree:
    """Load HEAD of the repository at `path` and record it, as the sync loop does."""
    with repo.tree_at(path, "HEAD") as tree:
        result = manifests.load(tree)
        store.record_commit(tree.info(), result, read=tree.read, now=now)
        return tree


def fibo_variant(number: int) -> bytes:
    """A fibo module whose binary differs per `number` (so its digest does too)."""
    return wat(f'(module (func (export "fibo") (param i32) (result i32) (i32.const {number})))')


@pytest.fixture
def store() -> Store:
    opened = Store.open(None)
    yield opened  # type: ignore[misc]
    opened.close()


def test_new_store_is_at_the_latest_schema(store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS)
    state = store.sync_state()
    assert (state.desired, state.last_seen, state.last_rejected) == (None, None, None)
    assert store.desired_snapshot() is None


def test_accepted_commit_becomes_desired_with_its_blobs(store: Store, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    sha = git_init_commit(path, "first fleet")
    record_head(store, path, now=100.0)

    state = store.sync_state()
    assert state.desired is not None
    assert state.desired.sha == sha
    assert state.desired.message.strip() == "first fleet"
    assert state.desired.author == "Test User <test@example.com>"
    assert state.last_seen == state.desired
    snapshot = store.desired_snapshot()
    assert snapshot is not None
    assert snapshot.commit_sha == sha
    assert sorted(snapshot.modules) == ["banner", "double", "fibo"]
    assert sorted(snapshot.deployments) == ["banner", "double", "fibo-chain"]
    assert snapshot.devices.devices["sup3"].cordoned is True
    fibo_bytes = (path / "modules/fibo/fibo.wasm").read_bytes()
    assert snapshot.modules["fibo"].binary.digest == hashlib.sha256(fibo_bytes).hexdigest()
    assert snapshot.modules["fibo"].inspection.functions == {"fibo": 1}
    assert snapshot.modules["banner"].requirements == (
        "fd_close",
        "fd_read",
        "fd_write",
        "path_open",
    )
    for module in snapshot.modules.values():
        assert (
            store.blobs.path(module.binary.digest).read_bytes()
            == (path / module.binary.path).read_bytes()
        )
    greeting = snapshot.modules["banner"].data["greeting.txt"]
    assert store.blobs.path(greeting.digest).read_bytes() == b"Hello from the Wasm-IoT fleet!\n"


def test_rejected_commit_keeps_the_desired_state(store: Store, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    good = git_init_commit(path)
    record_head(store, path, now=100.0)
    write_files(path, {"deployments/broken.yaml": "name: broken\nsequence: []\n"})
    bad = git_init_commit(path, "break it")
    record_head(store, path, now=101.0)

    state = store.sync_state()
    assert state.desired is not None
    assert state.desired.sha == good
    assert state.last_seen is not None
    assert state.last_seen.sha == bad
    assert state.last_seen.status == "rejected"
    assert state.last_rejected is not None
    assert state.last_rejected.sha == bad
    [problem] = state.last_rejected.problems
    assert (problem.file, problem.line) == ("deployments/broken.yaml", 2)
    assert "sequence" in problem.message
    snapshot = store.desired_snapshot()
    assert snapshot is not None
    assert "broken" not in snapshot.deployments


def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    sha = git_init_commit(path)
    data_dir = tmp_path / "data"
    first = Store.open(data_dir)
    record_head(first, path, now=100.0)
    first.close()
    assert (data_dir / DATABASE_FILE).is_file()

    second = Store.open(data_dir)
    try:
        snapshot = second.desired_snapshot()
        assert snapshot is not None
        assert snapshot.commit_sha == sha
        assert second.blobs.has(snapshot.modules["fibo"].binary.digest)
        assert [c.sha for c in second.commits()] == [sha]
    finally:
        second.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    with sqlite3.connect(tmp_path / DATABASE_FILE) as connection:
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(tmp_path)


def test_old_snapshots_and_their_blobs_are_collected(tmp_path: Path) -> None:
    store = Store.open(None, StoreSettings(keep_snapshots=2, keep_commits=1000))
    path = copy_sample(tmp_path / "repo")
    digests = []
    try:
        for number in range(4):
            write_files(path, {"modules/fibo/fibo.wasm": fibo_variant(number)})
            git_init_commit(path, f"fibo {number}")
            record_head(store, path, now=100.0 + number)
            snapshot = store.desired_snapshot()
            assert snapshot is not None
            digests.append(snapshot.modules["fibo"].binary.digest)
        assert len(set(digests)) == 4
        assert [store.blobs.has(d) for d in digests] == [False, False, True, True]
        kept = [c.sha for c in store.commits() if store.snapshot(c.sha) is not None]
        assert len(kept) == 2
        # Blobs every snapshot shares stay.
        assert store.blobs.has(snapshot.modules["double"].binary.digest)
    finally:
        store.close()


def test_commit_history_is_bounded(tmp_path: Path) -> None:
    store = Store.open(None, StoreSettings(keep_snapshots=1, keep_commits=3))
    path = copy_sample(tmp_path / "repo")
    try:
        good = git_init_commit(path)
        record_head(store, path, now=1.0)
        for number in range(6):
            write_files(path, {"devices.yaml": f"admission: shut{number}\n"})
            git_init_commit(path, f"bad {number}")
            record_head(store, path, now=2.0 + number)
        shas = [c.sha for c in store.commits(limit=100)]
        assert len(shas) == 4  # the 3 newest, and the desired commit that must stay
        assert shas[-1] == good
        assert shas[0] == git(path, "rev-parse", "HEAD")
    finally:
        store.close()


def test_a_commit_seen_again_is_renewed_not_duplicated(store: Store, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    first = git_init_commit(path)
    record_head(store, path, now=1.0)
    write_files(path, {"modules/fibo/fibo.wasm": fibo_variant(7)})
    git_init_commit(path, "second")
    record_head(store, path, now=2.0)
    git(path, "reset", "--hard", first)  # a force-push back
    record_head(store, path, now=3.0)

    state = store.sync_state()
    assert state.desired is not None
    assert state.desired.sha == first
    assert len(store.commits()) == 2
    assert store.commits()[0].sha == first


def test_readers_never_see_half_a_commit(store: Store, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    record_head(store, path, now=0.0)
    seen: list[tuple[str | None, int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            snapshot = store.desired_snapshot()
            if snapshot is not None:
                seen.append((snapshot.commit_sha, len(snapshot.modules)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for number in range(5):
            extra = {
                f"modules/m{number}-{i}/module.yaml": (
                    f"name: m{number}-{i}\nwasm: m.wasm\n"
                    "functions:\n  fibo: {params: [integer], output: integer}\n"
                )
                for i in range(number + 1)
            }
            extra |= {f"modules/m{number}-{i}/m.wasm": fibo_variant(i) for i in range(number + 1)}
            write_files(path, extra)
            git_init_commit(path, f"grow {number}")
            record_head(store, path, now=1.0 + number)
    finally:
        stop.set()
        reader.join()
    expected = {}
    for commit in store.commits(limit=100):
        snapshot = store.snapshot(commit.sha)
        assert snapshot is not None
        expected[commit.sha] = len(snapshot.modules)
    assert seen
    assert all(count == expected[sha] for sha, count in seen if sha is not None)


def test_fetch_errors_are_recorded_and_cleared(store: Store) -> None:
    store.record_fetch(now=5.0, error="could not resolve host")
    state = store.sync_state()
    assert (state.error, state.error_at) == ("could not resolve host", 5.0)
    store.record_fetch(now=6.0)
    state = store.sync_state()
    assert (state.error, state.fetched_at) == (None, 6.0)


def test_a_placement_keeps_when_and_why_it_got_its_device(store: Store) -> None:
    from gitops_orchestrator.fleetdb import PassRecord, StepRecord

    def record(now: float, device: str | None, reason: str) -> StepRecord:
        store.record_pass(
            PassRecord(
                now=now, commit_sha=None, steps=(StepRecord("d", 0, device, "x", reason, now),)
            )
        )
        [step] = store.step_placements()
        return step

    first = record(10.0, "sup1", "least loaded of 3 devices (sup1: 0 steps)")
    assert (first.placed_at, first.placed_reason) == (10.0, first.reason)
    kept = record(20.0, "sup1", "sticky on sup1")
    assert (kept.reason, kept.placed_at, kept.placed_reason) == (
        "sticky on sup1",
        10.0,
        "least loaded of 3 devices (sup1: 0 steps)",
    )
    moved = record(30.0, "sup2", "moved from sup1 (4 steps) to sup2 (0 steps) to balance")
    assert (moved.placed_at, moved.placed_reason) == (30.0, moved.reason)
    waiting = record(40.0, None, "sup2 is offline; waiting")
    assert (waiting.placed_at, waiting.placed_reason) == (None, None)
