"""mDNS discovery: supervisors advertising `_webthing._tcp.local.` become known devices.

A zeroconf browser runs on the interfaces named by the setting (`all`, `none`, or addresses;
protocol §1, design "mDNS safety"). Its events are merged per service name (python-zeroconf's
precedence: Added, Remove, Update) and each batch is handled once: a new device, or one whose
address, port or tls changed, is introduced; a goodbye marks it `gone` (its history stays); an
announcement after a goodbye is a restart (protocol §2): what it ran is forgotten. The
reconciler is woken once per batch. Bad advertisements are logged at DEBUG and dropped.
This module is the only one that speaks zeroconf and maps its errors. It never multicasts on
interfaces it was not given, never deploys, and never decides what a device should run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

import ifaddr
import zeroconf
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .errors import OrchestratorError
from .fleetdb import DeviceRecord, Event

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_webthing._tcp.local."
_SUFFIX = "." + SERVICE_TYPE
# RFC 6762 §10.2: records replaced by a cache-flush announcement stay cached one more second,
# so a moved device first resolves with its old address too; looking again drops it.
RECHECK_DELAY = 1.5
# A supervisor may announce itself before its HTTP server answers: retry its introduction
# (seconds before each try), then wait for its next announcement.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
# Seconds between tries to start the browser when the interfaces are not usable (yet).
START_RETRY_MAX = 60.0

Interfaces = list[str] | InterfaceChoice  # [] is `none`


class DiscoveryError(OrchestratorError):
    """mDNS cannot be used now (zeroconf or socket error); mapped here only."""


class BadAdvertisement(ValueError):
    """An advertisement that no supervisor would send; it is ignored."""


class Change(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@dataclass(frozen=True)
class Pending:
    """What happened to one service name since its last handling."""

    change: Change
    goodbye: bool = False
    """A goodbye was merged in: a following add is a restart, even if no handling saw it."""


def merged(pending: Pending | None, change: Change) -> Pending:
    """`pending` with `change` merged in; precedence Added, Remove, Update (as zeroconf)."""
    goodbye = change is Change.REMOVED or (pending is not None and pending.goodbye)
    if pending is None or change is Change.ADDED:
        return Pending(change, goodbye)
    if change is Change.REMOVED and pending.change is not Change.ADDED:
        return Pending(Change.REMOVED, goodbye)
    return Pending(pending.change, goodbye)


@dataclass(frozen=True)
class Advert:
    """What a resolved advertisement says about a device."""

    name: str
    addresses: tuple[str, ...]
    port: int
    tls: bool


class Action(StrEnum):
    IGNORE = "ignore"
    INTRODUCE = "introduce"  # new, or its address, port or tls changed
    RESTART = "restart"  # announced after a goodbye: introduce, and forget what it ran
    READDRESS = "readdress"  # only stale addresses left: drop them, nothing else to do
    GONE = "gone"


def action(pending: Pending, known: DeviceRecord | None, seen: Advert | None) -> Action:
    """What to do with one handled name. Purely computational; `Discovery` applies it."""
    if pending.change is Change.REMOVED or seen is None:
        # An add that cannot be resolved after a goodbye: the goodbye was the last word.
        left = pending.change is Change.REMOVED or pending.goodbye
        gone = left and known is not None and known.state != "gone"
        return Action.GONE if gone else Action.IGNORE
    if known is None:
        return Action.INTRODUCE
    if known.state == "gone" or pending.goodbye:
        return Action.RESTART
    url = urlsplit(known.url)
    if seen.port != known.port or seen.tls != (url.scheme == "https"):
        return Action.INTRODUCE
    if set(seen.addresses) - set(known.addresses) or url.hostname not in seen.addresses:
        return Action.INTRODUCE
    if seen.addresses != known.addresses:
        return Action.READDRESS
    return Action.IGNORE


def device_name(service_name: str) -> str:
    """The instance name of `<name>._webthing._tcp.local.`; BadAdvertisement if not one."""
    if not service_name.lower().endswith(_SUFFIX):
        raise BadAdvertisement(f"{service_name!r} is not a {SERVICE_TYPE} instance")
    name = service_name[: -len(_SUFFIX)]
    if not name or "." in name:
        raise BadAdvertisement(f"{name!r} is not a device name (empty or with a dot)")
    return name


def advert(info: ServiceInfo) -> Advert:
    """The device that `info` (however complete) describes; BadAdvertisement if none."""
    name = device_name(info.name)
    port = info.port
    if port is None or not 0 < port < 65536:
        raise BadAdvertisement(f"{name}: no valid port ({port})")
    properties = info.decoded_properties
    # A records (newest first when resolved from zeroconf's cache), then the TXT address.
    # Link-local IPv6 needs an interface scope that a URL cannot carry well: left out.
    candidates = [*info.parsed_scoped_addresses(IPVersion.All), properties.get("address") or ""]
    addresses: list[str] = []
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if not address.is_link_local and str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise BadAdvertisement(f"{name}: no usable address")
    return Advert(name, tuple(addresses), port, tls=(properties.get("tls") or "0") == "1")


def parse_interfaces(setting: str) -> Interfaces:
    """`all`, `none` (or empty: no mDNS at all) or comma-separated IP addresses."""
    text = setting.strip().lower()
    if text == "all":
        return InterfaceChoice.All
    if text in ("none", ""):
        return []
    addresses = [item.strip() for item in text.split(",") if item.strip()]
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"not `all`, `none` or an IP address: {address!r}") from None
    return list(dict.fromkeys(addresses))


def _missing(interfaces: Interfaces) -> list[str]:
    """The addresses no local interface has: zeroconf leaks a socket when given one."""
    if not isinstance(interfaces, list):
        return []
    ips = (ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips)
    here = {ipaddress.ip_address(ip if isinstance(ip, str) else ip[0]) for ip in ips}
    return [address for address in interfaces if ipaddress.ip_address(address) not in here]


class Introducer(Protocol):
    """Fetches a device's description and records it online (`devices.Introducer`)."""

    async def introduce(
        self, name: str, *, addresses: Sequence[str], port: int, tls: bool, origin: str
    ) -> DeviceRecord | None: ...


class DeviceStore(Protocol):
    """The device rows of the store (`store.Store`)."""

    def device(self, name: str) -> DeviceRecord | None: ...

    def upsert_device(self, record: DeviceRecord, *, event: Event | None = None) -> None: ...

    def forget_applied(self, device: str, *, now: float, why: str) -> None: ...


class Discovery:
    """Browses for supervisors and keeps the store's devices in step with what it hears.

    `start()`/`close()`, or `run()` as a background loop. With `none` interfaces nothing is
    opened. `resolve` replaces the zeroconf lookup (tests).
    """

    def __init__(
        self,
        interfaces: str,
        *,
        introducer: Introducer,
        store: DeviceStore,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.time,
        resolve_timeout: float = 3.0,
        resolve: Callable[[str], Awaitable[Advert | None]] | None = None,
    ) -> None:
        self.interfaces = parse_interfaces(interfaces)
        self._where = (
            ", ".join(self.interfaces) if isinstance(self.interfaces, list) else "all interfaces"
        )
        self._introducer = introducer
        self._store = store
        self._wake = wake
        self._clock = clock
        self._resolve_timeout = resolve_timeout
        self._resolve = resolve or self._resolve_with_zeroconf
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._pending: dict[str, Pending] = {}
        self._ready = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._retries: dict[str, int] = {}
        # Who said goodbye: a health sweep in flight may record such a device online again.
        self._left: set[str] = set()
        self._failing: set[str] = set()  # keys of failures logged at WARNING already

    async def start(self) -> None:
        """Start browsing (and handling batches); DiscoveryError if mDNS cannot be used."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._handle_batches(), name="mdns-discovery")
        if not self.interfaces or self._zeroconf is not None:
            return
        try:
            if missing := _missing(self.interfaces):
                raise OSError(f"no interface has {', '.join(missing)}")
            self._zeroconf = AsyncZeroconf(interfaces=self.interfaces)
            self._browser = AsyncServiceBrowser(
                self._zeroconf.zeroconf, SERVICE_TYPE, handlers=[self._on_service_change]
            )
        except (zeroconf.Error, OSError, RuntimeError) as exc:
            await self._close_zeroconf()
            raise DiscoveryError(f"cannot browse mDNS on {self._where}: {exc}") from exc
        logger.info("browsing mDNS for %s on %s", SERVICE_TYPE, self._where)

    async def close(self) -> None:
        """Stop browsing and handling; safe to call more than once."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        await self._close_zeroconf()

    async def run(self) -> None:
        """Browse until cancelled, retrying a start that fails (interfaces not up yet)."""
        if not self.interfaces:
            return
        delay = 1.0
        try:
            while True:
                try:
                    await self.start()
                    break
                except DiscoveryError as exc:
                    self._failed("start", "%s; retrying in %.0f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, START_RETRY_MAX)
            self._failing.discard("start")
            await asyncio.Event().wait()
        finally:
            await self.close()

    def note(self, service_name: str, change: Change) -> None:
        """Queue `change` for the next batch (merged with what is queued for the name)."""
        self._pending[service_name] = merged(self._pending.get(service_name), change)
        self._ready.set()

    def _on_service_change(self, **event: Any) -> None:
        # zeroconf calls handlers on the event loop, once per name per packet, by keyword.
        if event["service_type"] == SERVICE_TYPE:
            state_change: ServiceStateChange = event["state_change"]
            self.note(event["name"], Change(state_change.name.lower()))

    async def _handle_batches(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, {}
            acted = await asyncio.gather(*(self._handle(n, p) for n, p in batch.items()))
            if any(acted):
                self._wake()

    async def _handle(self, service_name: str, pending: Pending) -> bool:
        """Handle one name's merged events; True when the store changed."""
        try:
            name = device_name(service_name)
            if pending.change is Change.REMOVED:
                self._retries.pop(name, None)
            seen = None if pending.change is Change.REMOVED else await self._resolve(service_name)
            known = await asyncio.to_thread(self._store.device, name)
            if name in self._left:
                pending = Pending(pending.change, goodbye=True)
            changed = await self._apply(name, action(pending, known, seen), known, seen)
            self._failing.discard(service_name)
            return changed
        except BadAdvertisement as exc:
            logger.debug("ignoring advertisement %s: %s", service_name, exc)
        except (OrchestratorError, OSError) as exc:
            self._failed(service_name, "mDNS: cannot handle %s: %s", service_name, exc)
        except Exception:
            logger.exception("mDNS: unexpected error handling %s", service_name)
        return False

    async def _apply(
        self, name: str, todo: Action, known: DeviceRecord | None, seen: Advert | None
    ) -> bool:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if todo is Action.GONE and known is not None:
            now = self._clock()
            gone = dataclasses.replace(known, state="gone", online_since=None, last_seen=now)
            event = Event("gone", f"{name} said goodbye (mDNS)", device=name)
            await asyncio.to_thread(self._store.upsert_device, gone, event=event)
            logger.info("device %s left (mDNS goodbye)", name)
            self._left.add(name)
            return True
        if seen is None or todo is Action.IGNORE:
            return False
        if todo is Action.READDRESS and known is not None:
            record = dataclasses.replace(known, addresses=seen.addresses)
            await asyncio.to_thread(self._store.upsert_device, record)
            return True
        introduced = await self._introducer.introduce(
            name, addresses=seen.addresses, port=seen.port, tls=seen.tls, origin="mdns"
        )
        if introduced is None:
            self._retry(name)
            return False
        self._retries.pop(name, None)
        self._left.discard(name)
        if todo is Action.RESTART:
            why = "announced again after a goodbye: restarted"
            await asyncio.to_thread(self._store.forget_applied, name, now=self._clock(), why=why)
        self._later(name, RECHECK_DELAY)
        return True

    def _failed(self, key: str, message: str, *args: object) -> None:
        """WARNING the first time, DEBUG while it repeats (zeroconf's QuietLogger)."""
        level = logging.DEBUG if key in self._failing else logging.WARNING
        self._failing.add(key)
        logger.log(level, message, *args)

    def _retry(self, name: str) -> None:
        tries = self._retries.pop(name, 0)
        if tries < len(RETRY_DELAYS):
            self._retries[name] = tries + 1
            self._later(name, RETRY_DELAYS[tries])

    def _later(self, name: str, delay: float) -> None:
        """Look at `name` again in `delay` seconds (an update, with its usual rules)."""
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(delay, self.note, name + _SUFFIX, Change.UPDATED)

    async def _resolve_with_zeroconf(self, service_name: str) -> Advert | None:
        if self._zeroconf is None:
            return None
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, service_name)
            await info.async_request(self._zeroconf.zeroconf, self._resolve_timeout * 1000)
        except (zeroconf.Error, OSError) as exc:
            raise DiscoveryError(f"cannot resolve {service_name}: {exc}") from exc
        if info.port is None and not info.decoded_properties:
            return None  # nothing answered: the service is not there (any more)
        return advert(info)

    async def _close_zeroconf(self) -> None:
        browser, self._browser = self._browser, None
        instance, self._zeroconf = self._zeroconf, None
        with contextlib.suppress(zeroconf.Error, OSError):
            if browser is not None:
                await browser.async_cancel()
            if instance is not None:
                await instance.async_close()
