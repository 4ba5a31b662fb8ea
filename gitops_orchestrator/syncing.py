"""Follow the branch: load each new head and record it, commit by commit.

A new head is loaded from git objects (`repo`), validated (`manifests`, reusing the work done
for unchanged blobs) and recorded (`store`): accepted, it becomes the desired commit; rejected,
it is kept with its problems while the previous desired commit stays. A source that cannot be
reached is an error to record and retry with backoff, never a reason to forget the desired
state. This module decides nothing about devices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import git

from . import manifests, signatures
from .errors import SourceError
from .models import LoadResult
from .repo import commit_tree
from .settings import LoaderSettings, SyncSettings
from .source import Source
from .store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Synced:
    """What one pass did: the head it saw, and the load result when the head was new."""

    sha: str
    result: LoadResult | None = None


@dataclass
class Syncer:
    source: Source
    store: Store
    interval: float
    """Seconds between two looks at the source when nothing wakes it."""
    settings: SyncSettings = field(default_factory=SyncSettings)
    loader: LoaderSettings = field(default_factory=LoaderSettings)
    clock: Callable[[], float] = time.time
    on_desired: Callable[[], None] = lambda: None
    cache: manifests.LoadCache = field(default_factory=manifests.LoadCache)
    verifier: signatures.Verifier | None = None
    """When set, a head not signed by one of its keys is rejected (`--verify-signatures`)."""
    _last_error: str | None = None

    async def sync_once(self) -> Synced:
        """Look at the branch head once; load and record it when it is new."""
        sha = await self.source.head()
        await asyncio.to_thread(self.store.record_fetch, now=self.clock())
        if sha == self.store.last_seen_sha:
            return Synced(sha)
        result = await asyncio.to_thread(self._load_and_record, sha)
        if result.snapshot is not None:
            logger.info("commit %s accepted: it is the desired state now", sha[:12])
            self.on_desired()
        else:
            logger.warning(
                "commit %s rejected with %d problem(s); keeping the desired state",
                sha[:12],
                len(result.problems),
            )
        return Synced(sha, result)

    def _load_and_record(self, sha: str) -> LoadResult:
        try:
            tree = commit_tree(self.source.repository, sha)
            info = tree.info()
            result = manifests.load(tree, settings=self.loader, cache=self.cache)
            result = signatures.verified(
                result, self.verifier, git_dir=Path(self.source.repository.git_dir), sha=sha
            )
            self.store.record_commit(info, result, read=tree.read, now=self.clock())
        except SourceError:
            raise
        except (git.GitError, ValueError, OSError) as exc:
            # Corrupt or missing objects: a problem of the source, not of the commit's content.
            raise SourceError(f"cannot read commit {sha}: {exc}") from exc
        return result

    async def run(self) -> None:
        """Sync until cancelled: at each wake-up, after each interval, with backoff on errors."""
        failures = 0
        while True:
            try:
                await self.sync_once()
                failures = 0
                self._last_error = None
            except SourceError as exc:
                failures += 1
                self._note_error(str(exc))
            except Exception:
                failures += 1
                logger.exception("sync pass failed")
            await self.source.wait(self._delay(failures))

    def _delay(self, failures: int) -> float:
        if failures == 0:
            return self.interval
        backoff: float = self.settings.retry_initial * 2 ** min(failures - 1, 30)
        return min(backoff, self.settings.retry_max)

    def _note_error(self, message: str) -> None:
        # A source that stays down is logged once at WARNING, then quietly until it changes.
        level = logging.DEBUG if message == self._last_error else logging.WARNING
        logger.log(level, "cannot sync %s: %s", self.source.display, message)
        self._last_error = message
        self.store.record_fetch(now=self.clock(), error=message)
