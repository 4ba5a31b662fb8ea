"""The imported repository: checked by the loader before it is written, then committed.

The files are validated in memory by `manifests.load`, the same rules `validate` and `serve`
apply, so the importer never has rules of its own that could drift. A module or deployment
the loader still finds a problem in is left out (and reported), and the rest is checked again,
so what is written always validates. The folder becomes a git repository with one commit,
ready to push.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path

import git

from .. import manifests
from ..errors import ExportError
from ..models import Problem
from ..repo import Entry, Tree
from ..settings import LoaderSettings

# Leaving out a module can break the deployments that use it, and only those: two rounds
# settle it; the bound only stops a loop if the loader ever disagreed with itself.
ROUNDS = 8
IDENTITY = {"name": "gitops-orchestrator import-init", "email": "import-init@localhost"}
"""Who commits when git has no identity configured (a fresh container, a CI runner)."""


class MemoryTree(Tree):
    """Files not yet written, as the loader reads a folder."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = files
        self.entries = {path: Entry(path, len(data)) for path, data in files.items()}

    def read(self, path: str) -> bytes:
        return self.files[path]


def settle(
    files: dict[str, bytes], settings: LoaderSettings
) -> tuple[dict[str, bytes], list[tuple[str, Problem]]]:
    """`files` without the parts the loader rejects, and each rejection by the part it hit."""
    dropped: list[tuple[str, Problem]] = []
    for _ in range(ROUNDS):
        result = manifests.load(MemoryTree(files), settings=settings)
        if result.snapshot is not None or not files:
            return files, dropped
        parts = set()
        for problem in result.problems:
            part = owner(problem.file)
            parts.add(part)
            dropped.append((part, problem))
        files = {path: data for path, data in files.items() if owner(path) not in parts}
    return files, dropped


def owner(path: str) -> str:
    """The part a file belongs to: `modules/<name>`, `deployments/<name>.yaml` or the file."""
    parts = path.split("/")
    if parts[0] == "modules" and len(parts) > 1:
        return posixpath.join(*parts[:2])
    return path


def check_target(into: Path) -> None:
    """REPO must be new or empty (an empty clone is fine): the import never overwrites."""
    if into.exists() and not into.is_dir():
        raise ExportError(f"{into} is a file, not a folder")
    if into.is_dir() and any(child.name != ".git" for child in into.iterdir()):
        raise ExportError(
            f"{into} is not empty: import-init writes a new repository (give a new folder, or "
            "an empty clone of the remote you will push to)"
        )


def write(into: Path, files: Mapping[str, bytes], message: str) -> str:
    """Write `files` under `into`, make it a git repository if needed, commit; the sha."""
    try:
        into.mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            target = into / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except OSError as exc:
        raise ExportError(f"cannot write {into}: {exc}") from exc
    try:
        is_repository = (into / ".git").exists()
        repository = git.Repo(into) if is_repository else git.Repo.init(into, initial_branch="main")
        with repository:
            options = []
            with repository.config_reader() as config:
                for key, value in IDENTITY.items():
                    if not config.has_option("user", key):
                        options += ["-c", f"user.{key}={value}"]
            repository.git.add("--all")
            repository.git.execute(
                ["git", *options, "commit", "--quiet", "--allow-empty", "-m", message]
            )
            return repository.head.commit.hexsha
    except (git.GitCommandError, git.InvalidGitRepositoryError) as exc:
        raise ExportError(f"the files are written to {into}, but git failed: {exc}") from exc
