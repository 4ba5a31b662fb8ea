"""Running git commands for the sources: fixed environment, timeout, no secrets in output.

Every git process gets an environment cleaned of variables that would point it at another
repository, never waits for a human (no prompts), runs in its own process group so a timeout
kills it with its helpers, and has its stderr scrubbed of secrets before anyone sees it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError

LOCAL_GIT_TIMEOUT = 30.0
"""Seconds a git command on a local repository may take (reading one ref takes milliseconds)."""

URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
SHA = re.compile(r"^[0-9a-f]{40}$")
PROBLEM_LINE = re.compile(r"^(?:remote:\s*)?(?:fatal|error):\s*(.+)$")
# Variables with which a calling git (a hook, `git -c`) would point ours at another repository.
INHERITED_GIT_ENV = frozenset(
    {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_CONFIG",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_DIR",
        "GIT_GRAFT_FILE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_NAMESPACE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_OBJECT_DIRECTORY",
        "GIT_PREFIX",
        "GIT_REPLACE_REF_BASE",
        "GITSHALLOW_FILE",
        "GIT_WORK_TREE",
    }
)


class Scrubber:
    """Removes secrets from text: URL userinfo and known secret values (and their base64)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = URL_USERINFO.sub("***@", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


def base_environment() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in INHERITED_GIT_ENV
        and not name.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    # Never wait for a human: no terminal prompt, no askpass program, English messages.
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", SSH_ASKPASS="", LC_ALL="C")
    return env


def with_config(env: dict[str, str], config: Sequence[tuple[str, str]]) -> dict[str, str]:
    """`env` plus `git -c` settings passed the way that keeps them out of argv."""
    env = dict(env)
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


class Git:
    """Runs git commands with a fixed environment and timeout; `kill()` stops running ones."""

    def __init__(
        self, env: Mapping[str, str], timeout: float, scrub: Callable[[str], str], where: str
    ) -> None:
        self.env = dict(env)
        self.where = where
        self.timeout = timeout
        self.scrub = scrub
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._killed = False

    def argv(self, args: Sequence[str], git_dir: Path | None) -> list[str]:
        prefix = ["git"] if git_dir is None else ["git", f"--git-dir={git_dir}"]
        return [*prefix, *args]

    def run(self, args: Sequence[str], *, git_dir: Path | None = None) -> GitResult:
        argv = self.argv(args, git_dir)
        with self._lock:
            if self._killed:
                raise SourceError("the source is closed")
            try:  # a new session: on timeout the whole group (ssh, remote helpers) is killed
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=self.env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise SourceError(f"cannot run git: {exc}") from None
            self._running.add(process)
        try:
            try:
                stdout, stderr = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(process)
                process.communicate()
                raise SourceError(
                    self.scrub(f"git {args[0]} on {self.where} timed out after {self.timeout:g} s")
                ) from None
        finally:
            with self._lock:
                self._running.discard(process)
        if self._killed:
            raise SourceError("the source is closed")
        return GitResult(
            process.returncode,
            stdout.decode("utf-8", "replace"),
            self.scrub(stderr.decode("utf-8", "replace")),
        )

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            running = list(self._running)
        for process in running:
            self._kill_group(process)

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def summary(stderr: str, limit: int = 400) -> str:
    """The lines of git's stderr that say what went wrong, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    picked = [match[1] for line in lines if (match := PROBLEM_LINE.match(line))]
    text = "; ".join(dict.fromkeys(picked)) or (lines[-1] if lines else "no message")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_branch(runner: Git, branch: str) -> str:
    if not branch or branch.startswith("-") or branch == "HEAD":
        raise SourceError(f"{branch!r} is not a valid branch name")
    if runner.run(["check-ref-format", f"refs/heads/{branch}"]).returncode != 0:
        raise SourceError(f"{branch!r} is not a valid branch name")
    return branch


def resolve(runner: Git, git_dir: Path, branch: str, where: str) -> str:
    """The sha of local branch `branch` of `git_dir`, checking that the commit is present."""
    ref = f"refs/heads/{branch}"
    done = runner.run(
        ["for-each-ref", "--format=%(refname) %(objectname) %(objecttype)", ref],
        git_dir=git_dir,
    )
    if done.returncode != 0:
        raise SourceError(f"cannot read branch {branch} of {where}: {summary(done.stderr)}")
    for line in done.stdout.splitlines():
        name, _, rest = line.partition(" ")
        sha, _, kind = rest.partition(" ")
        if name != ref:
            continue
        if kind != "commit" or not SHA.match(sha):
            raise SourceError(f"branch {branch} of {where} points at a {kind}, not a commit")
        return sha
    detail = f" ({summary(done.stderr)})" if done.stderr.strip() else ""
    raise SourceError(f"branch {branch} does not exist in {where}{detail}")
