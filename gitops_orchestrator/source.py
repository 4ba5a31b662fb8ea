"""Where commits come from: a branch of a local repository or of a remote one.

A `Source` answers one question, "which commit does the branch point at now?" (`head()`), says
when that answer may have changed (`wait()`, woken by file-system events, webhooks through
`trigger()`, or a poll interval), and gives the git repository to read commits from
(`repository`). It never parses repository content, never checks anything out and never writes
to a repository it does not own: a local repository is only read (its refs, through git, so
packed refs count and the working tree does not); a remote one is fetched into a bare clone
under the data folder, which is the only repository this module writes.

Secrets (tokens, passwords, `user:password@` in URLs) reach git only through its environment,
never its command line, and are removed from every message and from `display`. Failures are
`SourceError`s; blocking git commands run in worker threads, under a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar, Protocol

import git
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from .errors import SourceError
from .gitcommand import LOCAL_GIT_TIMEOUT, Git, base_environment, check_branch, resolve
from .remote import Credentials, RemoteSource
from .wakeup import Wakeup

__all__ = ["Credentials", "LocalSource", "RemoteSource", "Source", "SourceError", "open_source"]

log = logging.getLogger(__name__)


class Source(Protocol):
    """A branch to follow; see the module docstring."""

    display: str
    """What to show or log: the path, or the URL without credentials."""

    @property
    def branch(self) -> str:
        """The branch followed ("" only while a remote has not named its default branch)."""
        ...

    @property
    def repository(self) -> git.Repo:
        """The local repository to read commits from (for a remote: our bare clone), once
        `head()` has answered."""
        ...

    async def head(self) -> str:
        """The 40-hex sha the branch points at now (a remote is fetched first)."""
        ...

    async def wait(self, timeout: float) -> None:
        """Return when the branch may have moved, or after `timeout` seconds (or sooner: at
        most the source's own poll/fetch interval)."""
        ...

    def trigger(self) -> None:
        """Ask for a check now (a webhook); calls made before the next wake count as one."""
        ...

    def close(self) -> None: ...


# --- a local repository ------------------------------------------------------------------------


class _RefWatcher(FileSystemEventHandler):
    """Calls `notify` (from the watchdog thread) when a ref file of the repository changes."""

    EVENTS: ClassVar[list[type[FileSystemEvent]]] = [
        FileCreatedEvent,
        FileModifiedEvent,
        FileClosedEvent,
        FileMovedEvent,
        FileDeletedEvent,
        DirCreatedEvent,
        DirDeletedEvent,
        DirMovedEvent,
    ]
    """Writes only: never opened/read events, which our own `git for-each-ref` would cause."""

    def __init__(self, files: Iterable[Path], trees: Iterable[Path], notify: Callable[[], None]):
        self._files = {os.path.normpath(path) for path in files}
        self._trees = [os.path.normpath(path) + os.sep for path in trees]
        self._notify = notify

    def _relevant(self, path: str | bytes) -> bool:
        text = os.path.normpath(os.fsdecode(path))
        if text.endswith(".lock"):  # git writes `x.lock`, then renames it to `x`: wait for that
            return False
        return text in self._files or any((text + os.sep).startswith(t) for t in self._trees)

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        if any(self._relevant(path) for path in paths):
            self._notify()


class LocalSource:
    """A branch of a repository on this machine (bare or not), watched for changes.

    Only the repository's refs are read, through git (loose and packed refs alike); its working
    tree and index are never looked at. Changes to `HEAD`, `packed-refs` and `refs/` wake
    `wait()` at once (watchdog); `wait()` also returns every `poll_interval` seconds, in case an
    event is missed (network file systems, a repository replaced as a whole).
    """

    def __init__(self, path: Path, branch: str | None, *, poll_interval: float = 10.0) -> None:
        self.display = str(path)
        self.poll_interval = poll_interval
        self._git = Git(base_environment(), LOCAL_GIT_TIMEOUT, str, self.display)
        self._wakeup = Wakeup()
        self._observer: BaseObserver | None = None
        if not path.exists():
            raise SourceError(f"{path} does not exist")
        try:
            self.repository = git.Repo(path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise SourceError(
                f"{path} is not a git repository (give the top of a working tree or a bare "
                "repository)"
            ) from None
        except (git.GitError, OSError, ValueError) as exc:
            raise SourceError(f"cannot open {path}: {exc}") from None
        try:
            self._git_dir = Path(self.repository.git_dir)
            self._common_dir = Path(self.repository.common_dir)
            self.branch = check_branch(self._git, branch or self._current_branch())
            self._watch()
        except BaseException:
            self.close()
            raise

    def _current_branch(self) -> str:
        done = self._git.run(["symbolic-ref", "--quiet", "HEAD"], git_dir=self._git_dir)
        ref = done.stdout.strip()
        if done.returncode != 0 or not ref.startswith("refs/heads/"):
            raise SourceError(
                f"HEAD of {self.display} is detached (names no branch); name the branch to follow"
            )
        return ref.removeprefix("refs/heads/")

    def _watch(self) -> None:
        roots = dict.fromkeys([self._git_dir, self._common_dir])  # differ in a linked worktree
        trees = [
            path for name in ("refs", "reftable") if (path := self._common_dir / name).is_dir()
        ]
        handler = _RefWatcher(
            [self._git_dir / "HEAD", self._common_dir / "packed-refs"], trees, self._wakeup.set
        )
        observer = Observer()
        try:
            for root in roots:
                observer.schedule(handler, str(root), event_filter=_RefWatcher.EVENTS)
            for tree in trees:
                observer.schedule(
                    handler, str(tree), recursive=True, event_filter=_RefWatcher.EVENTS
                )
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit: polling still works
            log.warning(
                "cannot watch %s (%s); polling every %g s", self.display, exc, self.poll_interval
            )
            if observer.is_alive():
                observer.stop()
                observer.join()
            return
        self._observer = observer

    async def head(self) -> str:
        return await asyncio.to_thread(resolve, self._git, self._git_dir, self.branch, self.display)

    async def wait(self, timeout: float) -> None:
        await self._wakeup.wait(min(timeout, self.poll_interval))

    def trigger(self) -> None:
        self._wakeup.set()

    def close(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
        self._git.kill()
        repository = getattr(self, "repository", None)
        if repository is not None:
            repository.close()

    def __repr__(self) -> str:
        return f"LocalSource({self.display!r}, branch={getattr(self, 'branch', None)!r})"


# --- choosing ----------------------------------------------------------------------------------


def is_url(repo: str) -> bool:
    """Whether `repo` names a remote (`scheme://...` or scp-like `user@host:path`)."""
    return "://" in repo or re.match(r"^[^@/:\s]+@[^@/:\s]+:", repo) is not None


def open_source(
    repo: str,
    branch: str | None,
    *,
    data_dir: Path,
    credentials: Credentials | None = None,
    poll_interval: float = 10.0,
    fetch_interval: float = 30.0,
    timeout: float = 60.0,
    wait_for_remote: bool = False,
) -> Source:
    """A remote (cloned to `data_dir / "repo.git"`) if `repo` is a URL, else a local repository.

    Blocking (it runs git, and for a remote without `branch` asks the remote for its default
    branch, up to `timeout`): from async code, call it through `asyncio.to_thread`. With
    `wait_for_remote`, a remote that does not answer yet is asked again by `head()`.
    """
    if is_url(repo):
        return RemoteSource(
            repo,
            branch,
            workdir=data_dir / "repo.git",
            credentials=credentials,
            fetch_interval=fetch_interval,
            timeout=timeout,
            wait_for_remote=wait_for_remote,
        )
    return LocalSource(Path(repo).expanduser(), branch, poll_interval=poll_interval)
