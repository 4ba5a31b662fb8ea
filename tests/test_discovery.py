"""mDNS discovery: the merging and decision rules alone, then real zeroconf between namespaces.

The network tests run the orchestrator's side (a real store, `Introducer`, httpx client and
`Discovery`) on an event loop inside namespace A, and simulated devices (`device --mdns`, the
real command) or a raw zeroconf advertiser inside namespace B: nothing is multicast anywhere
else, and `all` interfaces are never used.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from netns import EventLoopIn, NetnsPair, made_pair
from zeroconf import InterfaceChoice, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from gitops_orchestrator import discovery
from gitops_orchestrator.devices import Introducer
from gitops_orchestrator.discovery import (
    Action,
    Advert,
    BadAdvertisement,
    Change,
    Discovery,
    Pending,
    action,
    advert,
    merged,
    parse_interfaces,
)
from gitops_orchestrator.fleetdb import DeviceRecord, PassRecord
from gitops_orchestrator.simulator import DEFAULT_INTERFACES
from gitops_orchestrator.store import Store
from gitops_orchestrator.supervisor import SupervisorClient

T = TypeVar("T")
ADDED, UPDATED, REMOVED = Change.ADDED, Change.UPDATED, Change.REMOVED


def service(name: str) -> str:
    return f"{name}._webthing._tcp.local."


def record(
    name: str = "d1",
    *,
    state: str = "online",
    url: str = "http://10.0.0.1:5055",
    addresses: Sequence[str] = ("10.0.0.1",),
    port: int = 5055,
) -> DeviceRecord:
    return DeviceRecord(
        device=name,
        url=url,
        addresses=tuple(addresses),
        port=port,
        interfaces=("print",),
        platform={},
        origin="mdns",
        state=state,
        introduced_at=1.0,
        online_since=1.0,
        last_seen=1.0,
    )


def known(store: Store, name: str) -> DeviceRecord:
    found = store.device(name)
    assert found is not None, f"{name} is not known"
    return found


def state(store: Store, name: str) -> str | None:
    found = store.device(name)
    return found.state if found else None


# The merging rules, as python-zeroconf's browser: Added, then Remove, then Update.


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([ADDED], Pending(ADDED)),
        ([UPDATED], Pending(UPDATED)),
        ([REMOVED], Pending(REMOVED, goodbye=True)),
        ([ADDED, UPDATED], Pending(ADDED)),
        ([UPDATED, ADDED], Pending(ADDED)),
        ([UPDATED, REMOVED], Pending(REMOVED, goodbye=True)),
        ([REMOVED, UPDATED], Pending(REMOVED, goodbye=True)),
        ([ADDED, REMOVED], Pending(ADDED, goodbye=True)),
        ([REMOVED, ADDED], Pending(ADDED, goodbye=True)),
        ([REMOVED, ADDED, UPDATED], Pending(ADDED, goodbye=True)),
        ([UPDATED, UPDATED, UPDATED], Pending(UPDATED)),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else None,
)
def test_events_are_merged_per_name(changes: list[Change], expected: Pending) -> None:
    pending = None
    for change in changes:
        pending = merged(pending, change)
    assert pending == expected


SEEN = Advert("d1", ("10.0.0.1",), 5055, tls=False)


@pytest.mark.parametrize(
    ("pending", "known", "seen", "expected"),
    [
        (Pending(ADDED), None, SEEN, Action.INTRODUCE),
        (Pending(ADDED), record(), SEEN, Action.IGNORE),
        (Pending(UPDATED), record(state="offline"), SEEN, Action.IGNORE),
        (Pending(ADDED), record(state="gone"), SEEN, Action.RESTART),
        (Pending(UPDATED), record(state="gone"), SEEN, Action.RESTART),
        (Pending(ADDED, goodbye=True), record(), SEEN, Action.RESTART),
        (Pending(ADDED, goodbye=True), None, SEEN, Action.INTRODUCE),
        (Pending(REMOVED, goodbye=True), record(), None, Action.GONE),
        (Pending(REMOVED, goodbye=True), record(state="gone"), None, Action.IGNORE),
        (Pending(REMOVED, goodbye=True), None, None, Action.IGNORE),
        (Pending(ADDED, goodbye=True), record(), None, Action.GONE),
        (Pending(ADDED), record(), None, Action.IGNORE),
        (Pending(UPDATED), record(port=5000), SEEN, Action.INTRODUCE),
        (Pending(UPDATED), record(url="https://10.0.0.1:5055"), SEEN, Action.INTRODUCE),
        (
            Pending(UPDATED),
            record(url="http://10.0.0.9:5055", addresses=["10.0.0.9"]),
            SEEN,
            Action.INTRODUCE,
        ),
        (Pending(UPDATED), record(addresses=["10.0.0.1", "10.0.0.9"]), SEEN, Action.READDRESS),
        (
            Pending(UPDATED),
            record(url="http://10.0.0.9:5055", addresses=["10.0.0.1", "10.0.0.9"]),
            SEEN,
            Action.INTRODUCE,
        ),
    ],
    ids=[
        "new",
        "known",
        "offline-is-health's-business",
        "add-after-goodbye",
        "update-after-goodbye",
        "goodbye-merged-into-add",
        "new-after-goodbye",
        "goodbye",
        "goodbye-again",
        "goodbye-of-a-stranger",
        "unresolvable-after-goodbye",
        "unresolvable",
        "port-changed",
        "tls-changed",
        "moved",
        "stale-address-dropped",
        "its-address-dropped",
    ],
)
def test_what_a_batch_does_to_one_device(
    pending: Pending, known: DeviceRecord | None, seen: Advert | None, expected: Action
) -> None:
    assert action(pending, known, seen) == expected


def test_an_advertisement_gives_its_a_records_then_the_txt_address() -> None:
    # In zeroconf's order (resolved from its cache: newest first); link-local IPv6 is left out.
    info = ServiceInfo(
        "_webthing._tcp.local.",
        service("sup1"),
        port=5055,
        addresses=[
            socket.inet_aton("10.0.0.1"),
            socket.inet_aton("10.0.0.2"),
            socket.inet_pton(socket.AF_INET6, "fe80::1"),
            socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
        ],
        properties={"path": "/", "tls": "1", "address": "10.0.0.3"},
    )
    assert advert(info) == Advert(
        "sup1", ("10.0.0.1", "10.0.0.2", "2001:db8::1", "10.0.0.3"), 5055, tls=True
    )
    same_address = ServiceInfo(
        "_webthing._tcp.local.",
        service("sup2"),
        port=80,
        addresses=[socket.inet_aton("10.0.0.1")],
        properties={"address": "10.0.0.1"},
    )
    assert advert(same_address) == Advert("sup2", ("10.0.0.1",), 80, tls=False)
    only_txt = ServiceInfo(
        "_webthing._tcp.local.",
        service("sup3"),
        port=80,
        properties={"address": "10.0.0.7", "tls": "0"},
    )
    assert advert(only_txt).addresses == ("10.0.0.7",)


@pytest.mark.parametrize(
    ("name", "port", "addresses", "properties", "why"),
    [
        ("a.b", 5055, ["10.0.0.1"], {}, "with a dot"),
        ("sup", 0, ["10.0.0.1"], {}, "no valid port"),
        ("sup", 5055, [], {"address": "not-an-ip"}, "no usable address"),
        ("sup", 5055, [], {}, "no usable address"),
    ],
    ids=["dotted-name", "port-0", "bad-txt-address", "no-address"],
)
def test_bad_advertisements_are_refused(
    name: str, port: int, addresses: list[str], properties: dict[str, str], why: str
) -> None:
    info = ServiceInfo(
        "_webthing._tcp.local.",
        service(name),
        port=port,
        addresses=[socket.inet_aton(a) for a in addresses],
        properties=properties,
    )
    with pytest.raises(BadAdvertisement, match=why):
        advert(info)


def test_interfaces_setting() -> None:
    assert parse_interfaces("all") is InterfaceChoice.All
    assert parse_interfaces(" ALL ") is InterfaceChoice.All
    assert parse_interfaces("none") == []
    assert parse_interfaces("") == []
    assert parse_interfaces("10.0.0.1, 127.0.0.1,10.0.0.1") == ["10.0.0.1", "127.0.0.1"]
    assert parse_interfaces("::1") == ["::1"]
    with pytest.raises(ValueError, match="eth0"):
        parse_interfaces("eth0")


# The batch handling, with a resolver and introducer of our own: no network at all.


@dataclass
class FakeIntroducer:
    """Introduces like `devices.Introducer` (without HTTP), or fails `failures` times."""

    store: Store
    failures: int = 0
    calls: list[tuple[str, tuple[str, ...], int, bool, str]] = field(default_factory=list)

    async def introduce(
        self, name: str, *, addresses: Sequence[str], port: int, tls: bool, origin: str
    ) -> DeviceRecord | None:
        self.calls.append((name, tuple(addresses), port, tls, origin))
        if self.failures:
            self.failures -= 1
            return None
        introduced = record(
            name, url=f"http://{addresses[0]}:{port}", addresses=addresses, port=port
        )
        self.store.upsert_device(introduced)
        return introduced


@dataclass
class FakeResolver:
    adverts: dict[str, Advert | Exception | None] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def __call__(self, service_name: str) -> Advert | None:
        self.calls.append(service_name)
        seen = self.adverts.get(service_name)
        if isinstance(seen, Exception):
            raise seen
        return seen


@dataclass
class Offline:
    store: Store
    introducer: FakeIntroducer
    resolver: FakeResolver
    discovery: Discovery
    wakes: list[float]


async def until(check: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def offline(test: Callable[[Offline], Awaitable[None]]) -> None:
    """Run `test` against a Discovery that never opens a socket (`none`, own resolver)."""
    store = Store.open(None)

    async def main() -> None:
        introducer, resolver, wakes = FakeIntroducer(store), FakeResolver(), []
        found = Discovery(
            "none",
            introducer=introducer,
            store=store,
            resolve=resolver,
            wake=lambda: wakes.append(time.monotonic()),
            clock=lambda: 42.0,
        )
        await found.start()
        try:
            await test(Offline(store, introducer, resolver, found, wakes))
        finally:
            await found.close()

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_one_batch_resolves_each_name_once_and_wakes_once() -> None:
    async def test(o: Offline) -> None:
        o.resolver.adverts[service("d1")] = Advert("d1", ("10.0.0.1",), 5055, tls=False)
        o.resolver.adverts[service("d2")] = Advert("d2", ("10.0.0.2",), 5055, tls=True)
        # As the browser does within one packet: several events before the batch runs.
        o.discovery.note(service("d1"), ADDED)
        o.discovery.note(service("d1"), UPDATED)
        o.discovery.note(service("d2"), ADDED)
        o.discovery.note(service("d2"), UPDATED)
        await until(lambda: len(o.introducer.calls) == 2)
        await asyncio.sleep(0.05)
        assert sorted(o.resolver.calls) == [service("d1"), service("d2")]
        assert sorted(o.introducer.calls) == [
            ("d1", ("10.0.0.1",), 5055, False, "mdns"),
            ("d2", ("10.0.0.2",), 5055, True, "mdns"),
        ]
        assert len(o.wakes) == 1

    offline(test)


def test_goodbye_marks_gone_and_an_announcement_after_it_is_a_restart() -> None:
    async def test(o: Offline) -> None:
        o.resolver.adverts[service("d1")] = SEEN
        o.discovery.note(service("d1"), ADDED)
        await until(lambda: o.store.device("d1"))
        o.store.record_pass(PassRecord(now=1.0, commit_sha=None, applied=(("d1", "dep", "x"),)))

        o.discovery.note(service("d1"), REMOVED)
        await until(lambda: known(o.store, "d1").state == "gone")
        gone = known(o.store, "d1")
        assert gone.last_seen == 42.0
        assert gone.online_since is None
        assert o.store.applied() == {"d1": {"dep": "x"}}  # history stays until it is back
        assert [e[2] for e in o.store.events(device="d1")] == ["gone"]

        o.discovery.note(service("d1"), ADDED)
        await until(lambda: known(o.store, "d1").state == "online")
        await until(lambda: o.store.applied() == {})
        kinds = [(e[2], e[6]) for e in o.store.events(device="d1")]
        assert kinds[0] == ("restart", "announced again after a goodbye: restarted")
        assert len(o.introducer.calls) == 2
        assert len(o.wakes) == 3

    offline(test)


def test_a_goodbye_and_an_announcement_in_one_batch_is_still_a_restart() -> None:
    async def test(o: Offline) -> None:
        o.resolver.adverts[service("d1")] = SEEN
        o.discovery.note(service("d1"), ADDED)
        await until(lambda: o.store.device("d1"))
        o.store.record_pass(PassRecord(now=1.0, commit_sha=None, applied=(("d1", "dep", "x"),)))
        o.discovery.note(service("d1"), REMOVED)
        o.discovery.note(service("d1"), ADDED)
        await until(lambda: o.store.applied() == {})
        assert known(o.store, "d1").state == "online"
        assert [e[2] for e in o.store.events(device="d1")] == ["restart"]

    offline(test)


def test_a_restart_is_seen_even_if_a_health_sweep_wrote_over_gone() -> None:
    async def test(o: Offline) -> None:
        o.resolver.adverts[service("d1")] = SEEN
        o.discovery.note(service("d1"), ADDED)
        await until(lambda: o.store.device("d1"))
        o.discovery.note(service("d1"), REMOVED)
        await until(lambda: known(o.store, "d1").state == "gone")
        # A sweep that read the device before its goodbye records its (stale) state after it.
        o.store.upsert_device(record("d1"))
        o.discovery.note(service("d1"), ADDED)
        await until(lambda: "restart" in [e[2] for e in o.store.events(device="d1")])

    offline(test)


def test_a_move_is_introduced_and_stale_addresses_dropped_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(discovery, "RECHECK_DELAY", 0.05)

    async def test(o: Offline) -> None:
        o.resolver.adverts[service("d1")] = SEEN
        o.discovery.note(service("d1"), ADDED)
        await until(lambda: o.store.device("d1"))
        # The old A record is still cached for a second after the move's announcement.
        o.resolver.adverts[service("d1")] = Advert("d1", ("10.0.0.2", "10.0.0.1"), 5055, False)
        o.discovery.note(service("d1"), UPDATED)
        await until(lambda: known(o.store, "d1").url == "http://10.0.0.2:5055")
        o.resolver.adverts[service("d1")] = Advert("d1", ("10.0.0.2",), 5055, False)
        await until(lambda: known(o.store, "d1").addresses == ("10.0.0.2",))
        assert len(o.introducer.calls) == 2  # dropping a stale address is no introduction
        assert not o.store.events(device="d1")  # and no restart: there was no goodbye

    offline(test)


def test_a_failed_introduction_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "RETRY_DELAYS", (0.01, 0.01))

    async def test(o: Offline) -> None:
        o.introducer.failures = 2
        o.resolver.adverts[service("d1")] = SEEN
        o.discovery.note(service("d1"), ADDED)
        await until(lambda: o.store.device("d1"))
        assert len(o.introducer.calls) == 3

    offline(test)


def test_bad_names_and_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gitops_orchestrator.discovery")

    async def test(o: Offline) -> None:
        o.resolver.adverts[service("boom")] = OSError("network is unreachable")
        o.resolver.adverts[service("d1")] = SEEN
        for _ in range(2):
            o.discovery.note(service("a.b"), ADDED)
            o.discovery.note(service("boom"), ADDED)
            await until(lambda: service("boom") not in o.discovery._pending)
            await asyncio.sleep(0.02)
        o.discovery.note(service("d1"), ADDED)  # the worker still runs
        await until(lambda: o.store.device("d1"))
        assert service("a.b") not in o.resolver.calls  # never even resolved

    offline(test)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if "boom" in r.getMessage()]
    assert [level for level, _ in levels] == ["WARNING", "DEBUG"]  # once loud, then quiet
    assert any("ignoring advertisement a.b." in r.getMessage() for r in caplog.records)


def test_none_opens_nothing() -> None:
    async def main() -> None:
        store = Store.open(None)
        try:
            found = Discovery(
                "none", introducer=FakeIntroducer(store), store=store, wake=lambda: None
            )
            await found.run()  # returns at once: there is nothing to browse
            await found.start()
            assert found._zeroconf is None
            await found.close()
            await found.close()
        finally:
            store.close()

    asyncio.run(main())


# Real zeroconf: devices in namespace B, the orchestrator's side in namespace A.


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    with made_pair() as pair:
        yield pair


@dataclass
class Side:
    """The orchestrator's side in namespace A."""

    loop: EventLoopIn
    store: Store
    discovery: Discovery
    wakes: list[float]


@pytest.fixture
def side_a(netns_pair: NetnsPair) -> Iterator[Side]:
    store = Store.open(None)
    wakes: list[float] = []
    with EventLoopIn(netns_pair.a, netns_pair.address_a) as loop:
        client: list[httpx.AsyncClient] = []

        async def start() -> Discovery:
            client.append(httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(5.0)))
            introducer = Introducer(
                store, SupervisorClient(client[0]), f"http://{netns_pair.address_a}:3000"
            )
            found = Discovery(
                netns_pair.address_a,
                introducer=introducer,
                store=store,
                wake=lambda: wakes.append(time.monotonic()),
                resolve_timeout=1.0,
            )
            await found.start()
            return found

        async def stop(found: Discovery) -> None:
            await found.close()
            await client[0].aclose()

        found = loop.run(start())
        try:
            yield Side(loop, store, found, wakes)
        finally:
            loop.run(stop(found))
            store.close()


@dataclass
class DeviceProcess:
    """A `gitops-orchestrator device --mdns` process in namespace B."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self) -> None:
        """Until it serves and handles SIGTERM (before that, a signal kills it silently)."""
        ready = f"simulated device {self.name} at"
        wait_for(f"{self.name} ready", lambda: ready in self.output(), device=self)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_running(self) -> None:
        code = self.process.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.output()}"


@pytest.fixture
def devices_b(netns_pair: NetnsPair, tmp_path: Path) -> Iterator[Callable[..., DeviceProcess]]:
    """Starts simulated devices in namespace B; kills what is left at the end."""
    started: list[DeviceProcess] = []
    command = str(Path(sys.executable).with_name("gitops-orchestrator"))

    def start(name: str, host: str, port: int = 5055) -> DeviceProcess:
        argv = netns_pair.command(
            netns_pair.b, command, "device", "--name", name, "--host", host,
            "--port", str(port), "--mdns", "--data-dir", str(tmp_path / "devices"),
        )  # fmt: skip
        log = tmp_path / f"{name}-{len(started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(argv, stdout=output, stderr=output)
        started.append(DeviceProcess(name, process, log))
        return started[-1]

    yield start
    for device in started:
        if device.process.poll() is None:
            device.process.kill()
        device.process.wait(10)
    for device in started:  # shown when the test failed
        print(f"--- {device.log.name}\n{device.log.read_text(errors='replace')}")


def wait_for(what: str, check: Callable[[], T | None], *, device: DeviceProcess | None = None) -> T:
    """Poll `check` for up to 10 s; fail at once if `device` stopped meanwhile."""
    deadline = time.monotonic() + 10.0
    while True:
        value = check()
        if value:
            return value
        if device is not None:
            device.assert_running()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_device_in_another_namespace_is_found_leaves_and_comes_back(
    netns_pair: NetnsPair, side_a: Side, devices_b: Callable[..., DeviceProcess]
) -> None:
    store, host = side_a.store, netns_pair.address_b
    started = time.monotonic()
    device = devices_b("dev1", host)
    wait_for("dev1 online", lambda: state(store, "dev1") == "online", device=device)
    found = known(store, "dev1")
    print(f"\ndiscovery latency: {time.monotonic() - started:.2f} s from the device's start")
    assert found.url == f"http://{host}:5055"
    assert found.addresses == (host,)
    assert found.origin == "mdns"
    assert found.interfaces == DEFAULT_INTERFACES
    store.record_pass(PassRecord(now=time.time(), commit_sha=None, applied=(("dev1", "dep", "x"),)))

    device.wait_ready()
    left = time.monotonic()
    device.process.send_signal(signal.SIGTERM)  # the simulator sends its goodbye as it stops
    wait_for("dev1 gone", lambda: state(store, "dev1") == "gone")
    print(f"goodbye seen after {time.monotonic() - left:.2f} s")
    assert device.process.wait(10) == 0
    assert store.applied() == {"dev1": {"dep": "x"}}
    kinds = [event[2] for event in store.events(device="dev1")]
    assert "gone" in kinds
    assert "restart" not in kinds

    back = time.monotonic()
    device = devices_b("dev1", host)
    wait_for("dev1 online again", lambda: state(store, "dev1") == "online", device=device)
    wait_for("applied forgotten", lambda: store.applied() == {})
    print(f"restart seen after {time.monotonic() - back:.2f} s")
    restarts = [e for e in store.events(device="dev1") if e[2] == "restart"]
    assert [e[6] for e in restarts] == ["announced again after a goodbye: restarted"]
    # Woken for the arrival, the goodbye and the return (the last wake follows the store write).
    wait_for("the reconciler woken three times", lambda: len(side_a.wakes) >= 3)


def test_a_device_that_moves_to_another_address_is_followed(
    netns_pair: NetnsPair, side_a: Side, devices_b: Callable[..., DeviceProcess]
) -> None:
    store, old = side_a.store, netns_pair.address_b
    new = f"{netns_pair.subnet}.3"
    device = devices_b("dev2", old)
    wait_for("dev2 online", lambda: state(store, "dev2") == "online", device=device)
    netns_pair.add_address(netns_pair.b, new)
    device.process.kill()  # no goodbye: only the new announcement tells
    device.process.wait(10)
    moved = time.monotonic()
    device = devices_b("dev2", new)
    url = f"http://{new}:5055"
    wait_for("the new address", lambda: known(store, "dev2").url == url, device=device)
    print(f"\nmove seen after {time.monotonic() - moved:.2f} s")
    # The old A record lingers a second in the cache (RFC 6762 §10.2), then is dropped.
    wait_for("the old address dropped", lambda: known(store, "dev2").addresses == (new,))
    assert state(store, "dev2") == "online"
    assert not [e for e in store.events(device="dev2") if e[2] == "restart"]


def test_bad_advertisements_are_ignored_over_the_network(
    netns_pair: NetnsPair, side_a: Side, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gitops_orchestrator.discovery")
    host = netns_pair.address_b
    infos = [
        ServiceInfo(
            "_webthing._tcp.local.",
            service(name),
            port=port,
            server=f"{server}.local.",
            addresses=[socket.inet_aton(host)] if with_address else [],
            properties={"path": "/", "tls": "0"},
        )
        for name, server, port, with_address in [
            ("bad.name", "badname", 5055, True),
            ("noport", "noport", 0, True),
            ("noaddress", "noaddress", 5055, False),
        ]
    ]

    async def advertise() -> AsyncZeroconf:
        advertiser = AsyncZeroconf(interfaces=[host])
        registered = [await advertiser.async_register_service(info) for info in infos]
        await asyncio.gather(*registered)
        return advertiser

    async def close(advertiser: AsyncZeroconf) -> None:
        await advertiser.async_unregister_all_services()
        await advertiser.async_close()

    def ignored(name: str) -> bool:
        said = f"ignoring advertisement {service(name)}"
        return any(record.getMessage().startswith(said) for record in caplog.records)

    with EventLoopIn(netns_pair.b, host) as loop_b:
        advertiser = loop_b.run(advertise())
        try:
            for name in ("bad.name", "noport", "noaddress"):
                wait_for(f"{name} ignored", partial(ignored, name))
        finally:
            loop_b.run(close(advertiser))
    assert side_a.store.devices() == []
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not messages


def test_an_address_that_is_not_here_is_a_discovery_error(netns_pair: NetnsPair) -> None:
    store = Store.open(None)

    async def start() -> None:
        found = Discovery("10.213.255.254", introducer=FakeIntroducer(store), store=store,
                          wake=lambda: None)  # fmt: skip
        try:
            with pytest.raises(discovery.DiscoveryError, match="cannot browse mDNS on 10"):
                await found.start()
        finally:
            await found.close()

    try:
        with EventLoopIn(netns_pair.a, netns_pair.address_a) as loop:
            loop.run(start())
    finally:
        store.close()
