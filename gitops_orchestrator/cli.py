"""The `gitops-orchestrator` command: the only place that reads argv and the environment.

Each subcommand builds its settings from flags and `GITOPS_*` variables and wires the parts
together; the parts themselves never look at the process environment. Machine-readable output
goes to stdout, diagnostics to stderr; exit 2 is a usage error, as click does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from . import __version__, manifests, repo
from .errors import RepoError
from .models import LoadResult, Problem, Snapshot
from .settings import LoaderSettings

# The sample repository ships beside the package in a source checkout (`make run`).
SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gitops-orchestrator")
def main() -> None:
    """GitOps orchestrator for WebAssembly microservices on Wasm-IoT devices."""


@main.command()
@click.argument(
    "path",
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--ref", help="Check commit REF of the repository containing PATH, not the disk.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="github prints workflow annotations (::error file=...,line=...::).",
)
@click.option(
    "--max-binary-size",
    type=click.IntRange(min=1),
    default=LoaderSettings.max_binary_size,
    envvar="GITOPS_MAX_BINARY_SIZE",
    show_default=True,
    help="Largest wasm binary or data file accepted, in bytes.",
)
def validate(path: Path, ref: str | None, output_format: str, max_binary_size: int) -> None:
    """Check the repository files under PATH (default: the current folder).

    Exit 0 when valid, 1 when there are problems, 2 on usage errors.
    """
    settings = LoaderSettings(max_binary_size=max_binary_size)
    with _loaded(path, ref, settings) as result:
        if output_format == "json":
            click.echo(json.dumps(_json_report(path, result), indent=2))
        elif output_format == "github":
            for problem in result.problems:
                click.echo(_annotation(path, problem))
            click.echo(_verdict(path, result))
        else:
            for problem in result.problems:
                line = f":{problem.line}" if problem.line else ""
                click.echo(f"{_display(path, problem.file)}{line}: {problem.message}")
            click.echo(_verdict(path, result))
    sys.exit(0 if result.snapshot else 1)


@main.command()
def demo() -> None:
    """Show what the bundled sample repository holds (devices and serving come later)."""
    if not SAMPLE_REPO.is_dir():
        raise click.UsageError(f"the sample repository is not at {SAMPLE_REPO}")
    with _loaded(SAMPLE_REPO, None, LoaderSettings()) as result:
        if result.snapshot is None:
            for problem in result.problems:
                click.echo(f"{problem.file}:{problem.line or ''}: {problem.message}", err=True)
            sys.exit(1)
        click.echo(f"Sample repository {SAMPLE_REPO}\n")
        click.echo(_summary(result.snapshot))


@contextmanager
def _loaded(path: Path, ref: str | None, settings: LoaderSettings) -> Iterator[LoadResult]:
    if ref is None:
        yield manifests.load(repo.FolderTree(path), settings=settings)
        return
    try:
        with repo.tree_at(path, ref) as tree:
            result = manifests.load(tree, settings=settings)
    except RepoError as exc:
        raise click.UsageError(str(exc)) from exc
    yield result


def _display(root: Path, file: str) -> str:
    return str(Path(root, file)) if str(root) != "." else file


def _verdict(path: Path, result: LoadResult) -> str:
    snapshot = result.snapshot
    if snapshot is None:
        count = len(result.problems)
        return f"{path}: {count} problem{'s' if count != 1 else ''}"
    return (
        f"{path}: valid ({len(snapshot.modules)} modules, {len(snapshot.deployments)} "
        f"deployments, {len(snapshot.devices.devices)} devices listed)"
    )


def _annotation(root: Path, problem: Problem) -> str:
    # Workflow commands escape '%', CR and LF in the message, and also ':' and ',' in values.
    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:
        return escape(text).replace(":", "%3A").replace(",", "%2C")

    where = f"file={prop(_display(root, problem.file))}"
    if problem.line:
        where += f",line={problem.line}"
    return f"::error {where}::{escape(problem.message)}"


def _json_report(path: Path, result: LoadResult) -> dict[str, object]:
    snapshot = result.snapshot
    return {
        "path": str(path),
        "valid": snapshot is not None,
        "commit_sha": snapshot.commit_sha if snapshot else None,
        "problems": [
            {"file": _display(path, p.file), "line": p.line, "message": p.message}
            for p in result.problems
        ],
        "modules": {
            name: {
                "digest": module.binary.digest,
                "size": module.binary.size,
                "exports": dict(module.inspection.functions),
                "requirements": list(module.requirements),
            }
            for name, module in (snapshot.modules.items() if snapshot else ())
        },
        "deployments": {
            name: [f"{step.module}.{step.function}" for step in deployment.sequence]
            for name, deployment in (snapshot.deployments.items() if snapshot else ())
        },
    }


def _summary(snapshot: Snapshot) -> str:
    lines = ["Modules:"]
    for name, module in snapshot.modules.items():
        functions = ", ".join(
            f"{function}({len(spec.params)}) -> {spec.output}"
            for function, spec in module.spec.functions.items()
        )
        needs = ", ".join(module.requirements) or "nothing"
        lines.append(f"  {name:<12} sha256:{module.binary.digest[:12]}  {module.binary.size} bytes")
        lines.append(f"  {'':<12} {functions}; needs {needs}")
    lines.append("Deployments:")
    for name, deployment in snapshot.deployments.items():
        steps = " -> ".join(f"{s.module}.{s.function}" for s in deployment.sequence)
        lines.append(f"  {name:<12} {steps}")
    lines.append(f"Devices (admission {snapshot.devices.admission}):")
    for name, device in snapshot.devices.devices.items():
        labels = ", ".join(f"{k}={v}" for k, v in device.labels.items()) or "no labels"
        flags = " (cordoned)" if device.cordoned else ""
        lines.append(f"  {name:<12} {labels}{flags}")
    return "\n".join(lines)
