"""The fleet's tables: devices, what each runs, step placements, deploy statuses and events.

A part of `Store` (mixed into it), kept apart from the commit tables so that each module stays
readable. Writers are the device routes (introductions, restarts) and the reconciler, which
records a whole pass in one transaction; readers are the reconciler and the web layer.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

FLEET_SCHEMA = """
    CREATE TABLE devices (
        device TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        addresses TEXT NOT NULL,
        port INTEGER NOT NULL,
        interfaces TEXT NOT NULL,
        platform TEXT NOT NULL,
        origin TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('online', 'offline', 'gone')),
        introduced_at REAL NOT NULL,
        online_since REAL,
        last_seen REAL
    );
    CREATE TABLE applied (
        device TEXT NOT NULL,
        deployment TEXT NOT NULL,
        body_digest TEXT NOT NULL,
        applied_at REAL NOT NULL,
        PRIMARY KEY (device, deployment)
    );
    CREATE TABLE step_placements (
        deployment TEXT NOT NULL,
        step INTEGER NOT NULL,
        device TEXT,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (deployment, step)
    );
    CREATE TABLE deploy_statuses (
        device TEXT NOT NULL,
        deployment TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        attempts INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (device, deployment)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        device TEXT,
        deployment TEXT,
        commit_sha TEXT,
        message TEXT NOT NULL
    );
    CREATE INDEX events_by_device ON events (device, id);
    CREATE INDEX events_by_deployment ON events (deployment, id)
"""
HEALTH_AND_LOGS_SCHEMA = """
    ALTER TABLE devices ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN orchestrator_set INTEGER;
    ALTER TABLE devices ADD COLUMN health TEXT;
    ALTER TABLE devices ADD COLUMN checked_at REAL;
    CREATE TABLE health_checks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        at REAL NOT NULL,
        ok INTEGER NOT NULL,
        report TEXT,
        error TEXT
    );
    CREATE INDEX health_checks_by_device ON health_checks (device, id);
    CREATE TABLE device_logs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        at REAL NOT NULL,
        level TEXT,
        message TEXT NOT NULL,
        entry TEXT NOT NULL
    );
    CREATE INDEX device_logs_by_device ON device_logs (device, id)
"""
INCARNATIONS_SCHEMA = """
    ALTER TABLE devices ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE devices ADD COLUMN started_at REAL;
    ALTER TABLE applied ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE applied ADD COLUMN commit_sha TEXT;
    ALTER TABLE deploy_statuses ADD COLUMN body_digest TEXT;
    ALTER TABLE deploy_statuses ADD COLUMN pending_since REAL;
    ALTER TABLE deploy_statuses ADD COLUMN commit_sha TEXT
"""
"""Device incarnations (design §2, Restart): what a device runs is what it acknowledged since its
last start. Rows of `applied` from before this migration carry incarnation 0, older than any
device's, so an upgraded orchestrator re-posts them once instead of trusting them."""
# Each placement keeps when it got its device and why, while the device stays the same.
PLACED_SINCE_SCHEMA = """
    ALTER TABLE step_placements ADD COLUMN placed_at REAL;
    ALTER TABLE step_placements ADD COLUMN placed_reason TEXT
"""
# Events are history, not state: the newest are kept, the rest dropped as new ones come.
MAX_EVENTS = 100_000


@dataclass(frozen=True)
class DeviceRecord:
    device: str
    url: str
    addresses: tuple[str, ...]
    port: int
    interfaces: tuple[str, ...]
    platform: Mapping[str, Any]
    origin: str
    state: str
    introduced_at: float
    online_since: float | None
    last_seen: float | None
    failures: int = 0
    """Consecutive failed health checks."""
    orchestrator_set: bool | None = None
    """The last `Custom-Orchestrator-Set` header: None before the first health check."""
    health: Mapping[str, Any] | None = None
    """The last health report (opaque)."""
    checked_at: float | None = None
    incarnation: int = 1
    """Grows with every restart sign: records of an older one say nothing of what it runs."""
    started_at: float | None = None
    """When the current incarnation started, as far as we know (None: unknown)."""


@dataclass(frozen=True)
class HealthCheck:
    """One health check's result, as the health checker hands it to `record_health`."""

    device: str
    at: float
    ok: bool
    report: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class LogEntry:
    device: str
    at: float
    level: str | None
    message: str
    entry: Mapping[str, Any]


@dataclass(frozen=True)
class StepRecord:
    deployment: str
    step: int
    device: str | None
    status: str
    reason: str
    """Why the step is where it is in the latest pass (`sticky on sup2` once it stays)."""
    updated_at: float
    placed_at: float | None = None
    """When the step got its device; kept by `record_pass` while the device stays."""
    placed_reason: str | None = None
    """The reason of the pass that gave the step its device, kept with `placed_at`."""


@dataclass(frozen=True)
class Event:
    kind: str
    message: str
    device: str | None = None
    deployment: str | None = None
    commit_sha: str | None = None


@dataclass(frozen=True)
class StatusRecord:
    device: str
    deployment: str
    status: str
    error: str | None
    attempts: int
    updated_at: float
    body_digest: str | None = None
    """The desired body's digest the status is about."""
    pending_since: float | None = None
    """Since when the desired body waits to be acknowledged (None once synced)."""
    commit_sha: str | None = None
    """The commit the desired body comes from."""


@dataclass(frozen=True)
class AppliedRecord:
    """A body a device acknowledged, and under which of its incarnations."""

    device: str
    deployment: str
    body_digest: str
    applied_at: float
    incarnation: int
    commit_sha: str | None


@dataclass(frozen=True)
class Applied:
    """What one device's worker got done: written only if the incarnation is still current."""

    device: str
    incarnation: int
    now: float
    commit_sha: str | None
    deployed: tuple[tuple[str, str], ...] = ()
    """(deployment, body digest) pairs the device acknowledged."""
    removed: tuple[str, ...] = ()
    """Deployments the device no longer runs."""
    failed: tuple[tuple[str, str | None, str, int], ...] = ()
    """(deployment, body digest or None for an undeploy, error, attempts) that failed."""
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class PassRecord:
    """Everything one reconcile pass learned, written in one transaction."""

    now: float
    commit_sha: str | None
    steps: tuple[StepRecord, ...] = ()
    statuses: tuple[StatusRecord, ...] = ()
    applied: tuple[tuple[str, str, str], ...] = ()
    """(device, deployment, body digest) pairs that now run."""
    removed: tuple[tuple[str, str], ...] = ()
    """(device, deployment) pairs that no longer run."""
    events: tuple[Event, ...] = ()


class FleetRecords:
    _db: sqlite3.Connection
    _lock: threading.RLock

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    # devices

    def upsert_device(self, record: DeviceRecord, *, event: Event | None = None) -> None:
        """Add or refresh a device (its address, interfaces, state) and log why."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device) DO UPDATE SET url = excluded.url, "
                "addresses = excluded.addresses, port = excluded.port, "
                "interfaces = excluded.interfaces, platform = excluded.platform, "
                "origin = excluded.origin, state = excluded.state, "
                "online_since = excluded.online_since, last_seen = excluded.last_seen, "
                "failures = excluded.failures, orchestrator_set = excluded.orchestrator_set, "
                "health = excluded.health, checked_at = excluded.checked_at",
                _device_row(record),
            )
            if event is not None:
                insert_events(db, record.last_seen or record.introduced_at, [event])

    def forget_applied(self, device: str, *, now: float, why: str) -> None:
        """A restart sign: the device lost what it ran; a new incarnation started `now`."""
        logger.info("device %s restarted (%s): redeploying what it should run", device, why)
        self.new_incarnation(device, now=now, started_at=now, why=why)

    def new_incarnation(
        self, device: str, *, now: float, started_at: float | None, why: str, kind: str = "restart"
    ) -> int:
        """Bump the device's incarnation (`started_at` None: unknown); the new one, 0 if unknown.

        Applied rows are kept under their old incarnation: they no longer count as running,
        but they say what the device ran (a prune hold gives it back) and what may still be
        there to undeploy after an unknown start.
        """
        with self._transaction() as db:
            row = db.execute(
                "UPDATE devices SET incarnation = incarnation + 1, started_at = ? "
                "WHERE device = ? RETURNING incarnation",
                (started_at, device),
            ).fetchone()
            if row is None:
                return 0
            insert_events(db, now, [Event(kind, why, device=device)])
        return int(row[0])

    def unknown_incarnations(self, *, now: float, why: str) -> None:
        """Every device may have restarted unseen (this orchestrator just started)."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE devices SET incarnation = incarnation + 1, started_at = NULL"
            ).rowcount
            if changed:
                insert_events(db, now, [Event("incarnations", f"{why} ({changed} devices)")])

    def mark_orchestrator_set(self, device: str) -> None:
        """Our `/register` succeeded: from now on the device answers `true` (protocol §2)."""
        with self._transaction() as db:
            db.execute("UPDATE devices SET orchestrator_set = 1 WHERE device = ?", (device,))

    def devices(self) -> list[DeviceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM devices ORDER BY device").fetchall()
        return [_device_record(row) for row in rows]

    def device(self, name: str) -> DeviceRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM devices WHERE device = ?", (name,)).fetchone()
        return _device_record(row) if row else None

    # what runs where

    def applied(self) -> dict[str, dict[str, str]]:
        """Device -> deployment -> digest of the body it acknowledged since its last start."""
        return self._digests(
            "SELECT a.device, a.deployment, a.body_digest FROM applied a "
            "JOIN devices d ON d.device = a.device AND d.incarnation = a.incarnation"
        )

    def recorded(self) -> dict[str, dict[str, str]]:
        """Device -> deployment -> digest of the last body it acknowledged, in any incarnation."""
        return self._digests("SELECT device, deployment, body_digest FROM applied")

    def _digests(self, query: str) -> dict[str, dict[str, str]]:
        result: dict[str, dict[str, str]] = {}
        with self._lock:
            for device, deployment, digest in self._db.execute(query):
                result.setdefault(device, {})[deployment] = digest
        return result

    def ledger(self, device: str) -> list[AppliedRecord]:
        """The bodies `device` acknowledged under its current incarnation."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.device, a.deployment, a.body_digest, a.applied_at, a.incarnation, "
                "a.commit_sha FROM applied a JOIN devices d ON d.device = a.device "
                "AND d.incarnation = a.incarnation WHERE a.device = ? ORDER BY a.deployment",
                (device,),
            ).fetchall()
        return [AppliedRecord(*row) for row in rows]

    def record_applied(self, done: Applied) -> bool:
        """One device's outcomes, in one transaction; False when they were discarded.

        Compared with the device row in the same transaction: outcomes of an older
        incarnation (the device restarted while they were in flight) say nothing of what the
        new one runs, so they are dropped, and the statuses stay as the pass wrote them.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT incarnation FROM devices WHERE device = ?", (done.device,)
            ).fetchone()
            if row is None or row[0] != done.incarnation:
                return False
            db.executemany(
                "INSERT INTO applied VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, deployment) "
                "DO UPDATE SET body_digest = excluded.body_digest, "
                "applied_at = excluded.applied_at, incarnation = excluded.incarnation, "
                "commit_sha = excluded.commit_sha",
                [
                    (done.device, name, digest, done.now, done.incarnation, done.commit_sha)
                    for name, digest in done.deployed
                ],
            )
            db.executemany(
                "UPDATE deploy_statuses SET status = 'synced', error = NULL, attempts = 0, "
                "updated_at = ?, pending_since = NULL WHERE device = ? AND deployment = ? "
                "AND body_digest = ?",
                [(done.now, done.device, name, digest) for name, digest in done.deployed],
            )
            db.executemany(
                "DELETE FROM applied WHERE device = ? AND deployment = ?",
                [(done.device, name) for name in done.removed],
            )
            db.executemany(
                "UPDATE deploy_statuses SET status = 'failed', error = ?, attempts = ?, "
                "updated_at = ? WHERE device = ? AND deployment = ? AND body_digest = ?",
                [
                    (error, attempts, done.now, done.device, name, digest)
                    for name, digest, error, attempts in done.failed
                    if digest is not None
                ],
            )
            insert_events(db, done.now, done.events, commit_sha=done.commit_sha)
        return True

    def step_placements(self) -> list[StepRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM step_placements ORDER BY deployment, step"
            ).fetchall()
        return [StepRecord(*row) for row in rows]

    def deploy_statuses(self, device: str | None = None) -> list[StatusRecord]:
        """The statuses of the last pass, `synced` only while it is still true.

        A restart sign may have come since the pass: a body acknowledged under an older
        incarnation reads as `progressing` at once, not only after the next pass.
        """
        where, values = ("WHERE s.device = ?", (device,)) if device else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT s.device, s.deployment, CASE WHEN s.status = 'synced' "
                "AND s.body_digest IS NOT NULL AND a.device IS NULL THEN 'progressing' "
                "ELSE s.status END, s.error, s.attempts, s.updated_at, s.body_digest, "
                "CASE WHEN s.status = 'synced' AND s.body_digest IS NOT NULL "
                "AND a.device IS NULL THEN COALESCE(d.started_at, s.updated_at) "
                "ELSE s.pending_since END, "
                "s.commit_sha FROM deploy_statuses s "
                "LEFT JOIN devices d ON d.device = s.device "
                "LEFT JOIN applied a ON a.device = s.device AND a.deployment = s.deployment "
                "AND a.body_digest = s.body_digest AND a.incarnation = d.incarnation "
                f"{where} ORDER BY s.device, s.deployment",
                values,
            ).fetchall()
        return [StatusRecord(*row) for row in rows]

    def record_pass(self, record: PassRecord) -> None:
        """One reconcile pass: placements and statuses replaced, outcomes added, at once."""
        with self._transaction() as db:
            kept = {
                (deployment, step): (device, placed_at, placed_reason)
                for deployment, step, device, placed_at, placed_reason in db.execute(
                    "SELECT deployment, step, device, placed_at, placed_reason "
                    "FROM step_placements WHERE device IS NOT NULL"
                )
            }
            db.execute("DELETE FROM step_placements")
            db.executemany(
                "INSERT INTO step_placements VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (s.deployment, s.step, s.device, s.status, s.reason, s.updated_at,
                     *_placed(s, kept.get((s.deployment, s.step))))
                    for s in record.steps
                ],
            )  # fmt: skip
            # Rows for pairs the reconciler got outside a pass (tests, tools) run under the
            # device's current incarnation.
            db.executemany(
                "INSERT INTO applied SELECT ?, ?, ?, ?, incarnation, ? FROM devices "
                "WHERE device = ?1 ON CONFLICT (device, deployment) DO UPDATE SET "
                "body_digest = excluded.body_digest, applied_at = excluded.applied_at, "
                "incarnation = excluded.incarnation, commit_sha = excluded.commit_sha",
                [
                    (device, dep, digest, record.now, record.commit_sha)
                    for device, dep, digest in record.applied
                ],
            )
            _replace_statuses(db, record.statuses, now=record.now)
            db.executemany(
                "DELETE FROM applied WHERE device = ? AND deployment = ?", record.removed
            )
            insert_events(db, record.now, record.events, commit_sha=record.commit_sha)

    # health and logs

    def record_health(
        self, checks: Iterable[HealthCheck], devices: Iterable[DeviceRecord], *, keep: int
    ) -> None:
        """A health sweep: each device's new state and the checks, kept `keep` per device."""
        checks = list(checks)
        with self._transaction() as db:
            db.executemany(
                "UPDATE devices SET state = ?, online_since = ?, last_seen = ?, failures = ?, "
                "orchestrator_set = ?, health = ?, checked_at = ? WHERE device = ? "
                # A goodbye that came during the sweep wins over the sweep's older view.
                "AND state != 'gone'",
                [
                    (
                        d.state, d.online_since, d.last_seen, d.failures,
                        d.orchestrator_set,
                        None if d.health is None else json.dumps(d.health),
                        d.checked_at, d.device,
                    )
                    for d in devices
                ],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO health_checks (device, at, ok, report, error) VALUES (?, ?, ?, ?, ?)",
                [
                    (c.device, c.at, c.ok, None if c.report is None else json.dumps(c.report),
                     c.error)
                    for c in checks
                ],
            )  # fmt: skip
            _keep_newest(db, "health_checks", keep, (c.device for c in checks))

    def health_checks(self, device: str, *, limit: int = 20) -> list[HealthCheck]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device, at, ok, report, error FROM health_checks WHERE device = ? "
                "ORDER BY id DESC LIMIT ?",
                (device, limit),
            ).fetchall()
        return [
            HealthCheck(d, at, bool(ok), None if r is None else json.loads(r), e)
            for d, at, ok, r, e in rows
        ]

    def add_logs(self, entries: Iterable[LogEntry], *, keep: int) -> None:
        """Log entries from devices, kept `keep` per device (a ring)."""
        entries = list(entries)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO device_logs (device, at, level, message, entry) "
                "VALUES (?, ?, ?, ?, ?)",
                [(e.device, e.at, e.level, e.message, json.dumps(e.entry)) for e in entries],
            )
            _keep_newest(db, "device_logs", keep, (e.device for e in entries))

    def logs(self, device: str, *, limit: int = 100) -> list[LogEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device, at, level, message, entry FROM device_logs WHERE device = ? "
                "ORDER BY id DESC LIMIT ?",
                (device, limit),
            ).fetchall()
        return [LogEntry(d, at, lvl, msg, json.loads(entry)) for d, at, lvl, msg, entry in rows]

    # events

    def event_count(self, *, device: str | None = None, deployment: str | None = None) -> int:
        clauses, values = _filters(device=device, deployment=deployment)
        with self._lock:
            return _count(self._db, f"SELECT COUNT(*) FROM events {clauses}", values)

    def events_after(self, after: int, *, limit: int = 500) -> list[Any]:
        """Events newer than id `after`, oldest first (for the event stream)."""
        with self._lock:
            rows: list[Any] = self._db.execute(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        return rows

    def add_events(self, events: Iterable[Event], *, now: float) -> None:
        with self._transaction() as db:
            insert_events(db, now, events)

    def events(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        before: int | None = None,
        device: str | None = None,
        deployment: str | None = None,
    ) -> list[tuple[int, float, str, str | None, str | None, str | None, str]]:
        """Events, newest first: (id, at, kind, device, deployment, commit_sha, message)."""
        clauses, values = _filters(before=before, device=device, deployment=deployment)
        query = f"SELECT * FROM events {clauses} ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows: list[Any] = self._db.execute(query, (*values, limit, offset)).fetchall()
        return rows

    # the devices list, filtered and paged in SQL (a page of a large fleet reads one page)

    def devices_matching(
        self, *, states: Collection[str] = (), search: str = "", offset: int = 0, limit: int = 100
    ) -> tuple[int, list[DeviceRecord]]:
        """How many devices match, and one page of them by name: those in `states` (any when
        empty) whose name contains `search`, in any case (`%` and `_` are plain characters)."""
        parts: list[str] = []
        values: list[Any] = []
        if states:
            parts.append(f"state IN ({', '.join('?' * len(states))})")
            values.extend(states)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            parts.append("device LIKE ? ESCAPE '\\'")
            values.append(f"%{escaped}%")
        where = f"WHERE {' AND '.join(parts)}" if parts else ""
        with self._lock:
            total = _count(self._db, f"SELECT COUNT(*) FROM devices {where}", values)
            rows = self._db.execute(
                f"SELECT * FROM devices {where} ORDER BY device LIMIT ? OFFSET ?",
                (*values, limit, offset),
            ).fetchall()
        return total, [_device_record(row) for row in rows]


def _replace_statuses(
    db: sqlite3.Connection, statuses: Iterable[StatusRecord], *, now: float
) -> None:
    """Replace the statuses, deciding `synced` here, against `applied` as it is now.

    A worker may have recorded an acknowledgement since the pass read `applied`: deciding in
    the writer's transaction means a pass never turns a body it did not see back to pending,
    and never says `synced` for a body that is not acknowledged under the current incarnation.
    "Pending since" carries over while the same body keeps waiting.
    """
    current = {
        (device, name): digest
        for device, name, digest in db.execute(
            "SELECT a.device, a.deployment, a.body_digest FROM applied a "
            "JOIN devices d ON d.device = a.device AND d.incarnation = a.incarnation"
        )
    }
    waiting = {
        (device, name): (digest, since)
        for device, name, digest, since in db.execute(
            "SELECT device, deployment, body_digest, pending_since FROM deploy_statuses "
            "WHERE pending_since IS NOT NULL"
        )
    }
    rows = []
    for s in statuses:
        key = (s.device, s.deployment)
        if s.body_digest is not None and current.get(key) == s.body_digest:
            status, error, attempts, since = "synced", None, 0, None
        else:
            status, error, attempts = s.status, s.error, s.attempts
            if status == "synced" and s.body_digest is not None:  # not acknowledged now
                status = "progressing"
            previous = waiting.get(key)
            since = previous[1] if previous and previous[0] == s.body_digest else now
        rows.append(
            (s.device, s.deployment, status, error, attempts, s.updated_at, s.body_digest, since,
             s.commit_sha)
        )  # fmt: skip
    db.execute("DELETE FROM deploy_statuses")
    db.executemany("INSERT INTO deploy_statuses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _placed(
    step: StepRecord, before: tuple[str, float | None, str | None] | None
) -> tuple[float | None, str | None]:
    """`placed_at` and `placed_reason` of a step: kept from `before` while on the same device."""
    if step.device is None:
        return None, None
    if before is not None and before[0] == step.device and before[1] is not None:
        return before[1], before[2]
    return step.placed_at or step.updated_at, step.placed_reason or step.reason


def _count(db: sqlite3.Connection, query: str, values: list[Any]) -> int:
    (number,) = db.execute(query, values).fetchone()
    return int(number)


def _keep_newest(db: sqlite3.Connection, table: str, keep: int, devices: Iterable[str]) -> None:
    """Drop all but the newest `keep` rows of each of `devices` in `table` (a per-device ring).

    Only the devices just written to can have grown, and each is pruned through the
    `(device, id)` index: the cost follows the batch, not the size of the table.
    """
    db.executemany(
        f"DELETE FROM {table} WHERE device = ?1 AND id <= (SELECT id FROM {table} "
        "WHERE device = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        [(device, keep) for device in sorted(set(devices))],
    )


def _filters(**filters: Any) -> tuple[str, list[Any]]:
    parts, values = [], []
    for name, value in filters.items():
        if value is None:
            continue
        parts.append("id < ?" if name == "before" else f"{name} = ?")
        values.append(value)
    return (f"WHERE {' AND '.join(parts)}" if parts else ""), values


def insert_events(
    db: sqlite3.Connection, now: float, events: Iterable[Event], *, commit_sha: str | None = None
) -> None:
    rows = [
        (now, e.kind, e.device, e.deployment, e.commit_sha or commit_sha, e.message) for e in events
    ]
    if not rows:
        return
    db.executemany(
        "INSERT INTO events (at, kind, device, deployment, commit_sha, message) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (MAX_EVENTS,))


def _device_row(record: DeviceRecord) -> tuple[Any, ...]:
    return (
        record.device,
        record.url,
        json.dumps(list(record.addresses)),
        record.port,
        json.dumps(list(record.interfaces)),
        json.dumps(record.platform),
        record.origin,
        record.state,
        record.introduced_at,
        record.online_since,
        record.last_seen,
        record.failures,
        record.orchestrator_set,
        None if record.health is None else json.dumps(record.health),
        record.checked_at,
        record.incarnation,
        record.started_at,
    )


def _device_record(row: tuple[Any, ...]) -> DeviceRecord:
    name, url, addresses, port, interfaces, platform, origin, state, introduced, since, seen = row[
        :11
    ]
    failures, orchestrator_set, health, checked_at, incarnation, started_at = row[11:]
    return DeviceRecord(
        device=name,
        url=url,
        addresses=tuple(json.loads(addresses)),
        port=port,
        interfaces=tuple(json.loads(interfaces)),
        platform=json.loads(platform),
        origin=origin,
        state=state,
        introduced_at=introduced,
        online_since=since,
        last_seen=seen,
        failures=failures,
        orchestrator_set=None if orchestrator_set is None else bool(orchestrator_set),
        health=None if health is None else json.loads(health),
        checked_at=checked_at,
        incarnation=incarnation,
        started_at=started_at,
    )
