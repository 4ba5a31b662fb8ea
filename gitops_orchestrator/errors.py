"""The orchestrator's exceptions, drawn once here.

    OrchestratorError
    ├── RepoError              a repository, path or ref cannot be read at all
    │   ├── NotARepository
    │   └── UnknownRef
    ├── SourceError            the followed repository cannot be reached or read now
    ├── StoreError             the database cannot be opened or is from a newer release
    ├── RunFailed              a deployment could not be run through /execute
    ├── ExportError            an original orchestrator's export or the target folder is unusable
    └── SupervisorError        a device call did not succeed
        ├── SupervisorUnreachable   no answer (connection refused, timeout): retry later
        └── SupervisorRejected      an answer that is not success (error status, bad body)

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


class SupervisorError(OrchestratorError):
    """A call to a device did not succeed."""


class SupervisorUnreachable(SupervisorError):
    """The device did not answer (connection refused, reset or timed out)."""


class SupervisorRejected(SupervisorError):
    """The device answered, but not with success."""


class ExportError(OrchestratorError):
    """`import-init` cannot start: no export at the path, or the target folder is not empty."""


class RunFailed(OrchestratorError):
    """A deployment could not be run (`POST /execute`); `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, result_url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.result_url = result_url
