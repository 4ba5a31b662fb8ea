"""mDNS advertisement of simulated devices, on explicitly named interfaces only.

A device is advertised like the supervisor: `<name>._webthing._tcp.local.` with the port in SRV,
its address in A, and TXT `path=/`, `tls=0`, `address=<ip>`. There is deliberately no "all
interfaces" default: tests, demos and benchmarks must never multicast on the machine's real
network (use loopback in a network namespace of their own).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from .device import SimulatedDevice
from .reporting import SERVICE_TYPE


def service_info(device: SimulatedDevice) -> ServiceInfo:
    """The record set a supervisor announces for `device`."""
    return ServiceInfo(
        SERVICE_TYPE,
        f"{device.name}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(device.host)],
        port=device.port,
        properties={"path": "/", "tls": "0", "address": device.host},
        server=f"{device.name}.local.",
    )


class Advertiser:
    """One zeroconf responder for many devices, bound to `interfaces` (IPv4 addresses)."""

    def __init__(self, interfaces: Sequence[str]) -> None:
        if not interfaces or any(not isinstance(item, str) for item in interfaces):
            raise ValueError("mDNS needs an explicit list of interface addresses")
        self._zeroconf = AsyncZeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only)
        self._infos: dict[str, ServiceInfo] = {}

    async def advertise(self, device: SimulatedDevice) -> None:
        """Announce `device`; a name announced before (a restart) is announced again."""
        info = service_info(device)
        if device.name in self._infos:
            await (await self._zeroconf.async_update_service(info))
        else:
            await (await self._zeroconf.async_register_service(info))
        self._infos[device.name] = info

    async def withdraw(self, device: SimulatedDevice) -> None:
        """Send the goodbye of `device` (a real supervisor never does: for tests of goodbyes)."""
        info = self._infos.pop(device.name, None)
        if info is not None:
            await (await self._zeroconf.async_unregister_service(info))

    async def close(self) -> None:
        """Shut the responder down; zeroconf sends the goodbyes of every name then."""
        await self._zeroconf.async_unregister_all_services()
        await self._zeroconf.async_close()
