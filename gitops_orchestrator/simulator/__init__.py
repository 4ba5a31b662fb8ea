"""A supervisor-compatible device simulator, for demos, tests and benchmarks.

It speaks the Wasm-IoT supervisor protocol (docs: supervisor-protocol.md) like the Python
supervisor does, and gives the same verdict on every case of the conformance corpus: it
downloads modules during `/deploy`, is strict and lenient about the body where the supervisor
is, runs functions with wasmtime (WASI, the module folder preopened), chains steps, keeps a
request history, self-registers, ships logs and can advertise over mDNS on named interfaces.
Many devices share one process (`Fleet`); `run_device` serves one for the `device` command.

It is NOT a production supervisor: no security, everything in memory, fault switches for tests.
It must not import the orchestrator's web, store, syncing or source layers.

    deployment   the deploy body read the supervisor's way (pure)
    fetching     the module downloads of a deploy
    runtime      wasmtime runs of one function
    execution    one execution request: run, interpret, chain
    reporting    description, health, registration and log shapes (pure)
    device       SimulatedDevice: state and behaviour of one supervisor
    app          the HTTP routes, one ASGI app for many devices
    serving      sockets and one uvicorn server per batch of devices
    fleet        Fleet / FleetThread / run_device: many devices in one process
    mdns         advertisement on explicit interfaces
"""

from .device import DEFAULT_INTERFACES, DeployRequest, DeviceSettings, Fault, SimulatedDevice
from .execution import HistoryEntry
from .fleet import Fleet, FleetThread, run_device, serve_device, simulated_devices

__all__ = [
    "DEFAULT_INTERFACES",
    "DeployRequest",
    "DeviceSettings",
    "Fault",
    "Fleet",
    "FleetThread",
    "HistoryEntry",
    "SimulatedDevice",
    "run_device",
    "serve_device",
    "simulated_devices",
]
