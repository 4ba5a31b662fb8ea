"""The sync loop with real parts: git repositories, watchdog, a file:// remote and SQLite.

Each test runs `Syncer.run()` as a task and waits (with a generous bound, never a fixed sleep)
for the store to reach the state the test expects.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from conftest import copy_sample, git, git_init_commit, write_files

from gitops_orchestrator import source, syncing
from gitops_orchestrator.settings import SyncSettings
from gitops_orchestrator.store import Store

BOUND = 10.0  # seconds a condition may take before the test fails; a pass takes milliseconds
FAST_RETRY = SyncSettings(retry_initial=0.05, retry_max=0.2)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(
    followed: source.Source, store: Store, interval: float = 30.0
) -> AsyncIterator[syncing.Syncer]:
    syncer = syncing.Syncer(followed, store, interval=interval, settings=FAST_RETRY)
    task = asyncio.create_task(syncer.run())
    try:
        yield syncer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        followed.close()


def desired(store: Store) -> str | None:
    state = store.sync_state()
    return state.desired.sha if state.desired else None


def last_seen(store: Store) -> str | None:
    return store.last_seen_sha


def test_local_commits_are_followed_bad_ones_rejected(tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    first = git_init_commit(path)
    store = Store.open(None)

    async def scenario() -> None:
        # A long poll interval: only the watchdog events can make this test pass in time.
        local = source.LocalSource(path, None, poll_interval=60.0)
        async with running(local, store, interval=60.0):
            await until(lambda: desired(store) == first, "the first commit")
            write_files(path, {"deployments/double.yaml": "name: double\nsequence: 7\n"})
            bad = git_init_commit(path, "break double")
            await until(lambda: last_seen(store) == bad, "the bad commit")
            assert desired(store) == first
            rejected = store.sync_state().last_rejected
            assert rejected is not None
            assert rejected.sha == bad
            assert [(p.file, p.line) for p in rejected.problems] == [("deployments/double.yaml", 2)]

            git(path, "checkout", "--quiet", "--", ".")
            git(path, "revert", "--no-edit", "HEAD")
            good = git(path, "rev-parse", "HEAD")
            await until(lambda: desired(store) == good, "the repairing commit")
            # A force-push back to an older commit is just a new head.
            git(path, "reset", "--quiet", "--hard", first)
            await until(lambda: desired(store) == first, "the reset")

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_a_deleted_branch_or_corrupt_object_keeps_the_desired_state(tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    first = git_init_commit(path)
    store = Store.open(None)

    async def scenario() -> None:
        local = source.LocalSource(path, "main", poll_interval=0.1)
        async with running(local, store, interval=0.1):
            await until(lambda: desired(store) == first, "the first commit")
            # A commit whose module.yaml blob is missing from the object store.
            write_files(
                path,
                {
                    "modules/fibo/module.yaml": "# changed\n"
                    + (path / "modules/fibo/module.yaml").read_text()
                },
            )
            second = git_init_commit(path, "touch fibo")
            blob = git(path, "rev-parse", f"{second}:modules/fibo/module.yaml")
            (path / ".git/objects" / blob[:2] / blob[2:]).unlink()
            await until(lambda: store.sync_state().error is not None, "the read error")
            state = store.sync_state()
            assert state.desired is not None
            assert state.desired.sha == first
            assert state.error is not None
            assert second in state.error
            # Deleting the branch is an error too, with the desired state kept.
            git(path, "checkout", "--quiet", "--detach")
            git(path, "branch", "-D", "main")
            await until(
                lambda: "does not exist" in (store.sync_state().error or ""), "the branch error"
            )
            assert desired(store) == first
            # Bringing the branch back recovers on its own.
            git(path, "checkout", "--quiet", "-b", "main", first)
            await until(lambda: store.sync_state().error is None, "recovery")
            assert desired(store) == first

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_a_remote_that_disappears_and_returns(tmp_path: Path) -> None:
    origin = copy_sample(tmp_path / "origin")
    first = git_init_commit(origin)
    store = Store.open(tmp_path / "data")
    url = origin.as_uri()

    async def scenario() -> None:
        remote = source.RemoteSource(
            url, None, workdir=tmp_path / "data/repo.git", credentials=None
        )
        async with running(remote, store, interval=0.1):
            await until(lambda: desired(store) == first, "the first fetch")
            moved = tmp_path / "moved-away"
            origin.rename(moved)
            await until(lambda: store.sync_state().error is not None, "the fetch error")
            assert desired(store) == first
            moved.rename(origin)
            write_files(origin, {"devices.yaml": "admission: listed\n"})
            second = git_init_commit(origin, "listed only")
            await until(lambda: desired(store) == second, "recovery with the new commit")
            assert store.sync_state().error is None

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_restart_starts_from_the_data_dir_while_the_remote_is_down(tmp_path: Path) -> None:
    origin = copy_sample(tmp_path / "origin")
    first = git_init_commit(origin)
    data = tmp_path / "data"

    async def first_run() -> None:
        remote = source.RemoteSource(
            origin.as_uri(), None, workdir=data / "repo.git", credentials=None
        )
        store = Store.open(data)
        try:
            async with running(remote, store, interval=0.1):
                await until(lambda: desired(store) == first, "the first fetch")
        finally:
            store.close()

    asyncio.run(first_run())
    shutil.rmtree(origin)

    async def second_run() -> None:
        remote = source.RemoteSource(
            origin.as_uri(), None, workdir=data / "repo.git", credentials=None
        )
        assert remote.branch == "main"  # known from the clone, the remote being gone
        store = Store.open(data)
        try:
            snapshot = store.desired_snapshot()
            assert snapshot is not None
            assert snapshot.commit_sha == first
            async with running(remote, store, interval=0.1):
                await until(lambda: store.sync_state().error is not None, "the fetch error")
                assert desired(store) == first
                assert store.desired_snapshot() is not None
        finally:
            store.close()

    asyncio.run(second_run())


def test_trigger_wakes_a_remote_fetch_at_once(tmp_path: Path) -> None:
    origin = copy_sample(tmp_path / "origin")
    first = git_init_commit(origin)
    store = Store.open(None)

    async def scenario() -> None:
        remote = source.RemoteSource(
            origin.as_uri(),
            None,
            workdir=tmp_path / "clone.git",
            credentials=None,
            fetch_interval=60.0,
        )
        async with running(remote, store, interval=60.0):
            await until(lambda: desired(store) == first, "the first fetch")
            write_files(origin, {"devices.yaml": "admission: listed\n"})
            second = git_init_commit(origin, "listed")
            for _ in range(50):  # a storm of webhooks: one fetch is enough
                remote.trigger()
            await until(lambda: desired(store) == second, "the triggered fetch")

    try:
        asyncio.run(scenario())
    finally:
        store.close()
