"""The `gitops-orchestrator` command: the only place that reads argv and the environment.

Each subcommand builds its settings from flags and `GITOPS_*` variables and wires the parts
together; the parts themselves never look at the process environment. Machine-readable output
goes to stdout, diagnostics to stderr; exit 2 is a usage error, as click does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import logging.config
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import git
import httpx

from . import __version__, discovery, logformat, manifests, orchestrator, repo, signatures
from .errors import OrchestratorError, RepoError
from .models import LoadResult, Problem, Snapshot
from .settings import (
    VARIABLES,
    DeviceSettings,
    DiscoverySettings,
    LoaderSettings,
    LogSettings,
    ReconcileSettings,
    StoreSettings,
    SyncSettings,
    WebSettings,
    with_variables,
)
from .simulator.device import Fault
from .simulator.fleet import Fleet, run_device


def _log_options(command: Callable[..., None]) -> Callable[..., None]:
    """`--log-level` and `--log-format`, shared by the commands that run the orchestrator."""
    command = click.option(
        "--log-format",
        type=click.Choice(logformat.FORMATS),
        default=LogSettings.format,
        envvar="GITOPS_LOG_FORMAT",
        show_default=True,
        help="json: one object per line (time, level, logger, message).",
    )(command)
    return click.option(
        "--log-level",
        type=click.Choice(logformat.LEVELS),
        default=LogSettings.level,
        envvar="GITOPS_LOG_LEVEL",
        show_default=True,
        help="debug adds a line per HTTP request and health check.",
    )(command)


# The sample repository ships beside the package in a source checkout (`make run`).
SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"


def _verify_signatures(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--verify-signatures FILE`, the same on `serve`, `validate` and `plan`."""
    return click.option(
        "--verify-signatures",
        "signers",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="GITOPS_VERIFY_SIGNATURES",
        help=f"An SSH allowed-signers file or an OpenPGP keyring: {what} not signed by one "
        "of its keys is rejected.",
    )


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
@_verify_signatures("a commit (--ref)")
def validate(
    path: Path, ref: str | None, output_format: str, max_binary_size: int, signers: Path | None
) -> None:
    """Check the repository files under PATH (default: the current folder).

    Exit 0 when valid, 1 when there are problems, 2 on usage errors.
    """
    settings = LoaderSettings(max_binary_size=max_binary_size)
    with _loaded(path, ref, settings, signers) as result:
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
    "--registration-window",
    type=click.FloatRange(min=0.0),
    default=DeviceSettings.registration_window,
    envvar="GITOPS_REGISTRATION_WINDOW",
    show_default=True,
    help="Seconds after an introduction in which a registration is not a restart.",
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
@click.option(
    "--request-deadline",
    type=click.FloatRange(min=0.1),
    default=WebSettings.request_deadline,
    envvar="GITOPS_REQUEST_DEADLINE",
    show_default=True,
    help="Seconds a client has to send a whole request.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=16),
    default=WebSettings.max_connections,
    envvar="GITOPS_MAX_CONNECTIONS",
    show_default=True,
    help="Open client connections at most; the oldest still sending is dropped first.",
)
@_verify_signatures("a branch head")
@_log_options
def serve(**options: Any) -> None:
    """Run the orchestrator: follow --repo and serve the API on --host:--port."""
    settings = orchestrator.Settings(
        repo=options["repo"],
        branch=options["branch"],
        data_dir=options["data_dir"],
        log=LogSettings(level=options["log_level"], format=options["log_format"]),
        sync=SyncSettings(
            poll_interval=options["poll_interval"],
            fetch_interval=options["fetch_interval"],
            verify_signatures=options["signers"],
        ),
        store=StoreSettings(options["keep_snapshots"], options["keep_commits"]),
        web=WebSettings(
            host=options["host"],
            port=options["port"],
            public_url=options["public_url"],
            webhook_secret=_secret("GITOPS_WEBHOOK_SECRET"),
            api_token=options["api_token"] or _secret("GITOPS_API_TOKEN"),
            request_deadline=options["request_deadline"],
            max_connections=options["max_connections"],
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
            registration_window=options["registration_window"],
        ),
    )
    _run(_with_variables(settings))


def _with_variables(settings: orchestrator.Settings) -> orchestrator.Settings:
    """`settings` with the `GITOPS_*` variables of the settings that have no flag."""
    groups = {}
    for group in dataclasses.fields(settings):
        value = getattr(settings, group.name)
        if type(value) in VARIABLES:
            try:
                groups[group.name] = with_variables(value, os.environ)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from exc
    return dataclasses.replace(settings, **groups)


def _show_variables(command: click.Command) -> None:
    """Let --help name each option's `GITOPS_*` variable and default, and the variables of
    settings that have no flag."""
    command.context_settings["show_default"] = True
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar:
            param.show_envvar = True
    names = sorted(name for group in VARIABLES.values() for name in group.values())
    command.epilog = (
        "Also read from the environment (docs/configuration.md): GITOPS_WEBHOOK_SECRET[_FILE], "
        "GITOPS_API_TOKEN_FILE, GITOPS_GIT_* (credentials), " + ", ".join(names) + "."
    )


_show_variables(serve)


def _mdns_interfaces(value: str) -> str:
    try:
        discovery.parse_interfaces(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def _run(settings: orchestrator.Settings) -> None:
    logging.config.dictConfig(logformat.config(settings.log))
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
@_log_options
def demo(data_dir: Path, port: int, log_level: str, log_format: str) -> None:
    """The embedded default: the bundled sample repository, served on 127.0.0.1.

    Reset its data (the repository copy, the database, the devices) with
    `rm -rf .gitops-orchestrator/demo` (or the --data-dir given).
    """
    _check_port_free(port)  # before anything is copied or started: another demo stays intact
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
        log=LogSettings(level=log_level, format=log_format),
    )
    logging.config.dictConfig(logformat.config(settings.log))
    asyncio.run(_demo(settings, names, data_dir / "devices"))


def _check_port_free(port: int) -> None:
    """Exit 2 with what to do when something listens on 127.0.0.1:`port` already."""
    if port == 0:
        return
    with socket.socket() as probe:
        # As uvicorn binds: SO_REUSEADDR, so a closed socket in TIME_WAIT is no conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise click.UsageError(
                f"port {port} is in use: gitops-orchestrator demo --port N "
                f"(another demo? give it its own --data-dir too) [{exc.strerror}]"
            ) from None


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


ORCHESTRATOR_OPTION = click.option(
    "--orchestrator",
    default="http://127.0.0.1:3000",
    envvar="GITOPS_ORCHESTRATOR_URL",
    show_default=True,
    help="Base URL of a running orchestrator (a token comes from GITOPS_API_TOKEN).",
)


def _token_headers() -> dict[str, str]:
    token = os.environ.get("GITOPS_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


@main.command(epilog="Arguments that start with '-' go after '--': call fibo-chain -- -3")
@click.argument("deployment")
@click.argument("args", nargs=-1)
@ORCHESTRATOR_OPTION
@click.option("--wait", type=click.FloatRange(min=0.1, max=300.0), default=30.0, show_default=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help='json prints the whole answer: {"result": ..., "resultUrl": ...}.',
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="For a file result: download the file from its device into OUTPUT.",
)
def call(
    deployment: str,
    args: tuple[str, ...],
    orchestrator: str,
    wait: float,
    output_format: str,
    output: Path | None,
) -> None:
    """Run DEPLOYMENT with integer ARGs through a running orchestrator and print the result.

    The result is a number, or the URL of a file on the device that made it (--output saves it).
    """
    for arg in args:
        if not arg.lstrip("-").isdigit():
            raise click.UsageError(f"{arg!r} is not an integer")
    url = f"{orchestrator.rstrip('/')}/execute/{deployment}"
    try:
        answer = httpx.post(
            url, json={f"param{i}": int(a) for i, a in enumerate(args)}, headers=_token_headers(),
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
    result = document["result"]
    if output is not None:
        _download(result, output, wait=wait)
    if output_format == "json":
        click.echo(json.dumps(document, ensure_ascii=False))
    else:
        click.echo(result if isinstance(result, str) else json.dumps(result))


def _download(result: object, output: Path, *, wait: float) -> None:
    """Save a file result (a URL on the device that wrote it) into `output`."""
    if not isinstance(result, str) or "://" not in result:
        raise click.ClickException(f"the result is {result!r}, not a file: --output needs one")
    try:
        with httpx.stream("GET", result, timeout=wait + 10) as answer:
            if answer.status_code != 200:
                raise click.ClickException(f"{result} answered {answer.status_code}")
            with output.open("wb") as target:
                for chunk in answer.iter_bytes():
                    target.write(chunk)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot download {result}: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from exc
    click.echo(f"saved {output}", err=True)


@main.command("status")
@ORCHESTRATOR_OPTION
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def status_command(orchestrator: str, output_format: str) -> None:
    """Show the desired commit, the last rejected one and every deployment, step by step.

    Exit 0 when nothing is failed or unplaceable, 1 otherwise, 2 on usage errors.
    """
    from . import inventory, status

    try:
        found = status.fetch(orchestrator, token=os.environ.get("GITOPS_API_TOKEN") or None)
    except inventory.InventoryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(status.render(found, output_format))
    sys.exit(0 if status.is_ok(found) else 1)


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
@click.option(
    "--fault",
    type=click.Choice([fault.value for fault in Fault]),
    help="Misbehave on every request (for manual tests): hang, error, html, nested, ...",
)
@click.option(
    "--fault-after",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds after the start before --fault applies (so it can be introduced first).",
)
def device(
    name: str,
    host: str,
    port: int,
    orchestrator: str | None,
    interfaces: str | None,
    mdns: bool,
    data_dir: Path | None,
    fault: str | None,
    fault_after: float,
) -> None:
    """A simulated supervisor, for demos and tests (not a production supervisor)."""
    if "." in name or not name:
        raise click.UsageError("a device name is not empty and has no dot")
    names = [item.strip() for item in interfaces.split(",") if item.strip()] if interfaces else None
    logging.config.dictConfig(logformat.config(LogSettings()))
    run_device(
        name, host=host, port=port, orchestrator_url=orchestrator, interfaces=names, mdns=mdns,
        data_dir=data_dir, fault=Fault(fault) if fault else None, fault_after=fault_after,
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
@_verify_signatures("a head")
def plan(
    base: str,
    head: str,
    repo_path: Path,
    inventory_source: str | None,
    output_format: str,
    prune_limit: float,
    signers: Path | None,
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
        with _verifier(signers) as verifier:
            planned = review.plan_change(
                repo_path, base=base, head=head, inventory=fleet, now=time.time(),
                prune_limit=prune_limit, verifier=verifier,
            )  # fmt: skip
    except (RepoError, inventory.InventoryError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(report.render(planned, output_format))
    if output_format == "json":
        click.echo(f"plan: {planned.review.summary}", err=True)
        for warning in planned.warnings:
            click.echo(f"warning: {warning}", err=True)
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


@main.command("import-init")
@click.argument("source", metavar="DIR", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--into",
    required=True,
    metavar="REPO",
    type=click.Path(path_type=Path),
    help="The repository to create: a new folder, or an empty clone of your remote.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--static-addresses",
    is_flag=True,
    help="Write each device's last known address into devices.yaml (for sites whose "
    "supervisors neither advertise over mDNS nor register themselves).",
)
@click.option(
    "--max-binary-size",
    type=click.IntRange(min=1),
    default=LoaderSettings.max_binary_size,
    envvar="GITOPS_MAX_BINARY_SIZE",
    show_default=True,
    help="Largest wasm binary or data file carried over, in bytes.",
)
def import_init(
    source: Path, into: Path, output_format: str, static_addresses: bool, max_binary_size: int
) -> None:
    """Turn the original orchestrator's init/ export in DIR into a git repository at REPO.

    DIR holds device/, module/ and deployment/ (the JSON of GET /file/device, /file/module and
    /file/manifest) and files/. Every record not carried over is reported with the reason.
    Exit 0 when everything was imported, 1 when something was not, 2 on usage errors.
    """
    from . import importing
    from .errors import ExportError

    try:
        imported = importing.run(
            source, into, settings=LoaderSettings(max_binary_size=max_binary_size),
            static_addresses=static_addresses,
        )  # fmt: skip
    except ExportError as exc:
        raise click.UsageError(str(exc)) from exc
    if output_format == "json":
        click.echo(json.dumps(importing.as_json(imported), indent=2, ensure_ascii=False))
    else:
        click.echo(importing.text(imported))
    sys.exit(1 if imported.problems else 0)


@contextmanager
def _loaded(
    path: Path, ref: str | None, settings: LoaderSettings, signers: Path | None = None
) -> Iterator[LoadResult]:
    if ref is None:
        if signers is not None:
            raise click.UsageError("--verify-signatures checks commits: give --ref too")
        yield manifests.load(repo.FolderTree(path), settings=settings)
        return
    try:
        with repo.tree_at(path, ref) as tree, _verifier(signers) as verifier:
            result = manifests.load(tree, settings=settings)
            git_dir = Path(tree.repository.git_dir)
            result = signatures.verified(result, verifier, git_dir=git_dir, sha=tree.sha or ref)
    except RepoError as exc:
        raise click.UsageError(str(exc)) from exc
    yield result


@contextmanager
def _verifier(signers: Path | None) -> Iterator[signatures.Verifier | None]:
    if signers is None:
        yield None
        return
    with signatures.Verifier.open(signers) as verifier:
        yield verifier


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
