"""Every default of the orchestrator, in one place.

Each group is a frozen dataclass handed only to the component that owns it; `cli` builds them
from flags and `GITOPS_*` environment variables. Sizes are bytes, durations float seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

MIB = 1024 * 1024


@dataclass(frozen=True)
class LoaderSettings:
    """How much of a repository the loader is willing to read."""

    max_binary_size: int = 64 * MIB
    """Largest wasm binary or data file accepted, in bytes (`GITOPS_MAX_BINARY_SIZE`).
    64 MiB is far above any module an IoT device can run, and small enough that a commit of a
    stray disk image is a problem instead of an outage."""

    max_manifest_size: int = 1 * MIB
    """Largest YAML file accepted, in bytes. Hand-written manifests are a few KiB."""

    max_yaml_nodes: int = 100_000
    """Most YAML nodes one file may expand to, so alias bombs ("billion laughs") stop early."""


@dataclass(frozen=True)
class StoreSettings:
    """How much history the SQLite store keeps."""

    keep_snapshots: int = 20
    """Accepted commits whose snapshots (and binaries) are kept (`GITOPS_KEEP_SNAPSHOTS`); the
    blobs no other kept snapshot uses are deleted. 20 covers a day of busy pushes and rollbacks."""

    keep_commits: int = 1000
    """Commits kept in the history, accepted or rejected (`GITOPS_KEEP_COMMITS`), besides those
    whose snapshots are kept."""


@dataclass(frozen=True)
class SyncSettings:
    """How the followed repository is looked at."""

    poll_interval: float = 10.0
    """Seconds between looks at a local repository's branch (`GITOPS_POLL_INTERVAL`). Changes
    are seen at once through file-system events; polling only covers missed events."""

    fetch_interval: float = 30.0
    """Seconds between fetches of a remote repository (`GITOPS_FETCH_INTERVAL`); a webhook
    fetches at once."""

    verify_signatures: Path | None = None
    """An SSH allowed-signers file or an OpenPGP keyring (`--verify-signatures`,
    `GITOPS_VERIFY_SIGNATURES`): a branch head not signed by one of its keys is rejected like
    an invalid commit. None checks nothing, as git itself does not."""

    retry_initial: float = 1.0
    """Seconds before the first retry after a failed fetch; doubled after each failure."""

    retry_max: float = 300.0
    """Longest wait between retries, in seconds: a remote that is down is still tried every
    five minutes, and a webhook or a local change wakes the loop earlier."""


@dataclass(frozen=True)
class WebSettings:
    """The HTTP server."""

    host: str = "0.0.0.0"
    """Address to listen on (`--host`, `GITOPS_HOST`); all interfaces, as devices must reach us."""

    port: int = 3000
    """Port to listen on (`--port`, `GITOPS_PORT`): the original orchestrator's port, which
    supervisors fall back to."""

    public_url: str | None = None
    """Base URL devices use to reach us (`--public-url`, `GITOPS_PUBLIC_URL`); by default
    `http://<primary address>:<port>`."""

    webhook_secret: str | None = field(default=None, repr=False)
    """Shared secret of `POST /hooks/git` (`GITOPS_WEBHOOK_SECRET`, or a file named by
    `GITOPS_WEBHOOK_SECRET_FILE`); without one the webhook answers 403."""

    max_hook_body: int = 25 * MIB
    """Largest webhook body read, in bytes: GitHub's own cap on webhook payloads."""

    max_log_body: int = 64 * 1024
    """Largest `POST /device/logs` body, in bytes; larger ones get 413 (design §3)."""

    api_token: str | None = field(default=None, repr=False)
    """Access token for the pages, `/api/v1`, `/openapi.json`, `/metrics`, `/execute`,
    `/file/device` and `/file/manifest` (`--api-token`, `GITOPS_API_TOKEN`, or a file named by
    `GITOPS_API_TOKEN_FILE`); without one nothing is checked. Device routes and probes never
    need it."""

    request_deadline: float = 10.0
    """Seconds a client has to send a whole request, headers and body, from the moment the
    connection is ready for it (`GITOPS_REQUEST_DEADLINE`); slower clients are cut off. A
    supervisor sends its few hundred bytes at once; 10 s leaves room for a 16 MiB `/execute`
    upload on a slow link, and ends a slow-client attack quickly."""

    max_connections: int = 4096
    """Open client connections at most (`GITOPS_MAX_CONNECTIONS`); past it, the oldest one
    still sending its request is dropped. Lowered to half the open-file limit when that is
    smaller. 4,096 is a log POST in flight from each of thousands of devices."""

    try_it: bool = True
    """Show the form that runs a deployment on its page (`GITOPS_TRY_IT`); off hides the form,
    while `POST /execute` itself stays available to tools."""


@dataclass(frozen=True)
class ReconcileSettings:
    """How the fleet is driven towards the desired commit."""

    interval: float = 10.0
    """Seconds between reconcile passes when nothing wakes the loop (`GITOPS_RECONCILE_INTERVAL`):
    commits, device changes and outcomes wake it at once; the timer repairs drift."""

    prune_limit: float = 0.5
    """Largest fraction (0 to 1) of the fleet's running deployments one commit may undeploy
    before it is held (`--prune-limit`, `GITOPS_PRUNE_LIMIT`); 1 allows everything."""

    return_after: float = 30.0
    """Seconds a named device must have been back online before its steps return to it from a
    failover (`GITOPS_RETURN_AFTER`): a device that flaps does not drag work back and forth."""

    settle_window: float = 5.0
    """Seconds after the orchestrator starts during which steps without `device` or `selector`
    are not placed anew (`--settle-window`, `GITOPS_SETTLE_WINDOW`): a fleet comes up over
    seconds, and steps placed at once would all land on the first devices seen. 5 s covers
    devices that were running when the orchestrator restarted; later ones are balanced onto."""

    balance_threshold: int = 2
    """Steps more than the least loaded device that could take it at which a step without
    `device` or `selector` moves there (`--balance-threshold`, `GITOPS_BALANCE_THRESHOLD`).
    2, the least that makes the fleet more even; raise it for fewer moves."""

    balance_moves: int = 100
    """Steps moved at most in one reconcile pass to balance the fleet (`--balance-moves`,
    `GITOPS_BALANCE_MOVES`; 0 turns balancing off): each move redeploys its deployment, so a
    burst of new devices is absorbed over a few passes instead of all at once."""

    concurrency: int = 32
    """Devices deployed to at once (`GITOPS_DEPLOY_CONCURRENCY`), over all per-device workers;
    each device's own actions run one after the other. A hanging device holds one slot."""

    attempts: int = 3
    """Tries of one deploy or undeploy in a row before it is marked failed; the device's worker
    then waits its own backoff (see `failed_retry_max`) and tries again."""

    retry_backoff: float = 0.5
    """Seconds before the second try, doubled for each next one (with jitter)."""

    failed_retry_max: float = 60.0
    """Longest wait, in seconds, before a device whose deploys failed is tried again; the wait
    doubles from `retry_backoff` with each failed round of that device, with jitter."""


@dataclass(frozen=True)
class DeviceSettings:
    """How devices are watched, and how much of what they send is kept."""

    registration_window: float = 5.0
    """Seconds after a device's introduction (mDNS, `devices.yaml`) in which its first
    registration belongs to the same start rather than a restart (`--registration-window`,
    `GITOPS_REGISTRATION_WINDOW`). A supervisor registers about 0.4 s after it announces
    itself; 5 s covers a slow device, and a real restart takes longer than that to reach us."""

    health_interval: float = 10.0
    """Seconds between health checks of each device (`GITOPS_HEALTH_INTERVAL`)."""

    health_failures: int = 3
    """Consecutive failed checks after which a device is offline (`GITOPS_HEALTH_FAILURES`); the
    next successful check makes it online again."""

    health_timeout: float = 5.0
    """Seconds one health check may take before it counts as failed."""

    health_concurrency: int = 200
    """Health checks in flight at once: with the timeout, 1,000 devices are swept within one
    interval even when many do not answer."""

    health_history: int = 100
    """Health checks kept per device in SQLite (state changes are kept as events)."""

    log_rate: float = 20.0
    """Log entries per second accepted from one device; more are counted and dropped, so one
    chatty device cannot slow the others (`GITOPS_LOG_RATE`)."""

    log_burst: int = 100
    """Log entries one device may send at once above `log_rate`."""

    log_ring: int = 1000
    """Log entries kept per device; older ones are dropped (`GITOPS_LOG_RING`)."""

    log_buffer: int = 10_000
    """Log entries waiting to be written at most; when the database falls behind, more are
    counted and dropped instead of filling memory."""


@dataclass(frozen=True)
class DiscoverySettings:
    """How supervisors are found over mDNS (protocol §1)."""

    mdns_interfaces: str = "all"
    """Where to browse for `_webthing._tcp.local.` (`--mdns-interfaces`,
    `GITOPS_MDNS_INTERFACES`): `all` (every interface, what a real site needs), `none` (no
    mDNS at all: devices come from self-registration and `devices.yaml`), or comma-separated
    IP addresses of this host's interfaces. Tests, demos and benchmarks never use `all`: they
    name loopback or network namespaces of their own."""

    resolve_timeout: float = 3.0
    """Seconds to wait for an announced service's SRV, TXT and address records. They normally
    come with the announcement itself; 3 s covers a lossy network and a slow device."""


@dataclass(frozen=True)
class LogSettings:
    """The orchestrator's own log lines, on stderr."""

    level: str = "info"
    """`debug`, `info`, `warning` or `error` (`--log-level`, `GITOPS_LOG_LEVEL`). At info each
    state change (commit accepted, rejected or held; device online, offline or restarted;
    deploy failed) is one line; those that need a person are warnings. Only debug adds a line
    per HTTP request and per health check."""

    format: str = "text"
    """`text` (`<time> <LEVEL> <logger>: <message>`) or `json` (one object per line, for log
    collectors) (`--log-format`, `GITOPS_LOG_FORMAT`)."""


# Settings without a flag of their own, and the variable of each (`cli` passes the environment
# in; this module never reads it). Settings with a flag take their variable in `cli`'s option.
VARIABLES: dict[type, dict[str, str]] = {
    LoaderSettings: {
        "max_manifest_size": "GITOPS_MAX_MANIFEST_SIZE",
        "max_yaml_nodes": "GITOPS_MAX_YAML_NODES",
    },
    SyncSettings: {"retry_initial": "GITOPS_RETRY_INITIAL", "retry_max": "GITOPS_RETRY_MAX"},
    WebSettings: {
        "max_hook_body": "GITOPS_MAX_HOOK_BODY",
        "max_log_body": "GITOPS_MAX_LOG_BODY",
        "try_it": "GITOPS_TRY_IT",
    },
    ReconcileSettings: {
        "attempts": "GITOPS_DEPLOY_ATTEMPTS",
        "retry_backoff": "GITOPS_DEPLOY_RETRY_BACKOFF",
        "failed_retry_max": "GITOPS_FAILED_RETRY_MAX",
    },
    DeviceSettings: {
        "health_timeout": "GITOPS_HEALTH_TIMEOUT",
        "health_concurrency": "GITOPS_HEALTH_CONCURRENCY",
        "health_history": "GITOPS_HEALTH_HISTORY",
        "log_rate": "GITOPS_LOG_RATE",
        "log_burst": "GITOPS_LOG_BURST",
        "log_ring": "GITOPS_LOG_RING",
        "log_buffer": "GITOPS_LOG_BUFFER",
    },
    DiscoverySettings: {"resolve_timeout": "GITOPS_RESOLVE_TIMEOUT"},
}

Group = TypeVar("Group")
_FALSE = frozenset({"0", "false", "no", "off"})
_TRUE = frozenset({"1", "true", "yes", "on"})


def with_variables(group: Group, environ: Mapping[str, str]) -> Group:
    """`group` with the settings of `VARIABLES` that `environ` sets; ValueError names a bad one.

    Numbers must be above 0 (each is a size, a count or a duration); booleans are
    true/false, yes/no, on/off or 1/0.
    """
    changes: dict[str, Any] = {}
    for name, variable in VARIABLES.get(type(group), {}).items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        current = getattr(group, name)
        if isinstance(current, bool):
            if raw.lower() not in _TRUE | _FALSE:
                raise ValueError(f"{variable}={raw!r} is not true or false")
            changes[name] = raw.lower() in _TRUE
            continue
        try:
            value = type(current)(raw)
        except ValueError:
            kind = "a whole number" if isinstance(current, int) else "a number"
            raise ValueError(f"{variable}={raw!r} is not {kind}") from None
        if value <= 0:
            raise ValueError(f"{variable}={raw!r} must be above 0")
        changes[name] = value
    return dataclasses.replace(group, **changes) if changes else group  # type: ignore[type-var]
