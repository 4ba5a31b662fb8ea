"""SQLite: the orchestrator's only shared state.

It remembers every commit looked at (accepted, or rejected with its problems), the snapshot of
each recent accepted commit, which commit is desired now, and how the source is doing. One
commit is written in one transaction (`BEGIN IMMEDIATE` on the one connection, behind a lock),
so a reader never sees half a snapshot. Binaries live in the `BlobStore` beside the database.
The schema is versioned (`PRAGMA user_version`) and migrated forward on open.

It does not decide anything: the sync loop says what to record, the web layer reads.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .blobs import BlobStore
from .errors import StoreError
from .fleetdb import (
    FLEET_SCHEMA,
    HEALTH_AND_LOGS_SCHEMA,
    INCARNATIONS_SCHEMA,
    PLACED_SINCE_SCHEMA,
    Event,
    FleetRecords,
    insert_events,
)
from .models import (
    CommitInfo,
    Deployment,
    Devices,
    FileFacts,
    Inspection,
    LoadedModule,
    LoadResult,
    Module,
    Problem,
    Snapshot,
    WasmImport,
)
from .settings import StoreSettings

DATABASE_FILE = "orchestrator.sqlite3"
BLOB_FOLDER = "blobs"

# Each entry migrates the schema from version N to N+1; never edit a released one.
MIGRATIONS = (
    """
    CREATE TABLE commits (
        commit_sha TEXT PRIMARY KEY,
        author TEXT NOT NULL,
        committed_at REAL NOT NULL,
        message TEXT NOT NULL,
        seen_at REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
        problems TEXT NOT NULL
    );
    CREATE INDEX commits_by_seen_at ON commits (seen_at);
    CREATE TABLE snapshots (
        commit_sha TEXT PRIMARY KEY REFERENCES commits (commit_sha),
        accepted_at REAL NOT NULL,
        devices TEXT NOT NULL
    );
    CREATE TABLE modules (
        commit_sha TEXT NOT NULL REFERENCES snapshots (commit_sha) ON DELETE CASCADE,
        module TEXT NOT NULL,
        module_digest TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (commit_sha, module)
    );
    CREATE TABLE deployments (
        commit_sha TEXT NOT NULL REFERENCES snapshots (commit_sha) ON DELETE CASCADE,
        deployment TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (commit_sha, deployment)
    );
    CREATE TABLE snapshot_blobs (
        commit_sha TEXT NOT NULL REFERENCES snapshots (commit_sha) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (commit_sha, digest)
    );
    CREATE TABLE sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        desired_sha TEXT REFERENCES snapshots (commit_sha),
        last_seen_sha TEXT REFERENCES commits (commit_sha),
        fetched_at REAL,
        error TEXT,
        error_at REAL
    );
    INSERT INTO sync_state (id) VALUES (1);
    """,
    FLEET_SCHEMA,
    HEALTH_AND_LOGS_SCHEMA,
    INCARNATIONS_SCHEMA,
    PLACED_SINCE_SCHEMA,
)


@dataclass(frozen=True)
class CommitRecord:
    sha: str
    author: str
    committed_at: float
    message: str
    seen_at: float
    status: str
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class SyncState:
    desired: CommitRecord | None
    last_seen: CommitRecord | None
    last_rejected: CommitRecord | None
    fetched_at: float | None
    error: str | None
    error_at: float | None


class Store(FleetRecords):
    """The database and the blob store; fleet tables come from `FleetRecords`."""

    def __init__(
        self, connection: sqlite3.Connection, blobs: BlobStore, settings: StoreSettings
    ) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self.blobs = blobs
        self.settings = settings
        self._snapshot: Snapshot | None = None
        self._version = 0
        self._encoded_modules: dict[int, tuple[LoadedModule, str]] = {}
        self._temporary: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def open(cls, data_dir: Path | None, settings: StoreSettings | None = None) -> Store:
        """The store in `data_dir`, created or migrated; `None` is an in-memory store."""
        settings = settings or StoreSettings()
        temporary = None
        if data_dir is None:
            temporary = tempfile.TemporaryDirectory(prefix="gitops-blobs-")
            blob_root, database = Path(temporary.name), ":memory:"
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            blob_root, database = data_dir / BLOB_FOLDER, str(data_dir / DATABASE_FILE)
        connection: sqlite3.Connection | None = None
        try:
            connection = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA foreign_keys = ON")
            if database != ":memory:":
                connection.execute("PRAGMA journal_mode = WAL")
                # In WAL mode NORMAL is safe against corruption and skips an fsync per commit.
                connection.execute("PRAGMA synchronous = NORMAL")
            store = cls(connection, BlobStore(blob_root), settings)
            store._temporary = temporary
            store._migrate()
        except (sqlite3.Error, StoreError) as exc:
            if temporary is not None:
                temporary.cleanup()
            if connection is not None:
                connection.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the database {database}: {exc}") from exc
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._temporary is not None:
            self._temporary.cleanup()

    @property
    def version(self) -> int:
        """Grows with every write: readers cache what they build from the store by it."""
        return self._version

    @property
    def schema_version(self) -> int:
        with self._lock:
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            return version

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database has schema version {version}, newer than this release knows "
                f"({len(MIGRATIONS)}); use a newer gitops-orchestrator"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction() as db:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._version += 1

    # writing

    def record_commit(
        self, info: CommitInfo, result: LoadResult, *, read: Callable[[str], bytes], now: float
    ) -> None:
        """Record a loaded commit; an accepted one becomes the desired state.

        Blobs are written first (content-addressed, so an interrupted write leaves only an
        unreferenced blob for the next collection); the rows follow in one transaction.
        """
        snapshot = result.snapshot
        if snapshot is not None:
            for facts in _files(snapshot):
                if not self.blobs.has(facts.digest):
                    self.blobs.put(facts.digest, read(facts.path))
        status = "accepted" if snapshot is not None else "rejected"
        problems = json.dumps([_problem_json(p) for p in result.problems])
        with self._transaction() as db:
            db.execute(
                "INSERT INTO commits VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (commit_sha) DO "
                "UPDATE SET seen_at = excluded.seen_at, status = excluded.status, "
                "problems = excluded.problems",
                (info.sha, info.author, info.time, info.message, now, status, problems),
            )
            if snapshot is not None:
                self._write_snapshot(db, info.sha, snapshot, now)
                db.execute("UPDATE sync_state SET desired_sha = ?", (info.sha,))
            db.execute("UPDATE sync_state SET last_seen_sha = ?", (info.sha,))
            summary = info.message.strip().splitlines()[0] if info.message.strip() else ""
            detail = f"{len(result.problems)} problem(s)" if snapshot is None else "desired now"
            event = Event(f"commit_{status}", f"{info.sha[:12]} {summary[:80]}: {detail}")
            insert_events(db, now, [event], commit_sha=info.sha)
            dropped = self._apply_retention(db)
        if dropped:
            self._collect_blobs()

    def _write_snapshot(
        self, db: sqlite3.Connection, sha: str, snapshot: Snapshot, now: float
    ) -> None:
        # A commit's content never changes: seen again (a force-push back), it is only renewed.
        renewed = db.execute(
            "UPDATE snapshots SET accepted_at = ? WHERE commit_sha = ?", (now, sha)
        ).rowcount
        if renewed:
            return
        db.execute(
            "INSERT INTO snapshots VALUES (?, ?, ?)",
            (sha, now, snapshot.devices.model_dump_json()),
        )
        db.executemany(
            "INSERT INTO modules VALUES (?, ?, ?, ?)",
            [
                (sha, name, module.binary.digest, self._encoded(module))
                for name, module in snapshot.modules.items()
            ],
        )
        current = {id(module) for module in snapshot.modules.values()}
        self._encoded_modules = {
            key: value for key, value in self._encoded_modules.items() if key in current
        }
        db.executemany(
            "INSERT INTO deployments VALUES (?, ?, ?)",
            [(sha, name, d.model_dump_json()) for name, d in snapshot.deployments.items()],
        )
        db.executemany(
            "INSERT OR IGNORE INTO snapshot_blobs VALUES (?, ?)",
            [(sha, facts.digest) for facts in _files(snapshot)],
        )

    def _encoded(self, module: LoadedModule) -> str:
        # The loader hands back the same object for an unchanged module, so its JSON is
        # encoded once, not at every commit of a large repository.
        cached = self._encoded_modules.get(id(module))
        if cached is None or cached[0] is not module:
            cached = (module, json.dumps(_module_json(module)))
            self._encoded_modules[id(module)] = cached
        return cached[1]

    def _apply_retention(self, db: sqlite3.Connection) -> int:
        """Drop old snapshots and commits; return how many snapshots were dropped."""
        keep = self.settings.keep_snapshots
        dropped = db.execute(
            "DELETE FROM snapshots WHERE commit_sha NOT IN (SELECT desired_sha FROM sync_state "
            "WHERE desired_sha IS NOT NULL) AND commit_sha NOT IN (SELECT commit_sha FROM "
            "snapshots ORDER BY accepted_at DESC LIMIT ?)",
            (keep,),
        ).rowcount
        db.execute(
            "DELETE FROM commits WHERE commit_sha NOT IN (SELECT commit_sha FROM snapshots) "
            "AND commit_sha NOT IN (SELECT last_seen_sha FROM sync_state WHERE last_seen_sha "
            "IS NOT NULL) AND commit_sha NOT IN (SELECT commit_sha FROM commits "
            "ORDER BY seen_at DESC LIMIT ?)",
            (self.settings.keep_commits,),
        )
        return dropped

    def _collect_blobs(self) -> None:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT digest FROM snapshot_blobs").fetchall()
            self.blobs.keep_only(row[0] for row in rows)

    def record_fetch(self, *, now: float, error: str | None = None) -> None:
        """Note a fetch of the source: its time, or its error (the desired state stays)."""
        with self._transaction() as db:
            if error is None:
                db.execute(
                    "UPDATE sync_state SET fetched_at = ?, error = NULL, error_at = NULL", (now,)
                )
            else:
                db.execute("UPDATE sync_state SET error = ?, error_at = ?", (error, now))

    # reading

    def sync_state(self) -> SyncState:
        with self._lock:
            desired, last_seen, fetched_at, error, error_at = self._db.execute(
                "SELECT desired_sha, last_seen_sha, fetched_at, error, error_at FROM sync_state"
            ).fetchone()
            rejected = self._db.execute(
                "SELECT * FROM commits WHERE status = 'rejected' ORDER BY seen_at DESC LIMIT 1"
            ).fetchone()
            return SyncState(
                desired=self.commit(desired) if desired else None,
                last_seen=self.commit(last_seen) if last_seen else None,
                last_rejected=_commit_record(rejected) if rejected else None,
                fetched_at=fetched_at,
                error=error,
                error_at=error_at,
            )

    @property
    def last_seen_sha(self) -> str | None:
        with self._lock:
            sha: str | None = self._db.execute("SELECT last_seen_sha FROM sync_state").fetchone()[0]
            return sha

    def commit(self, sha: str) -> CommitRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM commits WHERE commit_sha = ?", (sha,)).fetchone()
        return _commit_record(row) if row else None

    def previous_accepted(self, sha: str) -> CommitRecord | None:
        """The accepted commit seen before `sha`, in the order `commits()` lists them."""
        with self._lock:
            row = self._db.execute(
                "SELECT c.* FROM commits AS c, commits AS this WHERE this.commit_sha = ? "
                "AND c.status = 'accepted' AND (c.seen_at < this.seen_at OR "
                "(c.seen_at = this.seen_at AND c.commit_sha > this.commit_sha)) "
                "ORDER BY c.seen_at DESC, c.commit_sha LIMIT 1",
                (sha,),
            ).fetchone()
        return _commit_record(row) if row else None

    def commit_events(self, sha: str, *, limit: int = 100) -> list[Any]:
        """The events recorded for commit `sha`, newest first (as `events()` returns them)."""
        with self._lock:
            rows: list[Any] = self._db.execute(
                "SELECT * FROM events WHERE commit_sha = ? ORDER BY id DESC LIMIT ?", (sha, limit)
            ).fetchall()
        return rows

    def file_digests(self, module: str, file: str) -> set[str]:
        """The digests a module's file (`wasm` or a data file) has in the kept snapshots."""
        with self._lock:
            rows = self._db.execute(
                "SELECT module_digest, record FROM modules WHERE module = ?", (module,)
            ).fetchall()
        if file == "wasm":
            return {digest for digest, _ in rows}
        found = set()
        for _, record in rows:
            facts = json.loads(record)["data"].get(file)
            if facts is not None:
                found.add(facts["digest"])
        return found

    def snapshot_rows(self, sha: str) -> tuple[dict[str, str], dict[str, str], str] | None:
        """A kept snapshot as stored: module and deployment rows by name, and devices.yaml.

        Rows compare as text: the same text is the same module (digest and manifest) or
        deployment, so what a commit changed is found without rebuilding its snapshot.
        """
        with self._lock:
            devices = self._db.execute(
                "SELECT devices FROM snapshots WHERE commit_sha = ?", (sha,)
            ).fetchone()
            if devices is None:
                return None
            modules = self._db.execute(
                "SELECT module, record FROM modules WHERE commit_sha = ?", (sha,)
            ).fetchall()
            deployments = self._db.execute(
                "SELECT deployment, record FROM deployments WHERE commit_sha = ?", (sha,)
            ).fetchall()
        return dict(modules), dict(deployments), devices[0]

    def commit_count(self) -> int:
        with self._lock:
            (number,) = self._db.execute("SELECT COUNT(*) FROM commits").fetchone()
        return int(number)

    def commits(self, *, limit: int = 50, offset: int = 0) -> list[CommitRecord]:
        """Commits looked at, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM commits ORDER BY seen_at DESC, commit_sha LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [_commit_record(row) for row in rows]

    def desired_snapshot(self) -> Snapshot | None:
        """The snapshot of the desired commit, rebuilt from the rows (cached per commit)."""
        with self._lock:
            (sha,) = self._db.execute("SELECT desired_sha FROM sync_state").fetchone()
            if sha is None:
                return None
            if self._snapshot is not None and self._snapshot.commit_sha == sha:
                return self._snapshot
            self._snapshot = self.snapshot(sha)
            return self._snapshot

    def snapshot(self, sha: str) -> Snapshot | None:
        with self._lock:
            row = self._db.execute(
                "SELECT devices FROM snapshots WHERE commit_sha = ?", (sha,)
            ).fetchone()
            if row is None:
                return None
            modules = self._db.execute(
                "SELECT module, record FROM modules WHERE commit_sha = ? ORDER BY module", (sha,)
            ).fetchall()
            deployments = self._db.execute(
                "SELECT deployment, record FROM deployments WHERE commit_sha = ? "
                "ORDER BY deployment",
                (sha,),
            ).fetchall()
        return Snapshot(
            commit_sha=sha,
            modules={name: _module_from_json(json.loads(record)) for name, record in modules},
            deployments={name: Deployment.model_validate_json(r) for name, r in deployments},
            devices=Devices.model_validate_json(row[0]),
        )


def _files(snapshot: Snapshot) -> Iterator[FileFacts]:
    for module in snapshot.modules.values():
        yield module.binary
        yield from module.data.values()


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {"file": problem.file, "line": problem.line, "message": problem.message}


def _commit_record(row: tuple[Any, ...]) -> CommitRecord:
    sha, author, committed_at, message, seen_at, status, problems = row
    return CommitRecord(
        sha=sha,
        author=author,
        committed_at=committed_at,
        message=message,
        seen_at=seen_at,
        status=status,
        problems=tuple(Problem(**p) for p in json.loads(problems)),
    )


def _facts_json(facts: FileFacts) -> dict[str, Any]:
    return {"path": facts.path, "digest": facts.digest, "size": facts.size}


def _module_json(module: LoadedModule) -> dict[str, Any]:
    return {
        "spec": module.spec.model_dump(mode="json"),
        "binary": _facts_json(module.binary),
        "functions": dict(module.inspection.functions),
        "imports": [[i.module, i.name, i.kind] for i in module.inspection.imports],
        "data": {name: _facts_json(facts) for name, facts in module.data.items()},
    }


def _module_from_json(record: dict[str, Any]) -> LoadedModule:
    return LoadedModule(
        spec=Module.model_validate(record["spec"]),
        binary=FileFacts(**record["binary"]),
        inspection=Inspection(
            functions=record["functions"],
            imports=tuple(WasmImport(*item) for item in record["imports"]),
        ),
        data={name: FileFacts(**facts) for name, facts in record["data"].items()},
    )
