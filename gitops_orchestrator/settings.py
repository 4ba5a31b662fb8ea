"""Every default of the orchestrator, in one place.

Each group is a frozen dataclass handed only to the component that owns it; `cli` builds them
from flags and `GITOPS_*` environment variables. Sizes are bytes, durations float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Devices deployed to at once (`GITOPS_DEPLOY_CONCURRENCY`); each device's own actions run
    one after the other."""

    attempts: int = 3
    """Tries of one deploy or undeploy within a pass before it is marked failed."""

    retry_backoff: float = 0.5
    """Seconds before the second try, doubled for each next one (with jitter)."""

    failed_retry_max: float = 60.0
    """Longest wait, in seconds, before a device whose deploys failed is tried again; the wait
    doubles from `retry_backoff` with each failing pass."""


@dataclass(frozen=True)
class DeviceSettings:
    """How devices are watched, and how much of what they send is kept."""

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
