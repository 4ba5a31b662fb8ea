"""Signed commits (`--verify-signatures`): real SSH- and GPG-signed commits made in the test.

Keys are made with `ssh-keygen` and `gpg` in folders of the test; commits are signed by git
itself. Only the keys of the signers file count: a GPG key that the signing user's own keyring
trusts is refused when the file does not hold it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CLI, Orchestrator, copy_sample, git

from gitops_orchestrator.errors import RepoError
from gitops_orchestrator.signatures import Verifier


@dataclass
class Keys:
    ssh_trusted: Path
    ssh_stranger: Path
    signers: Path
    """An allowed-signers file holding only `ssh_trusted`."""
    gnupghome: Path
    """The signing user's own keyring: it holds (and trusts) both GPG keys."""
    gpg_trusted: str
    gpg_stranger: str
    keyring: Path
    """An OpenPGP keyring holding only `gpg_trusted`."""


def _gpg_key(home: Path, uid: str) -> str:
    subprocess.run(
        ["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid, "ed25519",
         "sign", "never"],
        env={**os.environ, "GNUPGHOME": str(home)}, check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", uid],
        env={**os.environ, "GNUPGHOME": str(home)}, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    # gpg's agent socket must fit in a short path: not under pytest's long tmp folders.
    root = Path(tempfile.mkdtemp(prefix="gsig-"))
    home = root / "g"
    home.mkdir(mode=0o700)
    try:
        for name in ("trusted", "stranger"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", root / name],
                check=True,
            )
        signers = root / "allowed_signers"
        signers.write_text(f"ops@example.com {(root / 'trusted.pub').read_text()}")
        trusted = _gpg_key(home, "Trusted <trusted@example.com>")
        stranger = _gpg_key(home, "Stranger <stranger@example.com>")
        keyring = root / "keyring.asc"
        keyring.write_bytes(
            subprocess.run(
                ["gpg", "--batch", "--armor", "--export", trusted],
                env={**os.environ, "GNUPGHOME": str(home)}, check=True, capture_output=True,
            ).stdout
        )  # fmt: skip
        yield Keys(root / "trusted", root / "stranger", signers, home, trusted, stranger, keyring)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def commit(repo: Path, keys: Keys, how: str, message: str) -> str:
    """Commit everything in `repo`: unsigned, or signed with one of the test's keys."""
    config = {
        "unsigned": [],
        "ssh": ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys.ssh_trusted}"],
        "ssh-stranger": ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys.ssh_stranger}"],
        "gpg": ["-c", f"user.signingkey={keys.gpg_trusted}"],
        "gpg-stranger": ["-c", f"user.signingkey={keys.gpg_stranger}"],
    }[how]
    sign = [] if how == "unsigned" else ["-S"]
    env = {**os.environ, "GNUPGHOME": str(keys.gnupghome)}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=Ops", "-c", "user.email=ops@example.com",
         *config, "commit", "-q", "--allow-empty", *sign, "-m", message],
        env=env, check=True,
    )  # fmt: skip
    return git(repo, "rev-parse", "HEAD")


def tampered(repo: Path) -> str:
    """HEAD's commit object with its message changed and its signature kept: a bad signature."""
    raw = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "commit", "HEAD"], check=True, capture_output=True
    ).stdout
    forged = raw[: raw.rindex(b"\n\n")] + b"\n\nsomething else\n"
    done = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=forged, check=True, capture_output=True,
    )  # fmt: skip
    return done.stdout.decode().strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = copy_sample(tmp_path / "repo")
    git(path, "init", "-q", "-b", "main")
    return path


@pytest.mark.parametrize(
    ("file", "how", "expected"),
    [
        ("signers", "ssh", None),
        ("signers", "unsigned", "is not signed"),
        ("signers", "ssh-stranger", "is signed by a key that allowed_signers does not hold"),
        ("signers", "gpg", "does not hold"),
        ("keyring", "gpg", None),
        ("keyring", "gpg-stranger", "is signed by a key that keyring.asc does not hold"),
        ("keyring", "ssh", "does not hold"),
        ("keyring", "unsigned", "is not signed"),
    ],
)
def test_only_the_keys_of_the_file_count(
    repo: Path, keys: Keys, file: str, how: str, expected: str | None
) -> None:
    sha = commit(repo, keys, how, "a commit")
    with Verifier.open(getattr(keys, file)) as verifier:
        problem = verifier.check(repo / ".git", sha)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.file == "."
        assert problem.message.startswith(f"commit {sha[:12]} ")
        assert expected in problem.message


def test_the_problem_names_who_signed(repo: Path, keys: Keys) -> None:
    sha = commit(repo, keys, "gpg-stranger", "by a stranger")
    with Verifier.open(keys.keyring) as verifier:
        problem = verifier.check(repo / ".git", sha)
    assert problem is not None
    assert keys.gpg_stranger[-16:] in problem.message  # the key id


@pytest.mark.parametrize("how", ["ssh", "gpg"])
def test_a_bad_signature_is_refused(repo: Path, keys: Keys, how: str) -> None:
    commit(repo, keys, how, "signed")
    forged = tampered(repo)
    with Verifier.open(keys.signers if how == "ssh" else keys.keyring) as verifier:
        problem = verifier.check(repo / ".git", forged)
    assert problem is not None
    assert "bad signature" in problem.message


def test_an_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nobody\n")
    with pytest.raises(RepoError, match="neither an SSH allowed-signers file nor"):
        Verifier.open(empty)
    with pytest.raises(RepoError, match="cannot read"):
        Verifier.open(tmp_path / "missing")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, check=False)


def test_validate_and_plan_check_the_same(repo: Path, keys: Keys) -> None:
    base = commit(repo, keys, "ssh", "signed")
    (repo / "deployments" / "double.yaml").unlink()
    head = commit(repo, keys, "unsigned", "unsigned")
    good = run_cli("validate", str(repo), "--ref", base, "--verify-signatures", str(keys.signers))
    assert good.returncode == 0, good.stdout + good.stderr
    bad = run_cli(
        "validate", str(repo), "--ref", head, "--verify-signatures", str(keys.signers),
        "--format", "json",
    )  # fmt: skip
    assert bad.returncode == 1
    assert "is not signed" in json.dumps(json.loads(bad.stdout))
    assert run_cli("validate", str(repo), "--ref", head).returncode == 0  # no option: no check
    no_ref = run_cli("validate", str(repo), "--verify-signatures", str(keys.signers))
    assert no_ref.returncode == 2
    planned = run_cli(
        "plan", "--repo", str(repo), "--base", base, "--head", head,
        "--verify-signatures", str(keys.signers),
    )  # fmt: skip
    assert planned.returncode == 1
    assert "is not signed" in planned.stdout


def test_serve_rejects_an_unsigned_head_and_keeps_the_last_good_commit(
    serve: Callable[..., Orchestrator], repo: Path, keys: Keys
) -> None:
    good = commit(repo, keys, "ssh", "signed")
    orchestrator = serve(str(repo), "--verify-signatures", str(keys.signers))
    orchestrator.until(lambda s: (s["desired"] or {}).get("sha") == good, "the signed commit")
    (repo / "deployments" / "double.yaml").unlink()
    bad = commit(repo, keys, "ssh-stranger", "signed by a stranger")
    state = orchestrator.until(
        lambda s: (s["last_rejected"] or {}).get("sha") == bad, "the stranger's commit rejected"
    )
    assert state["desired"]["sha"] == good
    messages = [p["message"] for p in state["last_rejected"]["problems"]]
    assert any("does not hold" in message for message in messages), messages
