"""The `device` command's entry point and mDNS advertisement.

mDNS is only ever tried inside a network namespace of the test's own (`unshare --net`), whose
only interface is loopback: nothing is multicast on this machine's real network.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gitops_orchestrator.simulator import Fleet, serve_device

ROOT = Path(__file__).resolve().parent.parent.parent


def test_serve_device_serves_until_stopped_and_keeps_files_in_data_dir(tmp_path: Path) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(
            serve_device("solo", host="127.0.0.1", port=0, data_dir=tmp_path, stop=stop)
        )
        for _ in range(500):  # until the device has made its folder (5 s at most)
            await asyncio.sleep(0.01)
            if (tmp_path / "solo").is_dir():
                break
        stop.set()
        await serving

    asyncio.run(main())
    assert {path.name for path in (tmp_path / "solo").iterdir()} == {"modules", "params", "uploads"}


def test_run_device_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    script = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s');"
        "from gitops_orchestrator.simulator import run_device;"
        f"run_device('proc', port=0, data_dir={str(tmp_path)!r})"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    ) as process:
        try:
            assert process.stderr is not None
            line = ""
            while "simulated device proc at" not in line:
                line = process.stderr.readline()
                assert line, "the device exited before it served"
            url = line.split(" at ")[1].split()[0]
            with httpx.Client(trust_env=False) as client:
                assert client.get(f"{url}/health").status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert list(tmp_path.iterdir()) == [tmp_path / "proc"]  # nothing in the working directory


def test_mdns_needs_an_explicit_interface_list() -> None:
    with pytest.raises(ValueError, match="explicit list"):
        Fleet(mdns_interfaces=[])


# Runs inside the namespace: advertise, resolve, then restart (a goodbye, then a new announce).
_MDNS_SCRIPT = """
import asyncio, json
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from gitops_orchestrator.simulator import Fleet

async def main():
    async with Fleet(mdns_interfaces=["127.0.0.1"]) as fleet:
        [device] = await fleet.add(names=["mdnsdev"])
        browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        info = AsyncServiceInfo("_webthing._tcp.local.", "mdnsdev._webthing._tcp.local.")
        found = await info.async_request(browser_zc.zeroconf, 3000)
        changes = []
        browser = AsyncServiceBrowser(
            browser_zc.zeroconf, "_webthing._tcp.local.",
            handlers=[lambda state_change, **_: changes.append(state_change.name)],
        )
        for _ in range(300):
            if changes:
                break
            await asyncio.sleep(0.01)
        responder = fleet._advertiser._zeroconf.zeroconf
        sent = []
        send = responder.async_send
        def counting_send(out, *args, **kwargs):
            sent.append(out)
            return send(out, *args, **kwargs)
        responder.async_send = counting_send
        await device.restart()
        await asyncio.sleep(0.5)  # a goodbye would be seen by now
        again = AsyncServiceInfo("_webthing._tcp.local.", "mdnsdev._webthing._tcp.local.")
        found_again = await again.async_request(browser_zc.zeroconf, 3000)
        await browser.async_cancel()
        await browser_zc.async_close()
        print(json.dumps({
            "found": found, "port": info.port, "device_port": device.port,
            "addresses": info.parsed_addresses(),
            "properties": {k.decode(): v.decode() for k, v in info.properties.items()},
            "changes": changes, "found_again": found_again,
            "announced_on_restart": sum(1 for out in sent if out.answers),
            "goodbyes_on_restart": sum(
                1 for out in sent for answer, _ in out.answers if answer.ttl == 0
            ),
        }))

asyncio.run(main())
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_mdns_advertisement_in_a_private_network_namespace() -> None:
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot make a network namespace here")
    setup = 'ip link set lo up && ip link set lo multicast on && exec "$0" -c "$1"'
    started = time.monotonic()
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", setup, sys.executable, _MDNS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["found"] is True
    assert seen["port"] == seen["device_port"]
    assert seen["addresses"] == ["127.0.0.1"]
    assert seen["properties"] == {"path": "/", "tls": "0", "address": "127.0.0.1"}
    assert seen["changes"][0] == "Added"
    # Protocol §2: a restarting supervisor sends no goodbye; it announces its name again.
    assert "Removed" not in seen["changes"]
    assert seen["goodbyes_on_restart"] == 0
    assert seen["announced_on_restart"] >= 1
    assert seen["found_again"] is True
    assert time.monotonic() - started < 20
