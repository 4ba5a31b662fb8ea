"""Two network namespaces joined by a veth pair, for real mDNS between "hosts" in tests.

Everything lives inside namespaces the fixture makes (as root) and deletes at teardown, even
when the test fails: nothing is ever multicast on this machine's real interfaces. Names and the
subnet (in the private test range 10.213.x.0/24) are unique per fixture, so repeated or
parallel runs do not collide (`made_pair`). Processes run in a namespace with `pair.command(...)`; a
thread of the test process enters one with `EventLoopIn`, which is how a test drives the
orchestrator's own objects there and still reads their results directly.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000  # <sched.h>; os.setns only exists from Python 3.12
_counter = itertools.count(1)


@dataclass(frozen=True)
class NetnsPair:
    """Namespaces `a` and `b`; `address_a` (on `link_a`, in a) and `address_b` can talk."""

    a: str
    b: str
    link_a: str
    link_b: str
    subnet: str
    """The first three octets, e.g. "10.213.7": hosts are `f"{subnet}.{n}"`."""

    @property
    def address_a(self) -> str:
        return f"{self.subnet}.1"

    @property
    def address_b(self) -> str:
        return f"{self.subnet}.2"

    def command(self, namespace: str, *argv: str) -> list[str]:
        """`argv` run inside `namespace`."""
        return ["ip", "netns", "exec", namespace, *argv]

    def add_address(self, namespace: str, address: str) -> None:
        """One more address on the namespace's veth end (a second IP for the same host)."""
        link = self.link_a if namespace == self.a else self.link_b
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", link)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def made_pair() -> Iterator[NetnsPair]:
    """Namespaces A and B with a veth pair between them, multicast on; deleted on exit.

    Skips the calling test when namespaces cannot be made here. Use it in a fixture:
    `with made_pair() as pair: yield pair`.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("needs ip(8) from iproute2")
    number = next(_counter)
    tag = f"{os.getpid() % 100_000}x{number}"
    pair = NetnsPair(
        a=f"gitops-test-{tag}-a",
        b=f"gitops-test-{tag}-b",
        link_a=f"gv{tag}a"[:15],
        link_b=f"gv{tag}b"[:15],
        subnet=f"10.213.{(os.getpid() + number) % 254 + 1}",
    )
    made: list[str] = []
    try:
        for namespace in (pair.a, pair.b):
            try:
                _ip("netns", "add", namespace)
            except RuntimeError as exc:
                pytest.skip(f"cannot create network namespaces here: {exc}")
            made.append(namespace)
        # Made inside the namespaces directly, so the names never appear in the host's.
        _ip("link", "add", pair.link_a, "netns", pair.a, "type", "veth",
            "peer", "name", pair.link_b, "netns", pair.b)  # fmt: skip
        for namespace, link, address in (
            (pair.a, pair.link_a, pair.address_a),
            (pair.b, pair.link_b, pair.address_b),
        ):
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", link)
            for device in ("lo", link):
                _ip("-n", namespace, "link", "set", device, "multicast", "on")
                _ip("-n", namespace, "link", "set", device, "up")
        yield pair
    finally:
        for namespace in made:
            # Deleting a namespace also deletes its veth end, and with it the peer.
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def _enter(namespace: str) -> None:
    """Move the calling thread (only it) into `namespace`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"setns({namespace}): {os.strerror(number)}")
    finally:
        os.close(fd)


class EventLoopIn:
    """An event loop on a thread of its own inside a namespace: sockets it makes live there.

    `with EventLoopIn(pair.a, pair.address_a) as loop: loop.run(coroutine)`. Threads started
    from it (asyncio's executor) inherit the namespace. `address` must be one of the
    namespace's: entering is checked by binding to it before anything runs.
    """

    def __init__(self, namespace: str, address: str) -> None:
        self._namespace = namespace
        self._address = address
        self._loop = asyncio.new_event_loop()
        self._entered = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"netns-{namespace}")

    def _main(self) -> None:
        try:
            _enter(self._namespace)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((self._address, 0))
        except BaseException as exc:
            self._error = exc
            self._entered.set()
            return
        self._entered.set()
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def __enter__(self) -> EventLoopIn:
        self._thread.start()
        self._entered.wait(10)
        if self._error is not None:
            self._thread.join()
            self._loop.close()
            raise RuntimeError(f"cannot enter {self._namespace}") from self._error
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coroutine` on the namespace's loop; its result, or its exception."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self._loop.shutdown_asyncgens())
            self.run(self._loop.shutdown_default_executor())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
