"""The fleet's tables: devices, what each runs, step placements, deploy statuses and events.

A part of `Store` (mixed into it), kept apart from the commit tables so that each module stays
readable. Writers are the device routes (introductions, restarts) and the reconciler, which
records a whole pass in one transaction; readers are the reconciler and the web layer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

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
class StatusRecord:
    device: str
    deployment: str
    status: str
    error: str | None
    attempts: int
    updated_at: float


@dataclass(frozen=True)
class Event:
    kind: str
    message: str
    device: str | None = None
    deployment: str | None = None
    commit_sha: str | None = None


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
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
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
        """The device lost what it ran (a restart): everything it should run is redeployed."""
        with self._transaction() as db:
            db.execute("DELETE FROM applied WHERE device = ?", (device,))
            insert_events(db, now, [Event("restart", why, device=device)])

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
        """Device -> deployment -> digest of the body it is known to run."""
        result: dict[str, dict[str, str]] = {}
        with self._lock:
            rows = self._db.execute("SELECT device, deployment, body_digest FROM applied")
            for device, deployment, digest in rows:
                result.setdefault(device, {})[deployment] = digest
        return result

    def step_placements(self) -> list[StepRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM step_placements ORDER BY deployment, step"
            ).fetchall()
        return [StepRecord(*row) for row in rows]

    def deploy_statuses(self) -> list[StatusRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deploy_statuses ORDER BY device, deployment"
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
            db.execute("DELETE FROM deploy_statuses")
            db.executemany(
                "INSERT INTO deploy_statuses VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (s.device, s.deployment, s.status, s.error, s.attempts, s.updated_at)
                    for s in record.statuses
                ],
            )
            db.executemany(
                "INSERT INTO applied VALUES (?, ?, ?, ?) ON CONFLICT (device, deployment) DO "
                "UPDATE SET body_digest = excluded.body_digest, applied_at = excluded.applied_at",
                [(device, dep, digest, record.now) for device, dep, digest in record.applied],
            )
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
    )


def _device_record(row: tuple[Any, ...]) -> DeviceRecord:
    name, url, addresses, port, interfaces, platform, origin, state, introduced, since, seen = row[
        :11
    ]
    failures, orchestrator_set, health, checked_at = row[11:]
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
    )
