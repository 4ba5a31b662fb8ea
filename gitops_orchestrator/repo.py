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


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    time: int
    message: str


class GitTree(Tree):
    """A folder of one commit, read from the object database."""

    def __init__(self, commit: git.Commit, folder: git.Tree) -> None:
        self.commit = commit
        self.sha = commit.hexsha
        self._blobs: dict[str, git.Blob] = {}
        entries: dict[str, Entry] = {}
        root = str(folder.path)
        for item in folder.traverse():
            if not isinstance(item, git.Blob):
                continue  # trees and submodules
            full = str(item.path)
            path = full[len(root) + 1 :] if root else full
            is_symlink = item.mode == git.Blob.link_mode
            entries[path] = Entry(path, item.size, item.hexsha, is_symlink)
            self._blobs[path] = item
        self.entries = entries

    def read(self, path: str) -> bytes:
        data: bytes = self._blobs[path].data_stream.read()
        return data

    def info(self) -> CommitInfo:
        commit = self.commit
        return CommitInfo(
            sha=commit.hexsha,
            author=f"{commit.author.name} <{commit.author.email}>",
            time=commit.committed_date,
            message=commit.message if isinstance(commit.message, str) else commit.message.decode(),
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
    tree = commit.tree
    if folder not in ("", "."):
        try:
            tree = tree / folder
        except KeyError as exc:
            raise UnknownRef(f"{folder} does not exist in commit {commit.hexsha}") from exc
        if not isinstance(tree, git.Tree):
            raise UnknownRef(f"{folder} is not a folder in commit {commit.hexsha}")
    return GitTree(commit, tree)


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
