"""The `gitops-orchestrator` command: the only place that reads argv and the environment.

Each subcommand builds its settings from flags and `GITOPS_*` variables and wires the parts
together; the parts themselves never look at the process environment. Machine-readable output
goes to stdout, diagnostics to stderr; exit 2 is a usage error, as click does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import git
import httpx

from . import __version__, discovery, manifests, orchestrator, repo
from .errors import OrchestratorError, RepoError
from .models import LoadResult, Problem, Snapshot
from .settings import (
    DeviceSettings,
    DiscoverySettings,
    LoaderSettings,
    ReconcileSettings,
    StoreSettings,
    SyncSettings,
    WebSettings,
)
from .simulator.fleet import Fleet, run_device

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
@click.option("--repo", required=True, envvar="GITOPS_REPO", help="A local path or a git URL.")
@click.option("--branch", envvar="GITOPS_BRANCH", help="Default: HEAD's branch / the remote's.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".gitops-orchestrator"),
    envvar="GITOPS_DATA_DIR",
    show_default=True,
)
@click.option("--host", default=WebSettings.host, envvar="GITOPS_HOST", show_default=True)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=WebSettings.port, envvar="GITOPS_PORT"
)
@click.option("--public-url", envvar="GITOPS_PUBLIC_URL", help="Base URL devices use to reach us.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=SyncSettings.poll_interval,
    envvar="GITOPS_POLL_INTERVAL",
    show_default=True,
)
@click.option(
    "--fetch-interval",
    type=click.FloatRange(min=1),
    default=SyncSettings.fetch_interval,
    envvar="GITOPS_FETCH_INTERVAL",
    show_default=True,
)
@click.option(
    "--keep-snapshots",
    type=click.IntRange(min=1),
    default=StoreSettings.keep_snapshots,
    envvar="GITOPS_KEEP_SNAPSHOTS",
    show_default=True,
)
@click.option(
    "--keep-commits",
    type=click.IntRange(min=1),
    default=StoreSettings.keep_commits,
    envvar="GITOPS_KEEP_COMMITS",
    show_default=True,
)
@click.option(
    "--max-binary-size",
    type=click.IntRange(min=1),
    default=LoaderSettings.max_binary_size,
    envvar="GITOPS_MAX_BINARY_SIZE",
    show_default=True,
)
@click.option(
    "--prune-limit",
    type=click.FloatRange(0.0, 1.0),
    default=ReconcileSettings.prune_limit,
    envvar="GITOPS_PRUNE_LIMIT",
    show_default=True,
    help="Largest fraction of running deployments one commit may undeploy (1 = any).",
)
@click.option(
    "--reconcile-interval",
    type=click.FloatRange(min=0.1),
    default=ReconcileSettings.interval,
    envvar="GITOPS_RECONCILE_INTERVAL",
    show_default=True,
)
@click.option(
    "--return-after",
    type=click.FloatRange(min=0.0),
    default=ReconcileSettings.return_after,
    envvar="GITOPS_RETURN_AFTER",
    show_default=True,
)
@click.option(
    "--settle-window",
    type=click.FloatRange(min=0.0),
    default=ReconcileSettings.settle_window,
    envvar="GITOPS_SETTLE_WINDOW",
    show_default=True,
    help="Seconds after start before steps without device or selector are placed anew.",
)
@click.option(
    "--balance-threshold",
    type=click.IntRange(min=2),
    default=ReconcileSettings.balance_threshold,
    envvar="GITOPS_BALANCE_THRESHOLD",
    show_default=True,
    help="Steps more than the least loaded candidate at which a free step moves.",
)
@click.option(
    "--balance-moves",
    type=click.IntRange(min=0),
    default=ReconcileSettings.balance_moves,
    envvar="GITOPS_BALANCE_MOVES",
    show_default=True,
    help="Steps moved at most per pass to balance the fleet (0: never).",
)
@click.option(
    "--deploy-concurrency",
    type=click.IntRange(min=1),
    default=ReconcileSettings.concurrency,
    envvar="GITOPS_DEPLOY_CONCURRENCY",
    show_default=True,
)
@click.option(
    "--health-interval",
    type=click.FloatRange(min=0.1),
    default=DeviceSettings.health_interval,
    envvar="GITOPS_HEALTH_INTERVAL",
    show_default=True,
)
@click.option(
    "--health-failures",
    type=click.IntRange(min=1),
    default=DeviceSettings.health_failures,
    envvar="GITOPS_HEALTH_FAILURES",
    show_default=True,
)
@click.option(
    "--mdns-interfaces",
    default=DiscoverySettings.mdns_interfaces,
    envvar="GITOPS_MDNS_INTERFACES",
    show_default=True,
    callback=lambda _ctx, _param, value: _mdns_interfaces(value),
    help="Browse mDNS on: all, none, or comma-separated addresses of this host.",
)
@click.option(
    "--api-token",
    envvar="GITOPS_API_TOKEN",
    help="Require this token for the pages, the API and /metrics (prefer the variable or "
    "GITOPS_API_TOKEN_FILE: a flag shows in ps).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
def serve(**options: Any) -> None:
    """Run the orchestrator: follow --repo and serve the API on --host:--port."""
    settings = orchestrator.Settings(
        repo=options["repo"],
        branch=options["branch"],
        data_dir=options["data_dir"],
        log_level=options["log_level"],
        sync=SyncSettings(
            poll_interval=options["poll_interval"], fetch_interval=options["fetch_interval"]
        ),
        store=StoreSettings(options["keep_snapshots"], options["keep_commits"]),
        web=WebSettings(
            host=options["host"],
            port=options["port"],
            public_url=options["public_url"],
            webhook_secret=_secret("GITOPS_WEBHOOK_SECRET"),
            api_token=options["api_token"] or _secret("GITOPS_API_TOKEN"),
            try_it=os.environ.get("GITOPS_TRY_IT", "true").strip().lower()
            not in {"0", "false", "no", "off"},
        ),
        loader=LoaderSettings(max_binary_size=options["max_binary_size"]),
        reconcile=ReconcileSettings(
            interval=options["reconcile_interval"],
            prune_limit=options["prune_limit"],
            return_after=options["return_after"],
            settle_window=options["settle_window"],
            balance_threshold=options["balance_threshold"],
            balance_moves=options["balance_moves"],
            concurrency=options["deploy_concurrency"],
        ),
        discovery=DiscoverySettings(mdns_interfaces=options["mdns_interfaces"]),
        devices=DeviceSettings(
            health_interval=options["health_interval"],
            health_failures=options["health_failures"],
            log_rate=float(os.environ.get("GITOPS_LOG_RATE", DeviceSettings.log_rate)),
            log_ring=int(os.environ.get("GITOPS_LOG_RING", DeviceSettings.log_ring)),
        ),
    )
    _run(settings)


def _mdns_interfaces(value: str) -> str:
    try:
        discovery.parse_interfaces(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def _run(settings: orchestrator.Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(orchestrator.run(settings))
    except OrchestratorError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".gitops-orchestrator/demo"),
    show_default=True,
)
@click.option("--port", type=click.IntRange(0, 65535), default=3000, show_default=True)
def demo(data_dir: Path, port: int) -> None:
    """The embedded default: the bundled sample repository, served on 127.0.0.1."""
    if not SAMPLE_REPO.is_dir():
        raise click.UsageError(f"the sample repository is not at {SAMPLE_REPO}")
    repository = data_dir / "sample-repo"
    if not (repository / ".git").is_dir():
        repository.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(SAMPLE_REPO, repository, dirs_exist_ok=True)
        with git.Repo.init(repository, initial_branch="main") as created:
            created.git.add("--all")
            created.git.commit(
                "-m",
                "The sample fleet",
                author="gitops-orchestrator demo <demo@localhost>",
                env={"GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@localhost"},
            )
    with _loaded(repository, None, LoaderSettings()) as result:
        if result.snapshot is None:
            raise click.ClickException(f"{repository} is not valid: run validate on it")
        click.echo(_summary(result.snapshot), err=True)
        names = list(result.snapshot.devices.devices)
    url = f"http://127.0.0.1:{port}"
    click.echo(
        f"""
The demo follows the git repository {repository}
with simulated devices {", ".join(names)} on 127.0.0.1 (admission: listed devices only).
  status:  {url}/api/v1/sync
  try:     gitops-orchestrator call fibo-chain 13 --orchestrator {url}
           edit {repository / "deployments"} and `git commit -am ...`: devices follow at once;
           break a module.yaml and commit: the commit is rejected, the last good one stays.
Stop with Ctrl-C.
""",
        err=True,
    )
    settings = orchestrator.Settings(
        repo=str(repository),
        branch="main",
        data_dir=data_dir / "state",
        web=WebSettings(host="127.0.0.1", port=port, public_url=url),
        discovery=DiscoverySettings(mdns_interfaces="127.0.0.1"),  # never `all` in the demo
    )
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_demo(settings, names, data_dir / "devices"))


async def _demo(settings: orchestrator.Settings, names: list[str], devices_dir: Path) -> None:
    """The orchestrator and its simulated devices in one process; devices stop with it."""
    server = asyncio.create_task(orchestrator.run(settings))
    url = settings.web.public_url or ""
    async with httpx.AsyncClient() as client:
        while not server.done():
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
    if server.done():
        await server
        return
    async with Fleet(orchestrator_url=url, data_dir=devices_dir) as fleet:
        await fleet.add(names=names)
        await server


def _secret(variable: str) -> str | None:
    """A secret from `variable`, or from the file that `variable_FILE` names."""
    secret = os.environ.get(variable)
    path = os.environ.get(f"{variable}_FILE")
    if not secret and path:
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read {variable}_FILE: {exc}") from exc
    return secret or None


@main.command()
@click.argument("deployment")
@click.argument("args", nargs=-1)
@click.option(
    "--orchestrator",
    default="http://127.0.0.1:3000",
    envvar="GITOPS_ORCHESTRATOR_URL",
    show_default=True,
    help="Base URL of a running orchestrator.",
)
@click.option("--wait", type=click.FloatRange(min=0.1, max=300.0), default=30.0, show_default=True)
def call(deployment: str, args: tuple[str, ...], orchestrator: str, wait: float) -> None:
    """Run DEPLOYMENT with integer ARGs through a running orchestrator and print the result."""
    for arg in args:
        if not arg.lstrip("-").isdigit():
            raise click.UsageError(f"{arg!r} is not an integer")
    url = f"{orchestrator.rstrip('/')}/execute/{deployment}"
    headers = (
        {"Authorization": f"Bearer {token}"}
        if (token := os.environ.get("GITOPS_API_TOKEN"))
        else {}
    )
    try:
        answer = httpx.post(
            url, json={f"param{i}": int(a) for i, a in enumerate(args)}, headers=headers,
            params={"wait": wait}, timeout=wait + 10,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {orchestrator}: {exc}") from exc
    try:
        document = answer.json()
    except ValueError:
        raise click.ClickException(
            f"{url} answered {answer.status_code}: {answer.text[:200]}"
        ) from None
    if answer.status_code != 200:
        message = document.get("error", {}).get("message", answer.text[:200])
        hint = f" (follow {document['resultUrl']})" if "resultUrl" in document else ""
        raise click.ClickException(f"{deployment}: {message}{hint}")
    click.echo(
        json.dumps(document["result"])
        if not isinstance(document["result"], str)
        else document["result"]
    )


@main.command()
@click.option("--name", required=True, help="The device's name (its mDNS instance name).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), required=True)
@click.option("--orchestrator", help="Register with the orchestrator at this base URL.")
@click.option("--interfaces", help="Comma-separated supervisorInterfaces (default: all).")
@click.option("--mdns", is_flag=True, help="Advertise over mDNS on the host's interface.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to keep modules (default: a temporary folder).",
)
def device(
    name: str,
    host: str,
    port: int,
    orchestrator: str | None,
    interfaces: str | None,
    mdns: bool,
    data_dir: Path | None,
) -> None:
    """A simulated supervisor, for demos and tests (not a production supervisor)."""
    if "." in name or not name:
        raise click.UsageError("a device name is not empty and has no dot")
    names = [item.strip() for item in interfaces.split(",") if item.strip()] if interfaces else None
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    run_device(
        name, host=host, port=port, orchestrator_url=orchestrator, interfaces=names, mdns=mdns,
        data_dir=data_dir,
    )  # fmt: skip


@main.command()
@click.option("--base", required=True, help="The commit the change starts from (a ref or sha).")
@click.option("--head", required=True, help="The commit that would be merged (a ref or sha).")
@click.option(
    "--repo",
    "repo_path",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The repository, or the folder of it that holds the fleet's files.",
)
@click.option(
    "--inventory",
    "inventory_source",
    metavar="FILE|URL",
    help="Devices saved by `inventory`, or a running orchestrator's URL "
    "(default: devices.yaml's devices with an address).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--prune-limit",
    type=click.FloatRange(0.0, 1.0),
    default=ReconcileSettings.prune_limit,
    envvar="GITOPS_PRUNE_LIMIT",
    show_default=True,
    help="The orchestrator's prune limit, to show what it would hold.",
)
def plan(
    base: str,
    head: str,
    repo_path: Path,
    inventory_source: str | None,
    output_format: str,
    prune_limit: float,
) -> None:
    """Show what merging HEAD onto BASE would do to the fleet, device by device.

    Exit 0 when head is valid and every step can be placed, 1 otherwise, 2 on usage errors.
    """
    import time

    from . import inventory, report, review

    try:
        fleet = (
            inventory.load(inventory_source, token=os.environ.get("GITOPS_API_TOKEN") or None)
            if inventory_source
            else None
        )
        planned = review.plan_change(
            repo_path, base=base, head=head, inventory=fleet, now=time.time(),
            prune_limit=prune_limit,
        )  # fmt: skip
    except (RepoError, inventory.InventoryError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(report.render(planned, output_format))
    if output_format == "json":
        click.echo(f"plan: {planned.review.summary}", err=True)
    sys.exit(0 if planned.review.ok else 1)


@main.command("inventory")
@click.option("--from", "url", required=True, help="Base URL of a running orchestrator.")
def inventory_command(url: str) -> None:
    """Print a running orchestrator's devices as {"devices": [...]}, for `plan --inventory`."""
    from . import inventory

    try:
        items = inventory.fetch_items(url, token=os.environ.get("GITOPS_API_TOKEN") or None)
    except inventory.InventoryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"devices": items}, indent=2, ensure_ascii=False))
    click.echo(f"{len(items)} devices from {url}", err=True)


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
