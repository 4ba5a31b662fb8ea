"""Sources: real repositories in tmp_path, real watchdog, real git (also over HTTP); no mocks.

Async code runs inside sync tests through `asyncio.run`. Latency assertions are functional
("woken by the event, not by the timeout"), with wide margins.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from gitserver import GitServer, serve_git

from gitops_orchestrator.errors import OrchestratorError
from gitops_orchestrator.remote import _parse_url, _remote_environment
from gitops_orchestrator.source import (
    Credentials,
    LocalSource,
    RemoteSource,
    Source,
    SourceError,
    is_url,
    open_source,
)

T = TypeVar("T")
WAKE = 2.0  # seconds: a wake by an event comes far sooner; a missed one waits the full timeout


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def git(path: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=t@example.com", *args],
        cwd=path,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip()


def commit(path: Path, message: str = "change") -> str:
    (path / "file.txt").write_text(message)
    git(path, "add", "file.txt")
    git(path, "commit", "--quiet", "-m", message)
    return git(path, "rev-parse", "HEAD")


def make_repo(path: Path, branch: str = "main", commits: int = 1) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "--quiet", f"--initial-branch={branch}")
    for number in range(commits):
        commit(path, f"commit {number}")
    return path


async def timed_wait(source: Source, timeout: float) -> float:
    start = time.monotonic()
    await source.wait(timeout)
    return time.monotonic() - start


async def settle(source: Source) -> None:
    """Let stray events of earlier steps arrive, then forget them."""
    await asyncio.sleep(0.2)
    await source.wait(0)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", commits=2)


@pytest.fixture
def local(repo: Path) -> Iterator[LocalSource]:
    source = LocalSource(repo, None)
    yield source
    source.close()


# --- local -------------------------------------------------------------------------------------


def test_local_head_is_the_branch_tip(local: LocalSource, repo: Path) -> None:
    assert local.branch == "main"
    assert local.display == str(repo)
    assert run(local.head()) == git(repo, "rev-parse", "main")
    assert local.repository.commit("refs/heads/main").hexsha == git(repo, "rev-parse", "main")


def test_default_branch_is_the_one_head_names(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", branch="trunk")
    git(repo, "branch", "other")
    source = LocalSource(repo, None)
    try:
        assert source.branch == "trunk"
        assert run(source.head()) == git(repo, "rev-parse", "trunk")
    finally:
        source.close()


def test_detached_head_needs_a_branch(repo: Path) -> None:
    git(repo, "checkout", "--quiet", "--detach", "HEAD~1")
    with pytest.raises(SourceError, match="detached"):
        LocalSource(repo, None)
    source = LocalSource(repo, "main")
    try:
        assert run(source.head()) == git(repo, "rev-parse", "main")
    finally:
        source.close()


def test_a_commit_wakes_wait_and_head_sees_it(local: LocalSource, repo: Path) -> None:
    async def scenario() -> None:
        await settle(local)
        # Commit while waiting: when the event wakes us, the new ref must already be readable.
        committing = asyncio.create_task(asyncio.to_thread(commit, repo, "while waiting"))
        elapsed = await timed_wait(local, 5)
        seen = await local.head()
        new = await committing
        assert elapsed < WAKE
        assert seen == new

    run(scenario())


@pytest.mark.parametrize(
    "move",
    [
        pytest.param(lambda repo: commit(repo), id="commit"),
        pytest.param(lambda repo: git(repo, "reset", "--quiet", "--hard", "HEAD~1"), id="reset"),
        pytest.param(
            lambda repo: git(repo, "update-ref", "refs/heads/main", "main~1"), id="update-ref"
        ),
        pytest.param(
            lambda repo: git(repo, "merge", "--quiet", "--no-ff", "--no-edit", "side"), id="merge"
        ),
    ],
)
def test_ref_moves_wake_wait(local: LocalSource, repo: Path, move: Callable[[Path], str]) -> None:
    git(repo, "switch", "--quiet", "-c", "side", "main~1")
    (repo / "side.txt").write_text("side")
    git(repo, "add", "side.txt")
    git(repo, "commit", "--quiet", "-m", "side")
    git(repo, "switch", "--quiet", "main")

    async def scenario() -> None:
        await settle(local)
        move(repo)
        assert await timed_wait(local, 5) < WAKE
        assert await local.head() == git(repo, "rev-parse", "main")

    run(scenario())


def test_packed_refs_then_commit(local: LocalSource, repo: Path) -> None:
    async def scenario() -> None:
        await settle(local)
        git(repo, "pack-refs", "--all")
        assert not (repo / ".git/refs/heads/main").exists()
        assert await timed_wait(local, 5) < WAKE
        assert await local.head() == git(repo, "rev-parse", "main")  # read from packed-refs
        await settle(local)
        new = commit(repo)
        assert await timed_wait(local, 5) < WAKE
        assert await local.head() == new

    run(scenario())


def test_force_push_into_a_bare_repository(tmp_path: Path) -> None:
    work = make_repo(tmp_path / "work")
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(work), str(bare))
    source = LocalSource(bare, None)
    try:

        async def scenario() -> None:
            assert await source.head() == git(work, "rev-parse", "main")
            git(work, "checkout", "--quiet", "--orphan", "unrelated")
            rewritten = commit(work, "unrelated history")
            await settle(source)
            git(work, "push", "--quiet", "--force", str(bare), "unrelated:main")
            assert await timed_wait(source, 5) < WAKE
            assert await source.head() == rewritten

        run(scenario())
    finally:
        source.close()


def test_working_tree_and_index_do_not_count(local: LocalSource, repo: Path) -> None:
    async def scenario() -> None:
        before = await local.head()
        await settle(local)
        (repo / "file.txt").write_text("edited, not committed")
        (repo / "new.txt").write_text("new")
        git(repo, "add", "new.txt")
        assert await timed_wait(local, 0.3) >= 0.25  # no wake: only refs are watched
        assert await local.head() == before

    run(scenario())


def test_deleted_branch(local: LocalSource, repo: Path) -> None:
    git(repo, "switch", "--quiet", "-c", "other")
    git(repo, "branch", "--quiet", "-D", "main")
    with pytest.raises(SourceError, match=f"branch main does not exist in {repo}"):
        run(local.head())


def test_branch_pointing_at_a_missing_object(local: LocalSource, repo: Path) -> None:
    (repo / ".git/refs/heads/main").write_text("1" * 40 + "\n")
    with pytest.raises(SourceError, match="missing object"):
        run(local.head())


@pytest.mark.parametrize("remove", [".git/objects", ".git", ""])
def test_corrupt_or_deleted_repository(local: LocalSource, repo: Path, remove: str) -> None:
    shutil.rmtree(repo / remove)
    with pytest.raises(SourceError):
        run(local.head())
    with pytest.raises(SourceError):  # still, never another exception type
        run(local.head())


def test_open_source_local(repo: Path, tmp_path: Path) -> None:
    source = open_source(str(repo), "main", data_dir=tmp_path / "data")
    try:
        assert isinstance(source, LocalSource)
    finally:
        source.close()
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "nowhere"), None, data_dir=tmp_path / "data")
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError, match="not a git repository"):
        open_source(str(tmp_path / "plain"), None, data_dir=tmp_path / "data")
    with pytest.raises(SourceError, match="not a git repository"):
        open_source(str(repo / ".git" / "refs"), None, data_dir=tmp_path / "data")
    with pytest.raises(SourceError, match="not a valid branch name"):
        open_source(str(repo), "bad..name", data_dir=tmp_path / "data")
    assert issubclass(SourceError, OrchestratorError)


# --- waking ------------------------------------------------------------------------------------


def test_triggers_coalesce(local: LocalSource) -> None:
    async def scenario() -> None:
        await settle(local)
        for _ in range(100):
            local.trigger()
        assert await timed_wait(local, 5) < WAKE
        assert await timed_wait(local, 0.2) >= 0.19  # the 99 others did not queue up

    run(scenario())


def test_trigger_from_another_thread(local: LocalSource) -> None:
    async def scenario() -> None:
        await settle(local)
        thread = threading.Timer(0.1, local.trigger)
        thread.start()
        try:
            assert await timed_wait(local, 5) < WAKE
        finally:
            thread.join()

    run(scenario())


def test_wait_is_capped_by_the_poll_interval(repo: Path) -> None:
    source = LocalSource(repo, None, poll_interval=0.1)
    try:
        assert run(timed_wait(source, 60)) < WAKE
    finally:
        source.close()


# --- remote over file:// -----------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, Path]:
    """(a working repository, its bare "origin" that RemoteSources fetch from)."""
    work = make_repo(tmp_path / "work")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    return work, bare


def test_remote_clone_fetch_and_force_push(origin: tuple[Path, Path], tmp_path: Path) -> None:
    work, bare = origin
    source = open_source(bare.as_uri(), None, data_dir=tmp_path / "data")
    assert isinstance(source, RemoteSource)
    try:
        assert source.branch == "main"
        assert source.display == bare.as_uri()

        async def scenario() -> None:
            assert await source.head() == git(work, "rev-parse", "main")
            new = commit(work, "pushed")
            git(work, "push", "--quiet", "origin", "main")
            source.trigger()
            assert await timed_wait(source, 5) < WAKE
            assert await source.head() == new
            git(work, "checkout", "--quiet", "--orphan", "unrelated")
            rewritten = commit(work, "unrelated history")
            git(work, "push", "--quiet", "--force", "origin", "unrelated:main")
            assert await source.head() == rewritten

        run(scenario())
        assert (tmp_path / "data/repo.git/HEAD").exists()
        assert source.repository.bare
    finally:
        source.close()


def test_remote_default_branch(tmp_path: Path) -> None:
    work = make_repo(tmp_path / "work", branch="trunk")
    git(work, "branch", "aaa")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(work), str(bare))
    source = RemoteSource(bare.as_uri(), None, workdir=tmp_path / "clone", credentials=None)
    try:
        assert source.branch == "trunk"
        assert run(source.head()) == git(work, "rev-parse", "trunk")
    finally:
        source.close()


def test_remote_moved_away_and_back(origin: tuple[Path, Path], tmp_path: Path) -> None:
    _work, bare = origin
    token = "tok-3a9f1c2e"
    credentials = Credentials(token=token)
    source = RemoteSource(
        bare.as_uri(), "main", workdir=tmp_path / "clone", credentials=credentials
    )
    try:
        first = run(source.head())
        bare.rename(tmp_path / "elsewhere.git")
        with pytest.raises(SourceError) as caught:
            run(source.head())
        message = str(caught.value)
        assert "does not appear to be a git repository" in message
        assert token not in message
        assert source.repository.commit("refs/heads/main").hexsha == first  # kept
        (tmp_path / "elsewhere.git").rename(bare)
        assert run(source.head()) == first
    finally:
        source.close()


def test_remote_branch_deleted(origin: tuple[Path, Path], tmp_path: Path) -> None:
    _work, bare = origin
    source = RemoteSource(bare.as_uri(), "main", workdir=tmp_path / "clone", credentials=None)
    try:
        run(source.head())
        git(bare, "symbolic-ref", "HEAD", "refs/heads/other")
        git(bare, "branch", "-m", "main", "other")
        with pytest.raises(SourceError, match=f"branch main does not exist in {bare.as_uri()}"):
            run(source.head())
    finally:
        source.close()


def test_restart_with_the_remote_gone(origin: tuple[Path, Path], tmp_path: Path) -> None:
    work, bare = origin
    git(bare, "symbolic-ref", "HEAD", "refs/heads/trunk")
    git(bare, "branch", "-m", "main", "trunk")
    workdir = tmp_path / "clone"
    source = RemoteSource(bare.as_uri(), None, workdir=workdir, credentials=None)
    try:
        last = run(source.head())
    finally:
        source.close()
    shutil.rmtree(bare)
    with pytest.raises(SourceError):  # no clone to fall back on
        RemoteSource(bare.as_uri(), None, workdir=tmp_path / "fresh", credentials=None)
    again = RemoteSource(bare.as_uri(), None, workdir=workdir, credentials=None)
    try:
        assert again.branch == "trunk"  # recorded by the clone
        assert (
            again.repository.commit("refs/heads/trunk").hexsha
            == last
            == git(work, "rev-parse", "HEAD")
        )
        with pytest.raises(SourceError, match="cannot fetch"):
            run(again.head())
    finally:
        again.close()


def test_workdir_of_another_repository_is_replaced(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    work, bare = origin
    other = make_repo(tmp_path / "other")
    workdir = tmp_path / "clone"
    source = RemoteSource(other.as_uri(), None, workdir=workdir, credentials=None)
    source.close()
    source = RemoteSource(bare.as_uri(), None, workdir=workdir, credentials=None)
    try:
        assert run(source.head()) == git(work, "rev-parse", "main")
    finally:
        source.close()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("not ours")
    with pytest.raises(SourceError, match="not a git repository"):
        RemoteSource(bare.as_uri(), None, workdir=tmp_path / "junk", credentials=None)
    with pytest.raises(SourceError, match="not a clone made by"):
        RemoteSource(bare.as_uri(), None, workdir=other / ".git", credentials=None)


def test_a_trigger_storm_during_a_fetch_is_one_more_fetch(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    _work, bare = origin
    source = RemoteSource(bare.as_uri(), "main", workdir=tmp_path / "clone", credentials=None)
    try:

        async def scenario() -> None:
            fetching = asyncio.create_task(source.head())
            for _ in range(100):
                source.trigger()
                await asyncio.sleep(0)
            await fetching
            assert await timed_wait(source, 5) < WAKE  # one more fetch is due
            await source.head()
            assert await timed_wait(source, 0.2) >= 0.19  # and only one

        run(scenario())
    finally:
        source.close()


# --- remote over HTTP with credentials ---------------------------------------------------------

USER, PASSWORD = "alice", "pa55-w0rd-7c1e"


@pytest.fixture
def server(origin: tuple[Path, Path]) -> Iterator[GitServer]:
    _work, bare = origin
    with serve_git(bare.parent, username=USER, password=PASSWORD) as running:
        yield running


def secrets_of(password: str, user: str = USER) -> list[str]:
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def test_http_basic_auth(server: GitServer, origin: tuple[Path, Path], tmp_path: Path) -> None:
    work, _bare = origin
    credentials = Credentials(username=USER, password=PASSWORD)
    source = RemoteSource(
        server.url("origin.git"), None, workdir=tmp_path / "clone", credentials=credentials
    )
    try:
        assert source.branch == "main"
        assert run(source.head()) == git(work, "rev-parse", "main")
    finally:
        source.close()
    assert all(request.status == 200 for request in server.requests)


def test_http_wrong_password(server: GitServer, tmp_path: Path) -> None:
    wrong = "wr0ng-pa55-91b2"
    credentials = Credentials(username=USER, password=wrong)
    with pytest.raises(SourceError) as caught:
        RemoteSource(
            server.url("origin.git"), None, workdir=tmp_path / "a", credentials=credentials
        )
    source = RemoteSource(
        server.url("origin.git"), "main", workdir=tmp_path / "b", credentials=credentials
    )
    try:
        with pytest.raises(SourceError) as caught_fetch:
            run(source.head())
    finally:
        source.close()
    for error in (caught.value, caught_fetch.value):
        message = str(error)
        assert "authentication failed" in message
        assert server.url("origin.git") in message
        for secret in secrets_of(wrong):
            assert secret not in message
    assert {request.status for request in server.requests} == {401}


def test_http_without_credentials(server: GitServer, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"authentication failed.*none were given"):
        RemoteSource(server.url("origin.git"), None, workdir=tmp_path / "a", credentials=None)


def test_http_token(origin: tuple[Path, Path], tmp_path: Path) -> None:
    work, bare = origin
    token = "ghp_t0ken5ecret"
    with serve_git(bare.parent, username="x-access-token", password=token) as server:
        source = RemoteSource(
            server.url("origin.git"),
            None,
            workdir=tmp_path / "clone",
            credentials=Credentials(token=token),
        )
        try:
            assert run(source.head()) == git(work, "rev-parse", "main")
            assert "***" in repr(Credentials(token=token))
        finally:
            source.close()
        with pytest.raises(SourceError) as caught:  # the token user name is ours to choose
            RemoteSource(
                server.url("origin.git"),
                None,
                workdir=tmp_path / "other",
                credentials=Credentials(username="bob", token=token),
            )
        assert token not in str(caught.value)


def test_http_userinfo_in_the_url(
    server: GitServer, origin: tuple[Path, Path], tmp_path: Path
) -> None:
    work, _bare = origin
    url = server.url("origin.git", userinfo=f"{USER}:{PASSWORD}")
    source = RemoteSource(url, None, workdir=tmp_path / "clone", credentials=None)
    try:
        assert source.display == server.url("origin.git")
        assert run(source.head()) == git(work, "rev-parse", "main")
        assert PASSWORD not in (tmp_path / "clone/config").read_text()
        assert PASSWORD not in repr(source)
    finally:
        source.close()
    bad = server.url("origin.git", userinfo=f"{USER}:secret")
    with pytest.raises(SourceError) as caught:
        RemoteSource(bad, None, workdir=tmp_path / "bad", credentials=None)
    missing = server.url("missing.git", userinfo=f"{USER}:{PASSWORD}")
    source = RemoteSource(missing, "main", workdir=tmp_path / "missing", credentials=None)
    try:
        assert "secret" not in source.display
        with pytest.raises(SourceError) as caught_missing:
            run(source.head())
    finally:
        source.close()
    assert "not found" in str(caught_missing.value)
    for message in (str(caught.value), str(caught_missing.value)):
        for secret in [*secrets_of("secret"), *secrets_of(PASSWORD), "secret"]:
            assert secret not in message


def test_unreachable_host_is_reported(tmp_path: Path) -> None:
    with serve_git(tmp_path) as server:
        url = server.url("x.git")
    # The server is gone: nothing listens on that port any more.
    source = RemoteSource(url, "main", workdir=tmp_path / "clone", credentials=None, timeout=10)
    try:
        with pytest.raises(
            SourceError, match=r"cannot fetch .*(Failed to connect|Couldn't connect)"
        ):
            run(source.head())
    finally:
        source.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """The URL of a server that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/repo.git"


def test_a_hanging_remote_times_out(silent_server: str, tmp_path: Path) -> None:
    source = RemoteSource(
        silent_server, "main", workdir=tmp_path / "clone", credentials=None, timeout=0.5
    )
    try:
        start = time.monotonic()
        with pytest.raises(
            SourceError, match=r"git fetch on http://127\.0\.0\.1:\d+/repo\.git timed out"
        ):
            run(source.head())
        assert time.monotonic() - start < WAKE  # git and its remote helper were both killed
    finally:
        source.close()


def test_close_stops_a_running_fetch(silent_server: str, tmp_path: Path) -> None:
    source = RemoteSource(silent_server, "main", workdir=tmp_path / "clone", credentials=None)

    async def scenario() -> None:
        fetching = asyncio.create_task(source.head())
        await asyncio.sleep(0.3)
        start = time.monotonic()
        source.close()
        with pytest.raises(SourceError, match="closed"):
            await fetching
        assert time.monotonic() - start < WAKE

    run(scenario())


# --- URLs, environment and credentials ---------------------------------------------------------


def test_secrets_never_reach_argv() -> None:
    url = _parse_url("https://user:hunter2@git.example.com:8443/org/repo.git")
    assert url.for_git == "https://git.example.com:8443/org/repo.git"
    assert url.display == "https://git.example.com:8443/org/repo.git"
    env, secrets = _remote_environment(url, Credentials(token="tok-123456"))
    header = base64.b64encode(b"x-access-token:tok-123456").decode()
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example.com:8443/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {header}"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert {"tok-123456", header, "hunter2"} <= set(secrets)


def test_ssh_command() -> None:
    url = _parse_url("git@github.com:org/repo.git")
    assert (url.scheme, url.for_git, url.display) == (
        "ssh",
        "git@github.com:org/repo.git",
        "github.com:org/repo.git",
    )
    keys = Credentials(ssh_key_file=Path("/keys/id ed25519"), known_hosts_file=Path("/keys/kh"))
    env, _secrets = _remote_environment(url, keys)
    assert env["GIT_SSH_COMMAND"] == (
        "ssh -o BatchMode=yes -i '/keys/id ed25519' -o IdentitiesOnly=yes "
        "-o UserKnownHostsFile=/keys/kh -o StrictHostKeyChecking=yes"
    )
    assert env["GIT_CONFIG_COUNT"] == "0"
    assert _parse_url("ssh://git@host:2222/repo.git").display == "ssh://host:2222/repo.git"
    with pytest.raises(SourceError, match="cannot carry a password") as caught:
        _parse_url("ssh://git:pw123@host/repo.git")
    assert "pw123" not in str(caught.value)
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        _parse_url("ext::sh -c touch% /tmp/pwned")
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        _parse_url("ftp://host/repo.git")


def test_is_url() -> None:
    assert is_url("https://example.com/repo.git")
    assert is_url("file:///srv/repo.git")
    assert is_url("git@github.com:org/repo.git")
    assert not is_url("/srv/repo")
    assert not is_url("relative/path")
    assert not is_url("./a@b:c")


def test_credentials_from_env(tmp_path: Path) -> None:
    assert Credentials.from_env({}) is None
    assert Credentials.from_env({"GITOPS_GIT_TOKEN": ""}) is None
    assert Credentials.from_env({"GITOPS_GIT_TOKEN": "t1"}) == Credentials(token="t1")
    token_file = tmp_path / "token"
    token_file.write_text("t2\n")
    assert Credentials.from_env({"GITOPS_GIT_TOKEN_FILE": str(token_file)}) == Credentials(
        token="t2"
    )
    password_file = tmp_path / "password"
    password_file.write_text("pw with spaces \n")
    loaded = Credentials.from_env(
        {"GITOPS_GIT_USERNAME": "bob", "GITOPS_GIT_PASSWORD_FILE": str(password_file)}
    )
    assert loaded == Credentials(username="bob", password="pw with spaces ")
    assert "pw with spaces" not in repr(loaded)
    assert "bob" in repr(loaded)
    key, known_hosts = tmp_path / "id", tmp_path / "known_hosts"
    key.write_text("key")
    known_hosts.write_text("host ssh-ed25519 AAAA")
    assert Credentials.from_env(
        {"GITOPS_GIT_SSH_KEY_FILE": str(key), "GITOPS_GIT_KNOWN_HOSTS_FILE": str(known_hosts)}
    ) == Credentials(ssh_key_file=key, known_hosts_file=known_hosts)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GITOPS_GIT_SSH_KEY_FILE": "{key}"}, "known_hosts"),
        ({"GITOPS_GIT_TOKEN": "t", "GITOPS_GIT_TOKEN_FILE": "{key}"}, "not both"),
        ({"GITOPS_GIT_TOKEN_FILE": "{missing}"}, "is not a file"),
        ({"GITOPS_GIT_PASSWORD": "p"}, "needs a username"),
        ({"GITOPS_GIT_USERNAME": "u"}, "needs a password or a token"),
        (
            {"GITOPS_GIT_TOKEN": "t", "GITOPS_GIT_PASSWORD": "p", "GITOPS_GIT_USERNAME": "u"},
            "not both",
        ),
    ],
)
def test_credentials_from_env_errors(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    filled = {
        name: value.format(key=key, missing=tmp_path / "missing") for name, value in environ.items()
    }
    with pytest.raises(SourceError, match=message):
        Credentials.from_env(filled)
