"""What a device tells about itself: description, health, registration, log lines.

The shapes are the Python supervisor's (transcript §1-§4, §12, §13). Pure: the device sends
them.
"""

from __future__ import annotations

import random
import socket
from datetime import datetime
from typing import Any

SERVICE_TYPE = "_webthing._tcp.local."
# The three CPU names the supervisor picks from at random (transcript §2).
_CPUS = (
    "12th Gen Intel(R) Core(TM) i7-12700H",
    "AMD EPYC\u2122 Embedded 7551",
    "Dual-core Arm Cortex-M0+",
)


def description(interfaces: list[str]) -> dict[str, Any]:
    """`/.well-known/wasmiot-device-description`: `platform` is made up again on every call."""
    return {
        "platform": {
            "cpu": {
                "clockSpeed": {"Hz": random.uniform(1e9, 3e9)},
                "humanReadableName": random.choice(_CPUS),
            },
            "memory": {"bytes": random.randint(1, 15) * 4_000_000_000},
        },
        "supervisorInterfaces": list(interfaces),
    }


def health() -> dict[str, float]:
    """The `/health` body: `cpuUsage` in percent, `memoryUsage` as a fraction."""
    return {"cpuUsage": round(random.uniform(0, 25), 1), "memoryUsage": random.random() / 20}


def registration(name: str, host: str, port: int) -> dict[str, Any]:
    """The JSON a supervisor POSTs to `<orchestrator>/file/device/discovery/register`."""
    return {
        "name": name,
        "type": SERVICE_TYPE,
        "port": port,
        "properties": {"path": "/", "tls": "0", "address": host},
        "addresses": [host],
        "host": f"{socket.gethostname()}.local.",
    }


def log_record(
    level: str, message: str, function: str, *, device: str, address: str, **extra: str
) -> dict[str, str]:
    """One `logData` line; `extra` carries request_id, deployment_id and module_name."""
    return {
        "timestamp": datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3],
        "loglevel": level,
        "message": message,
        "funcName": function,
        "deviceName": device,
        "deviceIP": address,
        **extra,
    }
