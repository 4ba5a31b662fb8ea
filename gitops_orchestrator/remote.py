"""A branch of a remote repository, fetched into a bare clone under the data folder.

Credentials (a token, a user and password, or an SSH key with its known_hosts) reach git only
through its environment, never its command line, and are removed from every message and from
`display`. The clone is the only repository this module writes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import shlex
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import git

from .errors import SourceError
from .gitcommand import (
    Git,
    Scrubber,
    base_environment,
    check_branch,
    resolve,
    summary,
    with_config,
)
from .wakeup import Wakeup

log = logging.getLogger(__name__)

_REMOTE_PROTOCOLS = ("file", "git", "http", "https", "ssh")
_SCP_LIKE = re.compile(r"^(?P<user>[^@/:\s]+@)?(?P<host>[^@/:\s]+):(?P<path>[^:].*)$")


# --- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Credentials:
    """How to authenticate to a remote.

    HTTP(S): a `token` (sent as the password of basic auth, with `username` or else
    "x-access-token", which GitHub, Gitea and GitLab accept), or `username` + `password`.
    SSH: `ssh_key_file` (a private key) with `known_hosts_file` (required with a key: the host is
    never trusted on first use); `known_hosts_file` alone keeps the default keys/agent.
    """

    username: str | None = None
    password: str | None = None
    token: str | None = None
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None

    def __post_init__(self) -> None:
        if self.token is not None and self.password is not None:
            raise SourceError("give a git token or a password, not both")
        if self.password is not None and not self.username:
            raise SourceError("a git password needs a username (GITOPS_GIT_USERNAME)")
        if self.username and self.password is None and self.token is None:
            raise SourceError(
                "a git username needs a password or a token "
                "(GITOPS_GIT_PASSWORD[_FILE] or GITOPS_GIT_TOKEN[_FILE])"
            )
        if self.ssh_key_file is not None and self.known_hosts_file is None:
            raise SourceError(
                "an SSH key needs a known_hosts file (GITOPS_GIT_KNOWN_HOSTS_FILE), so that the "
                "server's host key is checked; get it with `ssh-keyscan <host>` and check it"
            )

    def __repr__(self) -> str:
        def hidden(value: str | None) -> str:
            return "None" if value is None else "'***'"

        return (
            f"Credentials(username={self.username!r}, password={hidden(self.password)}, "
            f"token={hidden(self.token)}, ssh_key_file={self.ssh_key_file!r}, "
            f"known_hosts_file={self.known_hosts_file!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials | None:
        """The credentials given by `GITOPS_GIT_*` variables, or None if there are none.

        `GITOPS_GIT_TOKEN` / `GITOPS_GIT_TOKEN_FILE`, `GITOPS_GIT_USERNAME` with
        `GITOPS_GIT_PASSWORD` / `GITOPS_GIT_PASSWORD_FILE`, `GITOPS_GIT_SSH_KEY_FILE`,
        `GITOPS_GIT_KNOWN_HOSTS_FILE`. A `_FILE` holds the secret (a final newline is dropped).
        """
        token = _secret_from_env(environ, "GITOPS_GIT_TOKEN")
        password = _secret_from_env(environ, "GITOPS_GIT_PASSWORD")
        username = environ.get("GITOPS_GIT_USERNAME") or None
        key = _file_from_env(environ, "GITOPS_GIT_SSH_KEY_FILE")
        known_hosts = _file_from_env(environ, "GITOPS_GIT_KNOWN_HOSTS_FILE")
        if (token, password, username, key, known_hosts) == (None,) * 5:
            return None
        return cls(username, password, token, key, known_hosts)

    def secrets(self) -> list[str]:
        """The values to remove from messages."""
        return [value for value in (self.password, self.token) if value]


def _secret_from_env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name) or None
    path = _file_from_env(environ, f"{name}_FILE")
    if value is not None and path is not None:
        raise SourceError(f"set {name} or {name}_FILE, not both")
    if path is None:
        return value
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{name}_FILE: cannot read {path}: {exc.__class__.__name__}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise SourceError(f"{name}_FILE: {path} is empty")
    return text


def _file_from_env(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise SourceError(f"{name}: {path} is not a file")
    return path


@dataclass(frozen=True)
class _Url:
    for_git: str
    """What git is given: without userinfo, except an SSH user name."""
    display: str
    """Without any userinfo."""
    scheme: str
    username: str | None = None
    password: str | None = None
    raw_userinfo: str | None = None
    origin: str | None = None
    """scheme://host[:port] of an HTTP(S) URL, to which the auth header is restricted."""


def _parse_url(url: str) -> _Url:
    if url.startswith("-") or any(ord(char) < 32 for char in url):
        raise SourceError("the repository URL is malformed")
    if helper := re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)::", url):  # git's <transport>::<address>
        raise SourceError(f"unsupported URL scheme {helper[1]!r} (no git remote helpers)")
    if "://" not in url:
        match = _SCP_LIKE.match(url)
        if match is None:
            raise SourceError(f"{Scrubber([])(url)} is not a repository URL")
        return _Url(url, f"{match['host']}:{match['path']}", "ssh")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise SourceError(f"{Scrubber([])(url)} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme in ("git+ssh", "ssh+git"):
        scheme = "ssh"
    if scheme not in _REMOTE_PROTOCOLS:
        raise SourceError(
            f"unsupported URL scheme {parts.scheme!r} (use one of {', '.join(_REMOTE_PROTOCOLS)})"
        )
    userinfo, at, hostport = parts.netloc.rpartition("@")
    display = parts._replace(netloc=hostport).geturl()
    if not at:
        return _Url(url, display, scheme, origin=f"{scheme}://{hostport}")
    raw_user, colon, raw_password = userinfo.partition(":")
    username = unquote(raw_user) or None
    password = unquote(raw_password) if colon else None
    if scheme == "ssh":
        if password is not None:
            raise SourceError(f"{display}: SSH URLs cannot carry a password; use a key")
        return _Url(url, display, scheme, username=username)
    for_git = parts._replace(netloc=hostport).geturl()
    return _Url(
        for_git, display, scheme, username, password, userinfo, origin=f"{scheme}://{hostport}"
    )


def _remote_environment(
    url: _Url, credentials: Credentials | None
) -> tuple[dict[str, str], list[str]]:
    """The environment git runs in for `url`, and the secrets it holds."""
    env = base_environment()
    env["GIT_ALLOW_PROTOCOL"] = ":".join(_REMOTE_PROTOCOLS)
    secrets: list[str] = []
    if url.raw_userinfo:  # a user name alone may well be a token (https://TOKEN@host/...)
        hidden = url.username if url.password is None else url.password
        secrets += [url.raw_userinfo, hidden or ""]
    config: list[tuple[str, str]] = []
    user: str | None = None
    secret: str | None = None
    if credentials is not None and credentials.token is not None:
        user, secret = credentials.username or "x-access-token", credentials.token
    elif credentials is not None and credentials.password is not None:
        user, secret = credentials.username, credentials.password
    elif url.username is not None and url.scheme in ("http", "https"):
        user, secret = url.username, url.password or ""
    if credentials is not None:
        secrets += credentials.secrets()
    if user is not None and secret is not None and url.scheme in ("http", "https"):
        pair = f"{user}:{secret}"
        encoded = base64.b64encode(pair.encode()).decode()
        secrets += [pair, encoded]
        config.append((f"http.{url.origin}/.extraHeader", f"Authorization: Basic {encoded}"))
    ssh = ["ssh", "-o", "BatchMode=yes"]
    if credentials is not None and credentials.ssh_key_file is not None:
        ssh += ["-i", str(credentials.ssh_key_file), "-o", "IdentitiesOnly=yes"]
    if credentials is not None and credentials.known_hosts_file is not None:
        ssh += [
            "-o",
            f"UserKnownHostsFile={credentials.known_hosts_file}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
    if len(ssh) > 3 or "GIT_SSH_COMMAND" not in env:
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
    return with_config(env, config), secrets


class RemoteSource:
    """A branch of a remote repository, fetched into a bare clone at `workdir`.

    The clone is made on first use and reused after a restart; it records the URL it mirrors
    (`gitops.url`) and the branch (its HEAD), so that with the remote unreachable the last
    fetched commit can still be read. `head()` fetches the branch (a force-push is just a new
    head); `wait()` returns on `trigger()` or every `fetch_interval` seconds.

    With `wait_for_remote`, a remote that cannot be asked for its default branch at first start
    (no branch given, no clone yet) is not an error here: the branch is asked again by each
    `head()` until the remote answers, and the clone is made then. `branch` is "" until then.
    """

    def __init__(
        self,
        url: str,
        branch: str | None,
        *,
        workdir: Path,
        credentials: Credentials | None,
        fetch_interval: float = 30.0,
        timeout: float = 60.0,
        wait_for_remote: bool = False,
    ) -> None:
        self._url = _parse_url(url)
        env, secrets = _remote_environment(self._url, credentials)
        self._scrub = Scrubber(secrets)
        self._has_credentials = credentials is not None or self._url.raw_userinfo is not None
        self.display = self._url.display
        self.workdir = workdir
        self.fetch_interval = fetch_interval
        self._git = Git(env, timeout, self._scrub, self.display)
        self._fetch_lock = threading.Lock()
        self._wakeup = Wakeup()
        self._branch: str | None = None
        self._repository: git.Repo | None = None
        try:
            state, recorded = self._inspect_clone()
        except OSError as exc:
            raise self._error(f"cannot use {workdir}: {exc}") from None
        self._pending_state = state
        if branch is None:
            try:
                branch = self._remote_default_branch()
            except SourceError as exc:
                if recorded is None and not wait_for_remote:
                    raise
                if recorded is None:
                    log.warning("%s; asking again with each fetch", exc)
                    return
                log.warning("%s; following %s, the branch the clone records", exc, recorded)
                branch = recorded
        self._settle(branch, state)

    def _settle(self, branch: str, state: str) -> None:
        """Follow `branch`: check its name, make or adopt the clone, open it."""
        workdir = self.workdir
        checked = check_branch(self._git, branch)
        self._branch = checked
        try:
            self._prepare_clone(state)
        except OSError as exc:
            raise self._error(f"cannot create a clone at {workdir}: {exc}") from None
        try:
            self._repository = git.Repo(workdir)
        except (git.GitError, OSError, ValueError) as exc:
            raise SourceError(f"cannot open the clone at {workdir}: {exc}") from None

    @property
    def branch(self) -> str:
        """The branch followed; "" while the remote has not yet named its default branch."""
        return self._branch or ""

    @property
    def repository(self) -> git.Repo:
        if self._repository is None:
            raise self._error(f"{self.display} has not been reached yet")
        return self._repository

    def _error(self, message: str) -> SourceError:
        return SourceError(self._scrub(message))

    def _failure(self, action: str, stderr: str) -> SourceError:
        if "terminal prompts disabled" in stderr or "Authentication failed" in stderr:
            given = "were refused" if self._has_credentials else "are needed and none were given"
            return self._error(
                f"cannot {action} {self.display}: authentication failed (credentials {given})"
            )
        if "Permission denied" in stderr and "publickey" in stderr:
            return self._error(
                f"cannot {action} {self.display}: authentication failed ({summary(stderr)})"
            )
        return self._error(f"cannot {action} {self.display}: {summary(stderr)}")

    def _inspect_clone(self) -> tuple[str, str | None]:
        """("missing" | "ours" | "stale", the branch the clone records if it is ours)."""
        workdir = self.workdir
        if not workdir.exists() or (workdir.is_dir() and not any(workdir.iterdir())):
            return "missing", None
        if self._git.run(["rev-parse", "--git-dir"], git_dir=workdir).returncode != 0:
            raise self._error(f"{workdir} exists and is not a git repository; remove it")
        done = self._git.run(["config", "--local", "--get", "gitops.url"], git_dir=workdir)
        if done.returncode != 0:
            raise self._error(f"{workdir} exists and is not a clone made by this orchestrator")
        if done.stdout.strip() != self.display:
            return "stale", None  # a clone of another repository: replaced
        head = self._git.run(["symbolic-ref", "--quiet", "HEAD"], git_dir=workdir).stdout.strip()
        return "ours", head.removeprefix("refs/heads/") if head.startswith("refs/heads/") else None

    def _remote_default_branch(self) -> str:
        done = self._git.run(
            ["ls-remote", "--symref", "--end-of-options", self._url.for_git, "HEAD"]
        )
        if done.returncode != 0:
            raise self._failure("reach", done.stderr)
        for line in done.stdout.splitlines():
            target, _, name = line.partition("\t")
            if name == "HEAD" and target.startswith("ref: refs/heads/"):
                return target.removeprefix("ref: refs/heads/")
        raise self._error(f"{self.display} names no default branch; name the branch to follow")

    def _prepare_clone(self, state: str) -> None:
        workdir = self.workdir
        if state == "ours":
            if self._git.run(
                ["symbolic-ref", "HEAD", f"refs/heads/{self.branch}"], git_dir=workdir
            ).returncode:
                raise self._error(f"cannot record the branch in {workdir}")
            return
        if state == "stale":
            log.warning("%s is a clone of another repository; replacing it", workdir)
            shutil.rmtree(workdir)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        # Clones a kill -9 interrupted (no `finally` ran) are never used: remove them.
        for leftover in workdir.parent.glob(f".{workdir.name}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        # Built aside and renamed, so a crash never leaves a half-made clone at `workdir`.
        staging = Path(tempfile.mkdtemp(prefix=f".{workdir.name}.", dir=workdir.parent))
        try:
            for args in (
                ["init", "--quiet", "--bare", f"--initial-branch={self.branch}", str(staging)],
                ["config", "gitops.url", self.display],
            ):
                done = self._git.run(args, git_dir=None if args[0] == "init" else staging)
                if done.returncode != 0:
                    raise self._error(f"cannot create a clone at {workdir}: {summary(done.stderr)}")
            if workdir.exists():
                workdir.rmdir()  # empty (checked by _inspect_clone)
            staging.rename(workdir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _fetch(self) -> str:
        with self._fetch_lock:
            if self._repository is None:  # started with the remote unreachable
                self._settle(self._remote_default_branch(), self._pending_state)
                log.info("%s answered: following its branch %s", self.display, self.branch)
            ref = f"refs/heads/{self.branch}"
            done = self._git.run(
                [
                    "fetch",
                    "--quiet",
                    "--prune",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--end-of-options",
                    self._url.for_git,
                    f"+{ref}:{ref}",
                ],
                git_dir=self.workdir,
            )
            if done.returncode != 0:
                if "couldn't find remote ref" in done.stderr:
                    raise self._error(f"branch {self.branch} does not exist in {self.display}")
                raise self._failure("fetch", done.stderr)
            return resolve(self._git, self.workdir, self.branch, self.display)

    async def head(self) -> str:
        return await asyncio.to_thread(self._fetch)

    async def wait(self, timeout: float) -> None:
        await self._wakeup.wait(min(timeout, self.fetch_interval))

    def trigger(self) -> None:
        self._wakeup.set()

    def close(self) -> None:
        self._git.kill()
        repository = getattr(self, "_repository", None)
        if repository is not None:
            repository.close()

    def __repr__(self) -> str:
        return f"RemoteSource({self.display!r}, branch={getattr(self, '_branch', None)!r})"
