"""Read the files of one commit (from git objects) or of a plain folder.

The loader sees a repository only through `Tree`: a listing of regular files with their sizes
and, for commits, git blob shas (so later stages can reuse work for unchanged blobs). A commit is
read from the object database, never from the working tree, so uncommitted edits cannot leak
into what is deployed. Sizes are known before reading, so an oversized file is never loaded.
This module only reads; it does not parse or validate.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git
from gitdb.exc import BadName, BadObject

from .errors import NotARepository, RepoError, UnknownRef
from .models import CommitInfo


@dataclass(frozen=True)
class Entry:
    """One regular file of a tree; `path` is relative to the tree's root, '/'-separated."""

    path: str
    size: int
    blob_sha: str | None = None
    is_symlink: bool = False


class Tree:
    """The files under one folder of a commit or of the disk."""

    sha: str | None = None
    entries: Mapping[str, Entry]

    def read(self, path: str) -> bytes:
        raise NotImplementedError

    def listdir(self, folder: str) -> Iterator[str]:
        """Paths of the files directly inside `folder` ('' is the root)."""
        prefix = f"{folder}/" if folder else ""
        for path in self.entries:
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                yield path


class GitTree(Tree):
    """A folder of one commit, read from the object database.

    The listing comes from one `git ls-tree -r -l` call, which is far cheaper than walking
    tree objects one by one in a large repository; blobs are read only when asked for.
    """

    def __init__(self, repository: git.Repo, commit: git.Commit, folder: str = "") -> None:
        self.repository = repository
        self.commit = commit
        self.sha = commit.hexsha
        prefix = f"{folder}/" if folder else ""
        listing = repository.git.ls_tree(
            "-r", "-l", "-z", "--full-tree", commit.hexsha, "--", prefix or "."
        )
        entries: dict[str, Entry] = {}
        for record in listing.split("\0"):
            if not record:
                continue
            meta, _, full = record.partition("\t")
            mode, kind, blob_sha, size = meta.split()
            if kind != "blob" or not full.startswith(prefix):
                continue  # submodules (commits) have no content here
            path = full[len(prefix) :]
            is_symlink = mode == "120000"
            entries[path] = Entry(path, int(size), blob_sha, is_symlink)
        self.entries = entries

    def read(self, path: str) -> bytes:
        stream = self.repository.odb.stream(bytes.fromhex(self.entries[path].blob_sha or ""))
        data: bytes = stream.read()
        return data

    def info(self) -> CommitInfo:
        commit = self.commit
        message = commit.message
        return CommitInfo(
            sha=commit.hexsha,
            author=f"{commit.author.name} <{commit.author.email}>",
            time=commit.committed_date,
            message=message if isinstance(message, str) else message.decode("utf-8", "replace"),
        )


class FolderTree(Tree):
    """The files under a folder on disk (for `validate` before committing).

    Symbolic links are listed but never followed: a link could point anywhere on the machine.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        entries: dict[str, Entry] = {}
        for folder, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(name for name in dirnames if name != ".git")
            for name in filenames:
                full = Path(folder, name)
                info = full.lstat()
                path = full.relative_to(root).as_posix()
                if stat.S_ISLNK(info.st_mode):
                    entries[path] = Entry(path, 0, is_symlink=True)
                elif stat.S_ISREG(info.st_mode):
                    entries[path] = Entry(path, info.st_size)
        self.entries = entries

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()


def open_repository(path: Path) -> git.Repo:
    """The git repository that contains `path`."""
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise NotARepository(f"{path} is not inside a git repository") from exc


def commit_tree(repository: git.Repo, ref: str, folder: str = "") -> GitTree:
    """The files under `folder` (relative to the repository root) in commit `ref`."""
    try:
        commit = repository.commit(ref)
    except (BadName, BadObject, ValueError, git.GitCommandError) as exc:
        raise UnknownRef(f"{ref!r} names no commit of {repository.working_dir}") from exc
    except git.NoSuchPathError as exc:  # a repository whose .git was removed under us
        raise RepoError(str(exc)) from exc
    folder = "" if folder in ("", ".") else folder.strip("/")
    if folder:
        try:
            tree = commit.tree / folder
        except KeyError as exc:
            raise UnknownRef(f"{folder} does not exist in commit {commit.hexsha}") from exc
        if not isinstance(tree, git.Tree):
            raise UnknownRef(f"{folder} is not a folder in commit {commit.hexsha}")
    return GitTree(repository, commit, folder)


@contextmanager
def tree_at(path: Path, ref: str) -> Iterator[GitTree]:
    """`path` (a repository or a folder inside one) as of commit `ref`."""
    repository = open_repository(path)
    try:
        top = Path(repository.working_tree_dir or repository.git_dir).resolve()
        folder = path.resolve().relative_to(top).as_posix()
        yield commit_tree(repository, ref, folder)
    finally:
        repository.close()


def merge_base(repository: git.Repo, one: str, other: str) -> tuple[str | None, int]:
    """The best common ancestor of two commits (shas), and how many commits `one` has past it.

    None and 0 when the histories share no commit (or a shallow clone lacks the shared part).
    """
    try:
        found = repository.merge_base(one, other)
        if not found:
            return None, 0
        fork = found[0].hexsha
        if fork == repository.commit(one).hexsha:
            return fork, 0  # the usual case, a branch of base's tip: no commit to count
        since = repository.git.rev_list("--count", f"{fork}..{one}")
    except (git.GitCommandError, ValueError) as exc:
        raise RepoError(f"cannot find the merge base of {one} and {other}: {exc}") from exc
    return fork, int(since)
