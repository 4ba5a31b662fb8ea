"""The orchestrator's exceptions, drawn once here.

    OrchestratorError
    ├── RepoError              a repository, path or ref cannot be read at all
    │   ├── NotARepository
    │   └── UnknownRef
    └── (later: TemporaryError, PermanentError and the supervisor errors)

Bad repository *content* is not an exception: the loader returns it as `Problem`s, so a
broken commit is recorded and shown while the last good one keeps running.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error this package raises on purpose."""


class RepoError(OrchestratorError):
    """A repository, path or ref that cannot be read at all."""


class NotARepository(RepoError):
    """The path is not inside a git repository."""


class UnknownRef(RepoError):
    """The ref names no commit of the repository."""
