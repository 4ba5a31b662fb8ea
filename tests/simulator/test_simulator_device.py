"""Simulated devices beyond the deploy corpus: registration, health, restart, faults, queueing,
deletion, chains across devices, logs, and many devices in one process (transcript.md).

Each test runs its fleet inside `asyncio.run`, against a real orchestrator stand-in.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wat
from simulator_support import CASES, DATA, Orchestrator, corpus_files, substitute

from gitops_orchestrator.simulator import (
    DEFAULT_INTERFACES,
    DeviceSettings,
    Fault,
    Fleet,
    SimulatedDevice,
)
from gitops_orchestrator.simulator.app import single_device_app

BODIES = {case["name"]: case["body"] for case in CASES}
# A function that runs for about half a second, to see a queued call before it has run.
SPIN = """(module (func (export "spin") (param $n i32) (result i32)
  (loop $l (local.set $n (i32.sub (local.get $n) (i32.const 1)))
    (br_if $l (i32.gt_s (local.get $n) (i32.const 0))))
  (local.get $n)))"""


@pytest.fixture
def orchestrator() -> Iterator[Orchestrator]:
    files = corpus_files()
    files["/file/module/spin/wasm"] = wat(SPIN)
    # `files` reading out.bin instead of in.bin: the next step of a file chain.
    measure = (DATA / "files.wat").read_text()
    measure = measure.replace('"in.bin")', '"out.bin")').replace("(i32.const 6)", "(i32.const 7)")
    files["/file/module/measure/wasm"] = wat(measure)
    with Orchestrator(files) as server:
        yield server


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def body_for(name: str, orchestrator: Orchestrator, device: SimulatedDevice) -> dict[str, Any]:
    """The corpus body `name`, its placeholders pointing at `orchestrator` and `device`."""
    real = {"http://ORCHESTRATOR": orchestrator.url, "http://SUPERVISOR": device.url}
    body: dict[str, Any] = substitute(BODIES[name], real)
    return body


async def deploy(client: httpx.AsyncClient, device: SimulatedDevice, body: Any) -> httpx.Response:
    return await client.post(f"{device.url}/deploy", json=body)


async def result_of(client: httpx.AsyncClient, call: httpx.Response) -> httpx.Response:
    """The history entry behind an execution answer, once it is no longer pending (404)."""
    url = call.json()["resultUrl"]
    for _ in range(500):  # 10 s
        entry = await client.get(url)
        if entry.status_code != 404:
            break
        await asyncio.sleep(0.02)
    return entry


def test_registers_on_start_and_again_after_a_restart(orchestrator: Orchestrator) -> None:
    async def main() -> None:
        async with Fleet(orchestrator_url=orchestrator.url) as fleet, httpx.AsyncClient() as client:
            [device] = await fleet.add(names=["sup1"])
            [registration] = orchestrator.registrations
            assert registration == {
                "name": "sup1",
                "type": "_webthing._tcp.local.",
                "port": device.port,
                "properties": {"path": "/", "tls": "0", "address": "127.0.0.1"},
                "addresses": ["127.0.0.1"],
                "host": registration["host"],
            }
            assert registration["host"].endswith(".local.")
            assert (
                await deploy(client, device, body_for("minimal-one-function", orchestrator, device))
            ).json() == {"status": "success"}
            assert (await client.get(f"{device.url}/c01/modules/inc/inc?x=1")).status_code == 200

            await device.restart()

            assert len(orchestrator.registrations) == 2
            assert device.deployments == {}
            assert (await client.get(f"{device.url}/c01/modules/inc/inc?x=1")).status_code == 404
            assert (await client.get(f"{device.url}/request-history")).json() == []
            assert (await client.delete(f"{device.url}/deploy/c01")).status_code == 404
            # Started with an orchestrator URL: the header says true even right after a restart.
            health = await client.get(f"{device.url}/health")
            assert health.headers["Custom-Orchestrator-Set"] == "true"

    run(main())


def test_health_header_follows_register_and_is_lost_on_restart(orchestrator: Orchestrator) -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient() as client:
            [device] = await fleet.add()
            health = await client.get(f"{device.url}/health")
            assert health.headers["Custom-Orchestrator-Set"] == "false"
            assert set(health.json()) == {"cpuUsage", "memoryUsage"}

            missing = await client.post(f"{device.url}/register", json={})
            invalid = await client.post(f"{device.url}/register", json={"url": "not a url"})
            valid = await client.post(f"{device.url}/register", json={"url": orchestrator.url})

            assert (missing.status_code, missing.json()) == (
                404,
                {"result": "No url found", "status": "error"},
            )
            assert (invalid.status_code, invalid.json()) == (
                404,
                {"result": "Orchestrator url is invalid", "status": "error"},
            )
            assert (valid.status_code, valid.json()) == (200, {"status": "success"})
            health = await client.get(f"{device.url}/health")
            assert health.headers["Custom-Orchestrator-Set"] == "true"
            assert [log["message"] for log in orchestrator.logs] == [
                f"Orchestrator registered at url {orchestrator.url}"
            ]
            assert orchestrator.registrations == []  # /register is not a self-registration

            await device.restart()
            health = await client.get(f"{device.url}/health")
            assert health.headers["Custom-Orchestrator-Set"] == "false"

    run(main())


def test_description_lists_the_interfaces_and_a_random_platform() -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient() as client:
            default, custom = (
                await fleet.add(2, interfaces=None),
                await fleet.add(interfaces=["millis", "fd_write"]),
            )
            path = "/.well-known/wasmiot-device-description"
            first = (await client.get(default[0].url + path)).json()
            assert first["supervisorInterfaces"] == list(DEFAULT_INTERFACES)
            assert set(first["platform"]) == {"cpu", "memory"}
            assert first["platform"]["memory"]["bytes"] % 4_000_000_000 == 0
            described = (await client.get(custom[0].url + path)).json()
            assert described["supervisorInterfaces"] == ["millis", "fd_write"]

    run(main())


def test_delete_redeploy_and_rejected_redeploy(orchestrator: Orchestrator) -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient() as client:
            [device] = await fleet.add()
            body = body_for("two-functions", orchestrator, device)
            assert (await deploy(client, device, body)).status_code == 200
            bad = copy.deepcopy(body)
            bad["endpoints"]["inc"]["inc"]["operationId"] = "inc"

            rejected = await deploy(client, device, bad)

            assert rejected.status_code == 500
            assert "unexpected keyword argument 'operationId'" in rejected.text
            call = await client.get(f"{device.url}/c02/modules/inc/add?a=2&b=3")
            assert (await result_of(client, call)).json()["result"] == ["5", None]
            assert [request.accepted for request in device.deploy_requests] == [True, False]
            assert device.deploy_requests[1].body == bad

            # The same id again replaces the deployment: here by one of module sq only.
            replacement = body_for("two-modules", orchestrator, device)
            replacement["deploymentId"] = "c02"
            replacement["modules"] = replacement["modules"][1:]
            assert (await deploy(client, device, replacement)).status_code == 200
            gone = await client.get(f"{device.url}/c02/modules/inc/add?a=2&b=3")
            assert (gone.status_code, gone.json()["result"]) == (
                500,
                "module inc not found for this deployment",
            )

            assert (await client.delete(f"{device.url}/deploy/c02")).json() == {"status": "success"}
            again = await client.delete(f"{device.url}/deploy/c02")
            assert (again.status_code, again.json()) == (
                404,
                {"result": "deployment does not exist", "status": "error"},
            )
            assert (await client.get(f"{device.url}/c02/modules/sq/square?x=2")).status_code == 404

    run(main())


def test_post_runs_queued_and_get_runs_before_answering(orchestrator: Orchestrator) -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient() as client:
            [device] = await fleet.add()
            body = body_for("method-post", orchestrator, device)
            body["modules"][0] |= {"id": "spin", "name": "spin"}
            body["modules"][0]["urls"]["binary"] = f"{orchestrator.url}/file/module/spin/wasm"
            for section in (body["endpoints"], body["instructions"]["modules"], body["mounts"]):
                section["spin"] = {"spin": section.pop("inc")["double"]}
            assert (await deploy(client, device, body)).status_code == 200

            queued = await client.post(f"{device.url}/c09/modules/spin/spin?n=2000000000")
            pending = await client.get(queued.json()["resultUrl"])
            assert pending.status_code == 404  # not run yet: still unknown to the history
            done = await result_of(client, queued)
            assert (done.status_code, done.json()["result"], done.json()["method"]) == (
                200,
                ["0", None],
                "POST",
            )

            ran = await client.get(f"{device.url}/c09/modules/spin/spin?n=10")
            entry = await client.get(ran.json()["resultUrl"])  # no polling: GET ran already
            assert (entry.status_code, entry.json()["request_id"]) == (200, "c09:spin:spin:2")

    run(main())


def test_failed_call_history_matches_the_transcript(orchestrator: Orchestrator) -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient() as client:
            [device] = await fleet.add()
            await deploy(client, device, body_for("two-functions", orchestrator, device))
            few = await client.get(f"{device.url}/c02/modules/inc/add?a=2")
            unknown = await client.get(f"{device.url}/c02/modules/inc/nosuch?x=1")
            no_module = await client.get(f"{device.url}/c02/modules/zzz/inc?x=1")

            entry = await result_of(client, few)
            assert entry.status_code == 500
            assert entry.json() == entry.json() | {
                "request_args": {"a": "2"},
                "request_files": {},
                "request_id": "c02:inc:add:1",
                "result": "too few parameters provided: given 1, expected 2",
                "success": False,
            }
            assert entry.json()["work_queued_at"].endswith(" GMT")
            assert (await result_of(client, unknown)).json()["result"] == "'nosuch'"
            assert (no_module.status_code, no_module.json()) == (
                500,
                {"result": "module zzz not found for this deployment", "status": "error"},
            )
            unknown_entry = await client.get(f"{device.url}/request-history/c02:inc:add:99")
            assert unknown_entry.status_code == 404
            history = (await client.get(f"{device.url}/request-history")).json()
            assert [item["request_id"] for item in history] == ["c02:inc:add:1", "c02:inc:nosuch:1"]

    run(main())


def test_chains_across_devices_with_integers_and_files(orchestrator: Orchestrator) -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient() as client:
            first, second = await fleet.add(2)
            chain = body_for("chain-two-steps", orchestrator, second)
            assert (await deploy(client, second, chain)).status_code == 200
            chain = body_for("chain-two-steps", orchestrator, first)
            chain["instructions"]["modules"]["inc"]["inc"]["to"]["url"] = second.url
            assert (await deploy(client, first, chain)).status_code == 200

            hop = await result_of(client, await client.get(f"{first.url}/c04/modules/inc/inc?x=4"))
            assert hop.json()["result"].startswith(f"{second.url}/request-history/c04:sq:square:")
            assert (await client.get(hop.json()["result"])).json()["result"] == ["25", None]

            # write_out's out.bin goes to the next device as the multipart part "out.bin".
            writer = body_for("file-output", orchestrator, first)
            reader = body_for("execution-file-multipart", orchestrator, second)
            reader["modules"][0]["urls"]["binary"] = f"{orchestrator.url}/file/module/measure/wasm"
            reader["mounts"]["files"]["count_in"]["execution"][0]["path"] = "out.bin"
            writer["instructions"]["modules"]["files"]["write_out"]["to"] = reader["endpoints"][
                "files"
            ]["count_in"]
            assert (await deploy(client, second, reader)).status_code == 200
            assert (await deploy(client, first, writer)).status_code == 200
            call = await client.get(f"{first.url}/c07/modules/files/write_out")
            next_url = (await result_of(client, call)).json()["result"]
            counted = await result_of(client, httpx.Response(200, json={"resultUrl": next_url}))
            assert counted.json()["result"] == ["16", None]  # len("hello from wasm\n")
            assert list(counted.json()["request_files"]) == ["out.bin"]

    run(main())


def test_fault_switches(orchestrator: Orchestrator) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            async with Fleet() as fleet:
                [device] = await fleet.add()
                health = f"{device.url}/health"

                device.fault = Fault.ERROR
                assert (await client.get(health)).status_code == 500
                device.fault = Fault.HTML
                page = await client.get(health)
                assert (page.status_code, page.headers["content-type"]) == (
                    200,
                    "text/html; charset=utf-8",
                )
                device.fault = Fault.HANG
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(health, timeout=0.3)
                waiting = asyncio.create_task(client.get(health))
                await asyncio.sleep(0.1)
                assert not waiting.done()
                device.fault = None
                assert (await waiting).status_code == 200  # released when the fault is cleared

                device.fault = Fault.FAIL_DOWNLOADS
                orchestrator.clear()
                body = body_for("minimal-one-function", orchestrator, device)
                assert (await deploy(client, device, body)).status_code == 500
                assert orchestrator.downloads() == []
                device.fault = None
                assert (await deploy(client, device, body)).status_code == 200

                device.fault = Fault.HANG
                hanging = asyncio.create_task(client.get(health))
                await asyncio.sleep(0.1)
            assert (await hanging).status_code == 503  # closing the fleet released it

    run(main())


def test_logs_are_shipped_and_an_absent_orchestrator_changes_nothing(
    orchestrator: Orchestrator,
) -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient() as client:
            logged, orphan = await fleet.add(names=["logged", "orphan"])
            await client.post(f"{logged.url}/register", json={"url": orchestrator.url})
            # Nothing listens on port 1: logs to it fail, the requests do not.
            await client.post(f"{orphan.url}/register", json={"url": "http://127.0.0.1:1"})
            for device in (logged, orphan):
                started = time.monotonic()
                answer = await deploy(
                    client, device, body_for("minimal-one-function", orchestrator, device)
                )
                call = await client.get(f"{device.url}/c01/modules/inc/inc?x=1")
                assert answer.json() == {"status": "success"}
                assert (await result_of(client, call)).json()["result"] == ["2", None]
                assert time.monotonic() - started < 3

            messages = [(log["loglevel"], log["message"]) for log in orchestrator.logs]
            assert messages == [
                ("INFO", f"Orchestrator registered at url {orchestrator.url}"),
                ("INFO", "Deployment created"),
                ("INFO", "Module run"),
                ("DEBUG", "Execution result: 2"),
            ]
            run_log = orchestrator.logs[2]
            assert run_log | {"timestamp": "-"} == {
                "timestamp": "-",
                "loglevel": "INFO",
                "message": "Module run",
                "funcName": "run_module_function",
                "deviceName": "logged",
                "deviceIP": "127.0.0.1",
                "request_id": "c01:inc:inc:1",
                "deployment_id": "c01",
                "module_name": "inc",
            }

    run(main())


def test_fifty_devices_in_one_process(orchestrator: Orchestrator, tmp_path: Path) -> None:
    async def main() -> None:
        async with Fleet(data_dir=tmp_path, orchestrator_url=orchestrator.url) as fleet:
            devices = await fleet.add(50)
            async with httpx.AsyncClient() as client:

                async def use(device: SimulatedDevice) -> Any:
                    await deploy(client, device, body_for("two-functions", orchestrator, device))
                    call = await client.get(f"{device.url}/c02/modules/inc/add?a={device.port}&b=1")
                    return (await result_of(client, call)).json()["result"]

                results = await asyncio.gather(*(use(device) for device in devices))

        assert results == [[str(device.port + 1), None] for device in devices]
        assert len({device.port for device in devices}) == 50
        assert sorted(r["name"] for r in orchestrator.registrations) == sorted(fleet.devices)
        names.extend(fleet.devices)

    names: list[str] = []
    run(main())
    assert {path.name for path in tmp_path.iterdir()} == set(names)
    assert (tmp_path / "sim1" / "modules" / "inc").read_bytes()[:4] == b"\0asm"


def test_re_registers_unless_the_orchestrator_checks_its_health(
    orchestrator: Orchestrator,
) -> None:
    async def main() -> None:
        settings = DeviceSettings(register_renewal=0.3)
        async with (
            Fleet(orchestrator_url=orchestrator.url, settings=settings) as fleet,
            httpx.AsyncClient() as client,
        ):
            checked, forgotten = await fleet.add(names=["checked", "forgotten"])
            for _ in range(8):  # 0.8 s: more than two renewal periods
                # Only a check from the orchestrator's host resets the timer (protocol §2).
                await client.get(f"{checked.url}/health", headers={"X-Forwarded-For": "127.0.0.1"})
                await client.get(f"{forgotten.url}/health", headers={"X-Forwarded-For": "10.9.9.9"})
                await asyncio.sleep(0.1)
        names = [registration["name"] for registration in orchestrator.registrations]
        assert names.count("checked") == 1
        assert names.count("forgotten") >= 2

    run(main())


def test_one_device_as_a_plain_asgi_app(tmp_path: Path) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as outgoing:
            device = SimulatedDevice(
                "alone", host="127.0.0.1", port=5000, folder=tmp_path, http=outgoing
            )
            transport = httpx.ASGITransport(app=single_device_app(device))
            async with httpx.AsyncClient(transport=transport, base_url=device.url) as client:
                described = await client.get("/.well-known/wasmiot-device-description")
                gone = await client.delete("/deploy/nothing")
        assert described.json()["supervisorInterfaces"] == list(DEFAULT_INTERFACES)
        assert gone.status_code == 404

    run(main())


class Recording:
    """An `Announcer` noting when each device was announced (no multicast at all), and how
    many registrations `orchestrator` had then."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.announced: list[tuple[str, float, int]] = []
        self.goodbyes: list[str] = []

    async def advertise(self, device: SimulatedDevice) -> None:
        registered = len(self.orchestrator.registrations)
        self.announced.append((device.name, time.monotonic(), registered))

    async def withdraw(self, device: SimulatedDevice) -> None:
        self.goodbyes.append(device.name)


def test_announces_before_it_registers_and_says_no_goodbye(orchestrator: Orchestrator) -> None:
    """Protocol §2: the announcement comes about 0.4 s before the registration POST."""

    async def main() -> None:
        announcer = Recording(orchestrator)
        settings = DeviceSettings(register_delay=0.3)
        async with Fleet(orchestrator_url=orchestrator.url, settings=settings) as fleet:
            [device] = await fleet.add(names=["sup1"])
            assert len(orchestrator.registrations) == 1
            device._announcer = announcer  # as a Fleet with mDNS gives it its responder
            await device.restart()
            registered = time.monotonic()
            assert len(orchestrator.registrations) == 2
            await device.stop()
        [(name, announced, registrations_then)] = announcer.announced
        assert (name, registrations_then) == ("sup1", 1)  # announced before it registered
        assert 0.3 <= registered - announced < 3.0
        assert announcer.goodbyes == []  # neither the restart nor the stop said goodbye

    run(main())


def test_registers_once_per_start_and_never_retries(orchestrator: Orchestrator) -> None:
    """Protocol §2: an orchestrator down at that moment never gets the registration."""
    from conftest import free_port

    async def main() -> None:
        down = f"http://127.0.0.1:{free_port()}"
        async with Fleet(orchestrator_url=down) as fleet, httpx.AsyncClient() as client:
            [device] = await fleet.add(names=["sup1"])
            assert (device.registration_attempts, device.registrations) == (1, 0)
            await asyncio.sleep(1.0)  # a retry would have come by now
            assert device.registration_attempts == 1
            # It still says it knows an orchestrator: no restart sign for anyone.
            health = await client.get(f"{device.url}/health")
            assert health.headers["Custom-Orchestrator-Set"] == "true"
            await device.restart()
            assert device.registration_attempts == 2

    run(main())


def test_hostile_answers_nested_and_oversized() -> None:
    async def main() -> None:
        async with Fleet() as fleet, httpx.AsyncClient(timeout=10) as client:
            [device] = await fleet.add()
            for path in ("/health", "/.well-known/wasmiot-device-description", "/deploy"):
                device.fault = Fault.NESTED
                nested = await client.request(
                    "POST" if path == "/deploy" else "GET", device.url + path
                )
                assert nested.status_code == 200
                assert nested.content == b"[" * 60000
                device.fault = Fault.OVERSIZED
                async with client.stream("GET", device.url + path) as huge:
                    assert huge.status_code == 200
                    assert "content-length" not in huge.headers  # the reader has to count
                    size = 0
                    async for chunk in huge.aiter_bytes():
                        size += len(chunk)
                        if size > 4 * 1024 * 1024:
                            break  # a client may stop reading; the device copes
                assert size > 4 * 1024 * 1024
            device.fault = None
            assert (await client.get(device.url + "/health")).status_code == 200

    run(main())
