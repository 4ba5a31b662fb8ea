"""Log lines from devices: accepted at once, written in batches, bounded everywhere.

Supervisors POST every log line synchronously and without a timeout, also while they handle
our deploy (protocol §5), so taking a line must cost next to nothing: it is parsed, passed
through a per-device token bucket (one chatty device cannot crowd out the others) and put in a
bounded buffer that a background task writes to SQLite in one transaction per batch, where
each device keeps a ring of its newest lines. What cannot be kept is counted, never an error
for the device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .fleetdb import LogEntry
from .settings import DeviceSettings
from .store import Store

logger = logging.getLogger(__name__)

# The fields of protocol §5 that are shown as such; the whole entry is kept too.
MAX_FIELD = 4096
# Buckets of devices not heard from for this long are dropped, so spoofed names cannot grow
# the table without bound.
BUCKET_IDLE = 600.0
FLUSH_EVERY = 0.2


def parse_entry(raw: str | None, *, peer: str | None, now: float) -> LogEntry | None:
    """The `logData` JSON of one log POST, or None when it is not a log entry."""
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    message = document.get("message")
    if not isinstance(message, str):
        return None
    device = document.get("deviceName")
    if not isinstance(device, str) or not device or len(device) > 63:
        device = f"unknown@{peer}" if peer else "unknown"
    level = document.get("loglevel")
    return LogEntry(
        device=device,
        at=now,
        level=level[:16] if isinstance(level, str) else None,
        message=message[:MAX_FIELD],
        entry=document,
    )


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class LogSink:
    store: Store
    settings: DeviceSettings = field(default_factory=DeviceSettings)
    clock: Callable[[], float] = time.monotonic
    counts: Counter[str] = field(default_factory=Counter)
    """accepted, malformed, rate_limited, overflow, written."""
    _buffer: list[LogEntry] = field(default_factory=list)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def accept(self, raw: str | None, *, peer: str | None) -> None:
        """Take one log POST's `logData` (never raises: the device only ever gets 200)."""
        entry = parse_entry(raw, peer=peer, now=time.time())
        if entry is None:
            self.counts["malformed"] += 1
            return
        if not self._allowed(entry.device):
            self.counts["rate_limited"] += 1
            return
        if len(self._buffer) >= self.settings.log_buffer:
            self.counts["overflow"] += 1
            return
        self._buffer.append(entry)
        self.counts["accepted"] += 1

    def _allowed(self, device: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(device)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._forget_idle(now)
            bucket = self._buckets[device] = _Bucket(float(self.settings.log_burst), now)
        rate, burst = self.settings.log_rate, float(self.settings.log_burst)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        self._buckets = {
            name: bucket
            for name, bucket in self._buckets.items()
            if now - bucket.updated < BUCKET_IDLE
        }

    async def flush(self) -> int:
        """Write what is buffered in one transaction; return how many entries."""
        batch, self._buffer = self._buffer, []
        if batch:
            await asyncio.to_thread(self.store.add_logs, batch, keep=self.settings.log_ring)
            self.counts["written"] += len(batch)
        return len(batch)

    async def run(self) -> None:
        """Flush every few hundred milliseconds until cancelled (and once more then)."""
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                try:
                    await self.flush()
                except Exception:
                    logger.exception("cannot write device logs")
        finally:
            await asyncio.shield(self.flush())
