"""Signed commits: only a branch head signed by a key of the operator's file is accepted.

`--verify-signatures FILE` names an SSH allowed-signers file (git signs with SSH keys since
2.34) or an OpenPGP keyring (binary or ASCII-armoured). git itself checks the signature, with
everything it trusts replaced by FILE alone: a private, throw-away `GNUPGHOME` holding just
FILE's OpenPGP keys (marked trusted, as the operator vouches for them by listing them), and
`gpg.ssh.allowedSignersFile` set for the command. So a key that the user's own keyring or git
config trusts, but FILE does not hold, is refused. A commit that fails is rejected like an
invalid one (a problem on the whole repository, `file: "."`), and the last good commit stays
desired. This module only answers "is this commit signed by a key of FILE"; it decides nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import RepoError
from .gitcommand import LOCAL_GIT_TIMEOUT, base_environment, with_config
from .models import LoadResult, Problem

ARMOURED = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
# git's %G? letters (git-log "PRETTY FORMATS"), with what each means for the operator.
REFUSALS = {
    "N": "is not signed",
    "B": "has a bad signature",
    "U": "is signed by a key that {file} does not hold",
    "E": "is signed by a key that {file} does not hold",
    "X": "has an expired signature",
    "Y": "is signed by an expired key",
    "R": "is signed by a revoked key",
}


def is_openpgp(data: bytes) -> bool:
    """An OpenPGP keyring (armoured, or binary: its first packet has the high bit set)."""
    return data.lstrip().startswith(ARMOURED) or (bool(data) and data[0] & 0x80 != 0)


@dataclass
class Verifier:
    """Checks commit signatures against the keys of one file; `close()` removes its home."""

    file: Path
    home: Path
    signers: Path
    """The allowed-signers file git is given: FILE itself, or an empty one for a keyring."""

    @classmethod
    def open(cls, file: Path) -> Verifier:
        """Read FILE once; RepoError when it cannot be used (a usage error for the caller)."""
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise RepoError(f"cannot read the signers file {file}: {exc}") from exc
        home = Path(tempfile.mkdtemp(prefix="gitops-signers-"))
        home.chmod(0o700)
        try:
            signers = file
            if is_openpgp(data):
                _import_keyring(home, data, file)
                signers = home / "no-ssh-signers"
                signers.write_bytes(b"")
            elif not _has_ssh_signers(data):
                raise RepoError(
                    f"{file} is neither an SSH allowed-signers file nor an OpenPGP keyring"
                )
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        return cls(file.resolve(), home, signers.resolve())

    def check(self, git_dir: Path, sha: str) -> Problem | None:
        """None when commit `sha` has a good signature by a key of the file, else why not."""
        env = with_config(
            {**base_environment(), "GNUPGHOME": str(self.home)},
            [("gpg.ssh.allowedSignersFile", str(self.signers)), ("gpg.program", "gpg")],
        )
        done = subprocess.run(
            ["git", "--git-dir", str(git_dir), "log", "-1", "--format=%G?%x00%GS%x00%GK", sha],
            env=env, capture_output=True, timeout=LOCAL_GIT_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            raise RepoError(f"cannot check the signature of {sha}: {message}")
        verdict, signer, key = (done.stdout.decode(errors="replace").strip("\n") + "\0\0").split(
            "\0"
        )[:3]
        if verdict == "G":
            return None
        refusal = REFUSALS.get(verdict, "has a signature git cannot check").format(
            file=self.file.name
        )
        by = ", ".join(part for part in (signer.strip(), key.strip() and f"key {key}") if part)
        detail = f" ({by})" if by else ""
        return Problem(".", None, f"commit {sha[:12]} {refusal}{detail}")

    def close(self) -> None:
        # gpg may have started an agent for the private home: it must not outlive us.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                capture_output=True, timeout=10, check=False,
            )  # fmt: skip
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _has_ssh_signers(data: bytes) -> bool:
    lines = [line.strip() for line in data.decode(errors="replace").splitlines()]
    return any(line and not line.startswith("#") for line in lines)


def _import_keyring(home: Path, data: bytes, file: Path) -> None:
    env = {**base_environment(), "GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--no-tty", "--quiet"]
    try:
        imported = subprocess.run(
            [*gpg, "--status-fd", "1", "--import"], input=data, env=env, capture_output=True,
            timeout=LOCAL_GIT_TIMEOUT, check=False,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise RepoError("gpg is needed to check OpenPGP signatures; install it") from exc
    fingerprints = sorted(
        {
            line.split()[-1]
            for line in imported.stdout.decode(errors="replace").splitlines()
            if line.startswith("[GNUPG:] IMPORT_OK")
        }
    )
    if not fingerprints:
        message = imported.stderr.decode(errors="replace").strip()
        raise RepoError(f"no OpenPGP key could be read from {file}: {message}")
    # Listed in FILE is what "trusted" means here: without it gpg calls every key unknown (U).
    trust = "".join(f"{fingerprint}:6:\n" for fingerprint in fingerprints)
    trusted = subprocess.run(
        [*gpg, "--import-ownertrust"], input=trust.encode(), env=env, capture_output=True,
        timeout=LOCAL_GIT_TIMEOUT, check=False,
    )  # fmt: skip
    if trusted.returncode != 0:
        message = trusted.stderr.decode(errors="replace").strip()
        raise RepoError(f"cannot mark the keys of {file} as trusted: {message}")


def verified(
    result: LoadResult, verifier: Verifier | None, *, git_dir: Path, sha: str
) -> LoadResult:
    """`result`, rejected with the signature's problem first when `verifier` refuses `sha`."""
    if verifier is None:
        return result
    problem = verifier.check(git_dir, sha)
    if problem is None:
        return result
    return LoadResult(snapshot=None, problems=(problem, *result.problems))
