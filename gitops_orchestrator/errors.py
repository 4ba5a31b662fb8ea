"""The orchestrator's exceptions, drawn once here.

    OrchestratorError
    ├── RepoError              a repository, path or ref cannot be read at all
    │   ├── NotARepository
    │   └── UnknownRef
    ├── SourceError            the followed repository cannot be reached or read now
    └── StoreError             the database cannot be opened or is from a newer release

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


class SourceError(OrchestratorError):
    """The followed repository cannot be reached or read now; the desired state stays.

    Messages never contain credentials: they are shown in the API and the logs.
    """


class StoreError(OrchestratorError):
    """The database cannot be opened, or was written by a newer release."""
