"""Device logs: parsing, the per-device rate limit, bounded buffers, and the route."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import string
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Orchestrator, copy_sample, git_init_commit

from gitops_orchestrator import logs
from gitops_orchestrator.fleetdb import DeviceRecord
from gitops_orchestrator.logs import LogSink, parse_entry
from gitops_orchestrator.settings import DeviceSettings
from gitops_orchestrator.simulator.fleet import FleetThread
from gitops_orchestrator.store import Store

PEER = "127.0.0.1"


def record(name: str, address: str = PEER) -> DeviceRecord:
    return DeviceRecord(
        device=name, url=f"http://{address}:5000", addresses=(address,), port=5000,
        interfaces=(), platform={}, origin="registered", state="online", introduced_at=0.0,
        online_since=0.0, last_seen=0.0,
    )  # fmt: skip


def knowing(sink: LogSink, *names: str) -> LogSink:
    sink.know([record(name) for name in names])
    return sink


def line(message: str = "Health check done", device: str = "sup1", **extra: Any) -> str:
    return json.dumps(
        {"timestamp": "2026-11-28 03:22:52,383", "loglevel": "INFO", "message": message,
         "funcName": "thingi_health", "deviceName": device, "deviceIP": "127.0.0.1", **extra}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "device"),
    [
        (line(), "sup1"),
        (line(device=""), "unknown@10.0.0.9"),
        (line(device="x" * 64), "unknown@10.0.0.9"),
        (json.dumps({"message": "bare"}), "unknown@10.0.0.9"),
    ],
    ids=["protocol-shape", "empty-name", "long-name", "no-name"],
)
def test_entries_are_parsed(raw: str, device: str) -> None:
    entry = parse_entry(raw, peer="10.0.0.9", now=1.0)
    assert entry is not None
    assert entry.device == device
    assert entry.entry == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [None, "", "not json", "[1, 2]", '"text"', json.dumps({"message": 5}), "[" * 100_000],
    ids=["missing", "empty", "not-json", "list", "string", "message-not-text", "deep-nesting"],
)
def test_malformed_entries_are_refused(raw: str | None) -> None:
    assert parse_entry(raw, peer=None, now=1.0) is None


def test_rate_limit_is_per_device_and_buffer_bounded() -> None:
    store = Store.open(None)
    now = [0.0]
    sink = LogSink(
        store, settings=DeviceSettings(log_rate=10.0, log_burst=5, log_buffer=8),
        clock=lambda: now[0],
    )  # fmt: skip
    knowing(sink, "chatty", "quiet")
    try:
        for _ in range(20):
            sink.accept(line(device="chatty"), peer=PEER)
        sink.accept(line(device="quiet"), peer=PEER)
        sink.accept("garbage", peer=PEER)
        assert sink.counts == {"accepted": 6, "rate_limited": 15, "malformed": 1}
        now[0] = 0.5  # five more tokens for chatty, but the buffer holds only 8 entries
        for _ in range(5):
            sink.accept(line(device="chatty"), peer=PEER)
        assert sink.counts["accepted"] == 8
        assert sink.counts["overflow"] == 3
        assert asyncio.run(sink.flush()) == 8
        assert len(store.logs("chatty")) == 7
        assert [e.message for e in store.logs("quiet")] == ["Health check done"]
    finally:
        store.close()


def test_each_device_keeps_a_ring_of_its_newest_lines() -> None:
    store = Store.open(None)
    settings = DeviceSettings(log_ring=3, log_burst=1000)
    sink = knowing(LogSink(store, settings=settings), "sup1", "sup2")
    try:
        for number in range(10):
            sink.accept(line(f"line {number}"), peer=PEER)
            sink.accept(line(f"other {number}", device="sup2"), peer=PEER)
        asyncio.run(sink.flush())
        assert [e.message for e in store.logs("sup1")] == ["line 9", "line 8", "line 7"]
        assert len(store.logs("sup2")) == 3
    finally:
        store.close()


def known_device(orchestrator: Orchestrator, name: str) -> FleetThread:
    """A simulated device registered with `orchestrator` and introduced by it (on 127.0.0.1)."""
    fleet = FleetThread(orchestrator_url=orchestrator.url)
    fleet.__enter__()
    fleet.add(names=[name])

    def introduced() -> bool:
        devices = orchestrator.client.get("/api/v1/devices").json()["items"]
        return any(device["name"] == name for device in devices)

    orchestrator.until(lambda state: introduced(), f"{name} to be introduced")
    time.sleep(logs.KNOWN_REFRESH + 0.5)  # the sink reads the known devices this often
    return fleet


def test_the_route_always_answers_200_within_the_limit(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    orchestrator: Orchestrator = serve(str(path))
    fleet = known_device(orchestrator, "sup1")
    post = orchestrator.client.post
    assert post("/device/logs", data={"logData": line("hello")}).status_code == 200
    hostile = [
        b"logData=%ff%fe",  # invalid UTF-8
        b"logData=not+json",
        b"&".join(b"f%d=1" % n for n in range(100)),
        b"",
        b"\x00\x01\x02",
    ]
    for body in hostile:
        answer = post("/device/logs", content=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert answer.status_code == 200, body
    huge = post("/device/logs", data={"logData": line("x" * 70_000)})
    assert huge.status_code == 413
    assert huge.json()["error"]["status"] == 413
    assert orchestrator.client.get("/healthz").status_code == 200
    data = tmp_path / "data0" / "orchestrator.sqlite3"

    def messages() -> list[str]:
        with sqlite3.connect(f"file:{data}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT message FROM device_logs ORDER BY id").fetchall()
        db.close()
        return [row[0] for row in rows]

    orchestrator.until(lambda state: "hello" in messages(), "the log line to be written")
    fleet.close()


def test_a_flood_from_one_device_is_answered_and_bounded(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    orchestrator: Orchestrator = serve(str(path))
    fleet = known_device(orchestrator, "loud")

    async def flood() -> list[int]:
        # One connection per request in flight: a loaded machine must not time out the pool.
        limits = httpx.Limits(max_connections=500)
        async with httpx.AsyncClient(
            base_url=orchestrator.url, limits=limits, timeout=30
        ) as client:
            answers = await asyncio.gather(
                *(client.post("/device/logs", data={"logData": line(f"n{n}", device="loud")})
                  for n in range(500))
            )  # fmt: skip
        return [answer.status_code for answer in answers]

    assert set(asyncio.run(flood())) == {200}
    data = tmp_path / "data0" / "orchestrator.sqlite3"

    def count() -> int:
        with sqlite3.connect(f"file:{data}?mode=ro", uri=True) as db:
            (number,) = db.execute("SELECT COUNT(*) FROM device_logs").fetchone()
        db.close()
        return int(number)

    orchestrator.until(lambda state: count() > 0, "the accepted lines")
    # The burst allowance (100) plus what the rate refilled: far fewer than the 500 sent.
    assert count() < 300
    fleet.close()


def test_only_known_devices_at_their_own_addresses_are_heard() -> None:
    store = Store.open(None)
    sink = LogSink(store)
    sink.know([record("sup1"), record("sup6", "fd00::6"), record("sup2", "10.0.0.2")])
    try:
        sink.accept(line(device="sup1"), peer=PEER)
        sink.accept(line(device="sup6"), peer="fd00::6")
        sink.accept(line(device="sup2"), peer="::ffff:10.0.0.2")  # a dual-stack listener
        sink.accept(line(device="stranger"), peer=PEER)
        sink.accept(line(device="sup1"), peer="10.9.9.9")  # a known name from elsewhere
        sink.accept(line(device=""), peer=PEER)  # no name: unknown@peer
        assert sink.counts == {"accepted": 3, "unknown": 3}
        sink.know([record("sup2", "10.0.0.2")])  # sup1 left the fleet: its bucket goes too
        sink.accept(line(device="sup1"), peer=PEER)
        assert sink.counts["unknown"] == 4
        assert set(sink._buckets) <= {"sup2"}
    finally:
        store.close()


def test_an_oversized_entry_keeps_only_the_protocol_fields() -> None:
    raw = line("big", padding="x" * 20_000, nested={"a": ["b"] * 1000})
    entry = parse_entry(raw, peer=PEER, now=1.0)
    assert entry is not None
    assert set(entry.entry) == set(logs.ENTRY_FIELDS)
    assert len(json.dumps(entry.entry)) < logs.MAX_ENTRY


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_a_flood_of_random_names_leaves_the_data_dir_within_its_bound(
    serve: Any, tmp_path: Path
) -> None:
    """10,000 log POSTs with new names: none is a known device, so nothing is stored."""
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    orchestrator: Orchestrator = serve(str(path))
    data = tmp_path / "data0"
    orchestrator.until(lambda state: state["desired"] is not None, "the sample to be desired")
    time.sleep(1)  # the first sync's writes settle
    before = folder_size(data)
    letters = string.ascii_lowercase + string.digits

    async def flood() -> set[int]:
        statuses: set[int] = set()
        async with httpx.AsyncClient(base_url=orchestrator.url, timeout=30) as client:

            async def poster(count: int) -> None:
                for _ in range(count):
                    name = "".join(random.choices(letters, k=12))
                    answer = await client.post(
                        "/device/logs", data={"logData": line("x" * 2000, device=name)}
                    )
                    statuses.add(answer.status_code)

            await asyncio.gather(*(poster(500) for _ in range(20)))
        return statuses

    assert asyncio.run(flood()) == {200}
    metrics = orchestrator.client.get("/metrics").text
    assert 'gitops_device_log_lines_total{outcome="unknown"} 10000.0' in metrics
    time.sleep(2 * logs.FLUSH_EVERY)
    # The bound for strangers is nothing at all. The store's own passes and fetches write a
    # little meanwhile (the WAL grows until a checkpoint); the old code grew by over 20 MB here.
    with sqlite3.connect(f"file:{data}/orchestrator.sqlite3?mode=ro", uri=True) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM device_logs").fetchone()
    db.close()
    assert rows == 0
    assert folder_size(data) - before < 1024 * 1024
