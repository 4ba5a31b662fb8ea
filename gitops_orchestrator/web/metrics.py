"""`/metrics` in the Prometheus text format, and the readiness probe `/readyz`.

Two kinds of figures, in a registry of our own (never prometheus-client's global one):
- read from the store at each scrape (cached by store version): how old the desired commit
  is, commits in the history by status, devices by state, deploy statuses, and deploy outcomes
  counted from the events as they are recorded;
- measured where things happen: HTTP request durations (`RequestTimer`, an ASGI middleware)
  and reconcile pass durations (`observe_pass`, which the composition root hands the
  reconciler: web and the reconciler never import each other).
Nothing here writes to the store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store import Store
from .responses import JSONResponse, error

logger = logging.getLogger(__name__)

# A pass plans in milliseconds and deploys in up to tens of seconds (devices download modules).
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Cached answers take well under a millisecond; `/execute` waits up to 30 s by default.
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)
# Methods keep their own label; anything else is "other", so clients cannot grow the series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DEVICE_STATES = ("online", "offline", "gone")
COMMIT_STATUSES = ("accepted", "rejected")
DEPLOY_STATUSES = ("synced", "progressing", "failed")
# Event kinds that are deploy outcomes (reconciler `_event`): kind -> (action, outcome).
OUTCOME_KINDS = {
    "deployed": ("deploy", "ok"),
    "deploy_failed": ("deploy", "failed"),
    "undeployed": ("undeploy", "ok"),
    "undeploy_failed": ("undeploy", "failed"),
}
EVENT_BATCH = 500


class Instruments:
    """What is measured as it happens, in a registry of our own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "gitops_reconcile_pass_seconds",
            "Duration of reconcile passes (observe, plan, deploy, record).",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "gitops_http_request_duration_seconds",
            "Duration of HTTP requests until the last byte of the answer, by route template.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )


INSTRUMENTS = Instruments()


def observe_pass(seconds: float) -> None:
    """Record the duration of one reconcile pass (the reconciler calls this after each)."""
    INSTRUMENTS.reconcile_seconds.observe(seconds)


class RequestTimer:
    """ASGI middleware: every HTTP request's duration, labelled by its route's template."""

    def __init__(self, app: ASGIApp, instruments: Instruments | None = None) -> None:
        self.app = app
        self.instruments = instruments or INSTRUMENTS
        # Series by (method, route, status): `labels()` costs more than the observation itself
        # (bench/api.py), and the keys are few (route templates, not paths).
        self._series: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception before the answer started is a 500 to the client

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            # The router records the matched route in the scope; its template, never the raw
            # path, is the label (paths hold names: one series per device would be too many).
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            key = (method, route, status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self.instruments.http_seconds.labels(
                    method, route, str(status)
                )
            series.observe(time.perf_counter() - start)


# Figures read from the store.


@dataclass(frozen=True)
class Facts:
    """One reading of the store, for one scrape."""

    desired_seen_at: float | None
    source_error: bool
    commits: Mapping[str, int]
    devices: Mapping[str, int]
    deploy_statuses: Mapping[str, int]
    outcomes: Mapping[tuple[str, str], int]


@dataclass
class _Reading:
    """What one store's scrapes share: the last facts (by version) and the outcome tally."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    version: int = -1
    facts: Facts | None = None
    after: int = 0
    """The id of the newest event counted."""
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)


_READINGS: weakref.WeakKeyDictionary[Store, _Reading] = weakref.WeakKeyDictionary()
_READINGS_LOCK = threading.Lock()


def read_facts(store: Store) -> Facts:
    """The store's figures; reads again only when the store changed. Runs in a worker thread."""
    with _READINGS_LOCK:
        reading = _READINGS.setdefault(store, _Reading())
    with reading.lock:
        version = store.version
        if reading.facts is not None and reading.version == version:
            return reading.facts
        _count_outcomes(store, reading)
        state = store.sync_state()
        commits = dict.fromkeys(COMMIT_STATUSES, 0)
        for commit in store.commits(limit=max(1, store.commit_count())):
            commits[commit.status] = commits.get(commit.status, 0) + 1
        devices = dict.fromkeys(DEVICE_STATES, 0)
        for record in store.devices():
            devices[record.state] = devices.get(record.state, 0) + 1
        statuses = dict.fromkeys(DEPLOY_STATUSES, 0)
        for status in store.deploy_statuses():
            statuses[status.status] = statuses.get(status.status, 0) + 1
        reading.facts = Facts(
            desired_seen_at=state.desired.seen_at if state.desired else None,
            source_error=state.error is not None,
            commits=commits,
            devices=devices,
            deploy_statuses=statuses,
            outcomes=dict(reading.outcomes),
        )
        reading.version = version
        return reading.facts


def _count_outcomes(store: Store, reading: _Reading) -> None:
    # Counted as events arrive, so the counter only grows (events themselves are trimmed).
    while True:
        rows = store.events_after(reading.after, limit=EVENT_BATCH)
        for row in rows:
            reading.after = row[0]
            outcome = OUTCOME_KINDS.get(row[2])
            if outcome is not None:
                reading.outcomes[outcome] = reading.outcomes.get(outcome, 0) + 1
        if len(rows) < EVENT_BATCH:
            return


class _Scrape(Collector):
    """The instruments and one reading of the store, as metric families."""

    def __init__(
        self,
        facts: Facts,
        *,
        now: float,
        instruments: Instruments,
        log_counts: Mapping[str, int],
    ) -> None:
        self.facts, self.now, self.instruments = facts, now, instruments
        self.log_counts = log_counts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        facts = self.facts
        age = GaugeMetricFamily(
            "gitops_sync_age_seconds",
            "Seconds since the desired commit was seen; no sample before the first one.",
        )
        if facts.desired_seen_at is not None:
            age.add_metric([], max(0.0, self.now - facts.desired_seen_at))
        yield age
        yield GaugeMetricFamily(
            "gitops_source_error",
            "1 while the last fetch or read of the repository failed, else 0.",
            value=1.0 if facts.source_error else 0.0,
        )
        yield _labelled(
            GaugeMetricFamily(
                "gitops_commits", "Commits in the kept history, by status.", labels=["status"]
            ),
            facts.commits,
        )
        yield _labelled(
            GaugeMetricFamily("gitops_devices", "Known devices, by state.", labels=["state"]),
            facts.devices,
        )
        yield _labelled(
            GaugeMetricFamily(
                "gitops_deploy_statuses",
                "(device, deployment) pairs the desired commit places, by deploy status.",
                labels=["status"],
            ),
            facts.deploy_statuses,
        )
        outcomes = CounterMetricFamily(
            "gitops_deploy_outcomes",
            "Deploys and undeploys done by the reconciler, by outcome (counted from events).",
            labels=["action", "outcome"],
        )
        for action in ("deploy", "undeploy"):
            for outcome in ("ok", "failed"):
                outcomes.add_metric([action, outcome], facts.outcomes.get((action, outcome), 0))
        yield outcomes
        lines = CounterMetricFamily(
            "gitops_device_log_lines",
            "Device log lines since start, by outcome (unknown: not from a known device at "
            "one of its addresses).",
            labels=["outcome"],
        )
        for outcome in LOG_OUTCOMES:
            lines.add_metric([outcome], self.log_counts.get(outcome, 0))
        yield lines


def _labelled(family: GaugeMetricFamily, values: Mapping[str, int]) -> GaugeMetricFamily:
    for label, value in sorted(values.items()):
        family.add_metric([label], value)
    return family


def exposition(
    facts: Facts,
    *,
    now: float,
    instruments: Instruments | None = None,
    log_counts: Mapping[str, int] | None = None,
) -> bytes:
    """The text format of the instruments, `facts` and the log intake's counts."""
    instruments = instruments or INSTRUMENTS
    scrape = _Scrape(facts, now=now, instruments=instruments, log_counts=log_counts or {})
    return generate_latest(instruments.registry) + generate_latest(scrape)


LOG_OUTCOMES = ("accepted", "malformed", "unknown", "rate_limited", "overflow", "written")


async def metrics(request: Request) -> Response:
    store: Store = request.state.store
    facts = await asyncio.to_thread(read_facts, store)
    body = exposition(facts, now=time.time(), log_counts=request.app.state.log_counts)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz(request: Request) -> Response:
    """200 once there is something to serve: a desired commit, or a first sync that ended."""
    store: Store = request.state.store
    try:
        state = await asyncio.to_thread(store.sync_state)
    except Exception as exc:  # a closed or broken store: the reason is the answer
        logger.debug("readiness: the store cannot be read", exc_info=True)
        return error(503, f"the store cannot be read: {exc}")
    if state.desired is not None:
        return JSONResponse({"status": "ready", "desired": state.desired.sha})
    if state.last_seen is not None:
        # The first commit was rejected: nothing to deploy, but the problems are there to see.
        return JSONResponse({"status": "ready", "desired": None})
    reason = "waiting for the first sync of the repository"
    if state.error is not None:
        reason += f" (last attempt failed: {state.error})"
    return error(503, reason)


ROUTES: list[BaseRoute] = [Route("/metrics", metrics), Route("/readyz", readyz)]

MIDDLEWARE: list[Middleware] = [Middleware(RequestTimer)]
"""Outermost: requests refused by the token guard are timed too."""
