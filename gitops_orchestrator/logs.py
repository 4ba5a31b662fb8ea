"""Log lines from devices: accepted at once, written in batches, bounded everywhere.

Supervisors POST every log line synchronously and without a timeout, also while they handle
our deploy (protocol §5), so taking a line must cost next to nothing: it is parsed, passed
through a per-device token bucket (one chatty device cannot crowd out the others) and put in a
bounded buffer that a background task writes to SQLite in one transaction per batch, where
each device keeps a ring of its newest lines. What cannot be kept is counted, never an error
for the device.

The route is open to anyone on the network, so only known devices are heard: a line is kept
when its `deviceName` is a device we introduced and it comes from one of that device's
addresses. Everything held per name (buckets, rings) is therefore bounded by the fleet, not by
what strangers send: the log store grows by at most `log_ring` entries of at most `MAX_ENTRY`
bytes per known device.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .fleetdb import DeviceRecord, LogEntry
from .settings import DeviceSettings
from .store import Store

logger = logging.getLogger(__name__)

# The fields of protocol §5 that are shown as such; the whole entry is kept too.
MAX_FIELD = 4096
# A protocol §5 line is a few hundred bytes; a larger one is kept as its known fields only.
MAX_ENTRY = 8192
ENTRY_FIELDS = ("timestamp", "loglevel", "message", "funcName", "deviceName", "deviceIP")
FLUSH_EVERY = 0.2
# Seconds between readings of the known devices: a newly introduced device is heard after this.
KNOWN_REFRESH = 2.0


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
        entry=document if len(raw) <= MAX_ENTRY else _trimmed(document),
    )


def _trimmed(document: dict[str, Any]) -> dict[str, Any]:
    """The protocol's fields of an oversized entry, each cut to `MAX_FIELD` characters."""
    return {
        name: value[:MAX_FIELD] if isinstance(value, str) else None
        for name in ENTRY_FIELDS
        if (value := document.get(name)) is not None
    }


def _address(text: str) -> str:
    """One spelling per address: `::ffff:10.0.0.5` (a dual-stack peer) is `10.0.0.5`."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def device_addresses(record: DeviceRecord) -> frozenset[str]:
    """Where a device may post its logs from: its addresses and the host we reach it at."""
    hosts = [*record.addresses, urlsplit(record.url).hostname or ""]
    return frozenset(_address(host) for host in hosts if host)


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
    """accepted, malformed, unknown, rate_limited, overflow, written."""
    _buffer: list[LogEntry] = field(default_factory=list)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _known: dict[str, frozenset[str]] = field(default_factory=dict)

    def know(self, records: Iterable[DeviceRecord]) -> None:
        """The devices whose lines are kept, each with the addresses it may post from."""
        self._known = {r.device: device_addresses(r) for r in records if r.state != "gone"}
        self._buckets = {n: b for n, b in self._buckets.items() if n in self._known}

    def accept(self, raw: str | None, *, peer: str | None) -> None:
        """Take one log POST's `logData` (never raises: the device only ever gets 200)."""
        entry = parse_entry(raw, peer=peer, now=time.time())
        if entry is None:
            self.counts["malformed"] += 1
            return
        addresses = self._known.get(entry.device)
        if addresses is None or peer is None or _address(peer) not in addresses:
            self.counts["unknown"] += 1  # a stranger, or a name posted from elsewhere
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
        if bucket is None:  # only known devices get here: the table is as big as the fleet
            bucket = self._buckets[device] = _Bucket(float(self.settings.log_burst), now)
        rate, burst = self.settings.log_rate, float(self.settings.log_burst)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    async def flush(self) -> int:
        """Write what is buffered in one transaction; return how many entries."""
        batch, self._buffer = self._buffer, []
        if batch:
            await asyncio.to_thread(self.store.add_logs, batch, keep=self.settings.log_ring)
            self.counts["written"] += len(batch)
        return len(batch)

    async def run(self) -> None:
        """Flush every few hundred milliseconds until cancelled (and once more then)."""
        known_at = -KNOWN_REFRESH
        try:
            while True:
                try:
                    if time.monotonic() - known_at >= KNOWN_REFRESH:
                        self.know(await asyncio.to_thread(self.store.devices))
                        known_at = time.monotonic()
                    await self.flush()
                except Exception:
                    logger.exception("cannot write device logs")
                await asyncio.sleep(FLUSH_EVERY)
        finally:
            await asyncio.shield(self.flush())
