"""Device logs: parsing, the per-device rate limit, bounded buffers, and the route."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Orchestrator, copy_sample, git_init_commit

from gitops_orchestrator.logs import LogSink, parse_entry
from gitops_orchestrator.settings import DeviceSettings
from gitops_orchestrator.store import Store


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
    try:
        for _ in range(20):
            sink.accept(line(device="chatty"), peer=None)
        sink.accept(line(device="quiet"), peer=None)
        sink.accept("garbage", peer=None)
        assert sink.counts == {"accepted": 6, "rate_limited": 15, "malformed": 1}
        now[0] = 0.5  # five more tokens for chatty, but the buffer holds only 8 entries
        for _ in range(5):
            sink.accept(line(device="chatty"), peer=None)
        assert sink.counts["accepted"] == 8
        assert sink.counts["overflow"] == 3
        assert asyncio.run(sink.flush()) == 8
        assert len(store.logs("chatty")) == 7
        assert [e.message for e in store.logs("quiet")] == ["Health check done"]
    finally:
        store.close()


def test_each_device_keeps_a_ring_of_its_newest_lines() -> None:
    store = Store.open(None)
    sink = LogSink(store, settings=DeviceSettings(log_ring=3, log_burst=1000))
    try:
        for number in range(10):
            sink.accept(line(f"line {number}"), peer=None)
            sink.accept(line(f"other {number}", device="sup2"), peer=None)
        asyncio.run(sink.flush())
        assert [e.message for e in store.logs("sup1")] == ["line 9", "line 8", "line 7"]
        assert len(store.logs("sup2")) == 3
    finally:
        store.close()


def test_the_route_always_answers_200_within_the_limit(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    orchestrator: Orchestrator = serve(str(path))
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

    orchestrator.until(lambda state: messages() == ["hello"], "the log line to be written")


def test_a_flood_from_one_device_is_answered_and_bounded(serve: Any, tmp_path: Path) -> None:
    path = copy_sample(tmp_path / "repo")
    git_init_commit(path)
    orchestrator: Orchestrator = serve(str(path))

    async def flood() -> list[int]:
        async with httpx.AsyncClient(base_url=orchestrator.url) as client:
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
