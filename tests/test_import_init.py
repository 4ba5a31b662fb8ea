"""`import-init`: an original orchestrator's `init/` export becomes a repository that deploys.

The export under tests/data/original-export/ is written field for field from the original's
format (docs/migration.md): MongoDB `_id`s, `wasm.fileName` hashes and absolute paths,
`dataFiles`, generated OpenAPI descriptions, `fullManifest` bodies, the orchestrator's own
device entry and a core module. Its binaries are built here from WAT, as a real export holds
them in `init/files/`. Everything runs for real: git, `validate`, `serve` on 127.0.0.1 and
simulated devices.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import CLI, SAMPLE_REPO, eventually, free_port, git, wat
from test_deploy_e2e import _answers

from gitops_orchestrator.simulator.fleet import FleetThread

DATA = Path(__file__).resolve().parent / "data"
EXPORT = DATA / "original-export" / "init"
# double's `half` returns a float, which the repository format cannot express.
DOUBLE_AND_HALF = """(module
  (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
  (func (export "half") (param i32) (result f32) (f32.div (f32.convert_i32_s (local.get 0))
    (f32.const 2))))"""
# The binaries of the export by original file name; thermo.wasm is missing on purpose.
BINARIES = {
    "fibo.wasm": (SAMPLE_REPO / "modules/fibo/fibo.wat").read_text(),
    "greeter.wasm": (SAMPLE_REPO / "modules/banner/banner.wat").read_text(),
    "double.wasm": DOUBLE_AND_HALF,
    "square.wasm": (DATA / "sq.wat").read_text(),
    "sketch.wasm": (DATA / "inc.wat").read_text(),
}
GREETING = (EXPORT / "files" / "hello-greeting.txt").read_bytes()


def make_export(root: Path) -> Path:
    """A copy of the fixture export with its binaries built, as `<root>/init`."""
    init = root / "init"
    shutil.copytree(EXPORT, init)
    for name, text in BINARIES.items():
        (init / "files" / name).write_bytes(wat(text))
    return init


def import_init(source: Path, into: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "import-init", str(source), "--into", str(into), *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def report(source: Path, into: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = import_init(source, into, "--format", "json", *extra)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def messages(document: dict[str, Any], key: str = "problems") -> list[str]:
    return [f"{item['source']} {item['record']} {item['message']}" for item in document[key]]


def found(document: dict[str, Any], *parts: str, key: str = "problems") -> str:
    """The one finding whose text holds every part."""
    hits = [m for m in messages(document, key) if all(part in m for part in parts)]
    assert len(hits) == 1, (parts, messages(document, key))
    return hits[0]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def imported(tmp_path: Path) -> tuple[Path, int, dict[str, Any]]:
    repo = tmp_path / "fleet"
    code, document = report(make_export(tmp_path / "export"), repo)
    return repo, code, document


def test_the_export_becomes_a_committed_repository_that_validates(
    imported: tuple[Path, int, dict[str, Any]],
) -> None:
    repo, code, document = imported
    assert code == 1  # converted, with problems reported
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "HEAD") == document["commit_sha"]
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    checked = subprocess.run(
        [str(CLI), "validate", str(repo), "--ref", "HEAD"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert document["modules"] == {
        "double": "68625a3944799bc88dfe2d6b",
        "fibo": "68625a3144799bc88dfe2d69",
        "greeter": "68625a4a44799bc88dfe2d6e",
        "square-fe2d73": "68625b1744799bc88dfe2d73",
        "square-fe2d75": "68625b2244799bc88dfe2d75",
    }
    assert sorted(document["deployments"]) == [
        "failing-over", "fibo-chain", "greet", "idle", "wandering",
    ]  # fmt: skip
    assert document["devices"] == ["garage-pi", "hall-pi", "kitchen-pi"]


def test_modules_keep_functions_mounts_outputs_and_data_files(
    imported: tuple[Path, int, dict[str, Any]],
) -> None:
    repo, _, _ = imported
    greeter = repo / "modules" / "greeter"
    assert load(greeter / "module.yaml") == {
        "name": "greeter",
        "wasm": "greeter.wasm",
        "functions": {
            "render": {
                "method": "get",
                "params": ["integer"],
                "output": "application/octet-stream",
                "mounts": [
                    {"path": "greeting.txt", "stage": "deployment",
                     "media_type": "application/octet-stream"},
                    {"path": "out.bin", "stage": "output",
                     "media_type": "application/octet-stream"},
                ],
            },
            "count": {
                "method": "post",
                "params": [],
                "output": "integer",
                "mounts": [
                    {"path": "in.bin", "stage": "execution",
                     "media_type": "application/octet-stream"},
                ],
            },
        },
        "data": {"greeting.txt": "greeting.txt"},
    }  # fmt: skip
    # The data file is the export's hello-greeting.txt, under its mount name.
    assert (greeter / "greeting.txt").read_bytes() == GREETING
    assert (greeter / "greeter.wasm").read_bytes() == wat(BINARIES["greeter.wasm"])
    assert sorted(p.name for p in greeter.iterdir()) == [
        "greeter.wasm", "greeting.txt", "module.yaml",
    ]  # fmt: skip
    assert load(repo / "modules/double/module.yaml")["functions"] == {
        "double": {"method": "get", "params": ["integer"], "output": "integer"}
    }


def test_deployments_keep_devices_and_failovers_and_devices_keep_cordons(
    imported: tuple[Path, int, dict[str, Any]],
) -> None:
    repo, _, _ = imported
    assert load(repo / "deployments/fibo-chain.yaml") == {
        "name": "fibo-chain",
        "sequence": [
            {"module": "fibo", "function": "fibo", "device": "kitchen-pi",
             "failovers": ["hall-pi"]},
            {"module": "double", "function": "double", "device": "hall-pi"},
        ],
    }  # fmt: skip
    # In failover at export time: the step names its original device again, then the rest.
    assert load(repo / "deployments/failing-over.yaml")["sequence"] == [
        {"module": "fibo", "function": "fibo", "device": "kitchen-pi",
         "failovers": ["hall-pi", "garage-pi"]},
    ]  # fmt: skip
    assert load(repo / "deployments/wandering.yaml")["sequence"] == [
        {"module": "square-fe2d75", "function": "square"}
    ]
    assert load(repo / "devices.yaml") == {
        "devices": {"garage-pi": {"cordoned": True}, "hall-pi": {}, "kitchen-pi": {}}
    }
    header = (repo / "deployments/fibo-chain.yaml").read_text().splitlines()[0]
    assert header.startswith("#")
    assert "68625c0144799bc88dfe2d81" in header
    assert "Fibo Chain" in git(repo, "log", "-1", "--format=%B")


def test_every_record_not_carried_over_is_reported_with_its_reason(
    imported: tuple[Path, int, dict[str, Any]],
) -> None:
    _, _, document = imported
    modules, deployments, devices = (
        "module/modules.json", "deployment/manifests.json", "device/devices.json",
    )  # fmt: skip
    found(document, f"{modules}[1]", "function 'half'", "'float'", "not imported")
    found(document, f"{modules}[2]", "'Greeter'", "written as 'greeter'")
    found(document, f"{modules}[2]", "data file 'sample.bin'", "not carried over")
    found(document, f"{modules}[4]", "'sketch'", "never described")
    found(document, f"{modules}[5]", "shares the name 'square'", "written as 'square-fe2d73'")
    found(document, f"{modules}[6]", "shares the name 'square'", "written as 'square-fe2d75'")
    found(document, f"{modules}[7]", "'thermo'", "files/thermo.wasm is missing")
    found(document, f"{modules}[8]", "'blink'", "another module's file")
    found(document, f"{devices}[4]", "'sensor.local'", "not imported")
    found(document, f"{deployments}[0]", "'Fibo Chain'", "written as 'fibo-chain'")
    found(document, f"{deployments}[2]", "'thermo-watch'", "was not imported", "not imported")
    found(document, f"{deployments}[3]", "'datalist-feed'", "core module 'core:Datalist'")
    found(document, f"{deployments}[4]", "'lost'", "68625aff44799bc88dfe2d6d", "not in the export")
    found(document, f"{deployments}[5]", "'wandering'", "686259ff44799bc88dfe2d40",
          "left to placement")  # fmt: skip
    found(document, f"{deployments}[6]", "'idle'", "was not active")
    assert len(document["problems"]) == 15, messages(document)
    found(document, f"{devices}[0]", "'orchestrator'", "skipped", key="notes")
    found(document, f"{modules}[3]", "'core:Datalist'", "core module", key="notes")
    found(document, "deployment/failing-over.json", "failover", key="notes")
    found(document, f"{modules}[2]", "'greeting.txt' as 'text/plain'", key="notes")


def test_the_text_report_lists_each_finding_then_what_was_written(tmp_path: Path) -> None:
    done = import_init(make_export(tmp_path / "export"), tmp_path / "fleet")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert (
        "module/modules.json[7]: module 'thermo' (_id 68625b3044799bc88dfe2d77): its wasm binary "
        "files/thermo.wasm is missing from the export: not imported"
    ) in lines
    # In the export's order: devices, modules, deployments.
    assert lines[0].startswith("device/devices.json[0]: note: device 'orchestrator'")
    assert lines[-2].startswith("deployment/manifests.json[6]: deployment 'idle'")
    assert lines[-1].startswith(f"{tmp_path / 'fleet'}: 5 modules, 5 deployments, 3 devices")
    assert lines[-1].endswith("15 problems, 4 notes")


def test_an_export_without_problems_exits_0_and_notes_do_not_count(tmp_path: Path) -> None:
    init = make_export(tmp_path / "export")
    modules = json.loads((init / "module/modules.json").read_text())
    (init / "module/modules.json").write_text(
        json.dumps([m for m in modules if m["name"] == "fibo"])
    )
    devices = json.loads((init / "device/devices.json").read_text())
    (init / "device/devices.json").write_text(json.dumps(devices[:4]))
    (init / "deployment/manifests.json").unlink()
    code, document = report(init, tmp_path / "fleet")
    assert code == 0, messages(document)
    assert document["problems"] == []
    assert {n["record"] for n in document["notes"]} >= {
        "device 'orchestrator' (_id 6862580c44799bc88dfe2d51)"
    }
    assert document["deployments"] == {"failing-over": "68625c6744799bc88dfe2d8d"}


def test_static_addresses_come_from_the_first_exported_address(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    report(make_export(tmp_path / "export"), repo, "--static-addresses")
    assert load(repo / "devices.yaml")["devices"] == {
        "garage-pi": {"cordoned": True, "address": "http://192.168.1.22:5000"},
        "hall-pi": {"address": "http://192.168.1.21:5000"},
        "kitchen-pi": {"address": "http://192.168.1.20:5000"},
    }


def test_a_broken_json_file_is_reported_and_the_rest_is_imported(tmp_path: Path) -> None:
    init = make_export(tmp_path / "export")
    (init / "device" / "more.json").write_text('{"_id": "68625a0244799bc88dfe2d60", "name": ')
    (init / "module" / "notes.txt").write_text("not JSON, and not a .json file: never read")
    code, document = report(init, tmp_path / "fleet")
    assert code == 1
    found(document, "device/more.json", "cannot be read as JSON")
    assert "fibo" in document["modules"]
    assert not any("notes.txt" in m for m in messages(document) + messages(document, "notes"))


def test_an_empty_clone_is_filled_on_its_own_branch(tmp_path: Path) -> None:
    repo = tmp_path / "clone"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=trunk")
    code, document = report(make_export(tmp_path / "export"), repo)
    assert code == 1
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "trunk"
    assert git(repo, "rev-parse", "HEAD") == document["commit_sha"]


def test_usage_errors_exit_2_and_write_nothing(tmp_path: Path) -> None:
    init = make_export(tmp_path / "export")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.md").write_text("mine")
    done = import_init(init, busy)
    assert done.returncode == 2
    assert "is not empty" in done.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["notes.md"]
    empty = tmp_path / "empty"
    empty.mkdir()
    done = import_init(empty, tmp_path / "fleet")
    assert done.returncode == 2
    assert "holds no export" in done.stderr
    assert not (tmp_path / "fleet").exists()
    assert import_init(tmp_path / "missing", tmp_path / "fleet").returncode == 2
    # The folder that holds init/ is accepted as well as init/ itself.
    code, document = report(init.parent, tmp_path / "fleet")
    assert code == 1
    assert document["source"] == str(init)


# The round trip: the imported repository is served and its deployments run on devices.


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    repo = tmp_path / "fleet"
    report(make_export(tmp_path / "export"), repo)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")  # a pipe nobody reads would fill up
    process = subprocess.Popen(
        [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--public-url", url, "--mdns-interfaces", "none",
         "--reconcile-interval", "0.5"],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: _answers(url), "the orchestrator to listen")
        with FleetThread(orchestrator_url=url) as fleet:
            fleet.add(names=["kitchen-pi", "hall-pi"])
            yield url
    finally:
        process.terminate()
        process.communicate(timeout=20)
        log.close()
        stderr = (tmp_path / "serve.log").read_text()
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr


def _execute(url: str, deployment: str, *args: int) -> Any:
    answer = httpx.post(
        f"{url}/execute/{deployment}", json={f"param{i}": a for i, a in enumerate(args)},
        timeout=30,
    )  # fmt: skip
    return answer.json().get("result") if answer.status_code == 200 else None


def test_the_imported_repository_deploys_and_runs_through_execute(served: str) -> None:
    sync = httpx.get(served + "/api/v1/sync").json()
    assert sync["desired"] is not None, sync
    # fibo(13) on kitchen-pi, doubled on hall-pi.
    assert eventually(lambda: _execute(served, "fibo-chain", 13) == 466, "fibo-chain runs")
    # greeter.render writes its data file (the export's hello-greeting.txt) twice.
    result = eventually(lambda: _execute(served, "greet", 2), "greet runs")
    assert str(result).endswith("/module_results/greeter/out.bin")
    assert httpx.get(str(result)).content == GREETING * 2
    placed = httpx.get(served + "/api/v1/deployments/fibo-chain").json()
    assert {"kitchen-pi", "hall-pi"} <= set(_strings(placed))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# The export commands of docs/migration.md, run against the original's read routes. The
# original (Node.js and MongoDB) cannot run here: a small server answers its routes from the
# fixture export instead, as the original does from its database and files folder.


class OriginalRoutes(http.server.BaseHTTPRequestHandler):
    init: Path

    def do_GET(self) -> None:
        records = {
            kind: [r for f in sorted((self.init / kind).glob("*.json")) for r in _items(f)]
            for kind in ("device", "module", "deployment")
        }
        parts = self.path.strip("/").split("/")
        body: bytes | None = None
        if parts in (["file", "device"], ["file", "module"], ["file", "manifest"]):
            kind = {"manifest": "deployment"}.get(parts[1], parts[1])
            body = json.dumps(records[kind]).encode()
        elif len(parts) == 4 and parts[:2] == ["file", "module"]:
            module = next((m for m in records["module"] if m["_id"] == parts[2]), None)
            stored = (module or {}).get("wasm") if parts[3] == "wasm" else None
            stored = stored or (module or {}).get("dataFiles", {}).get(parts[3])
            path = self.init / "files" / stored["originalFilename"] if stored else None
            body = path.read_bytes() if path and path.is_file() else None
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_: Any) -> None:
        pass


def _items(path: Path) -> list[Any]:
    document = json.loads(path.read_text())
    return document if isinstance(document, list) else [document]


def _shell_blocks(markdown: str, section: str) -> list[str]:
    text = markdown.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


def test_the_documented_export_commands_make_an_export_that_imports(tmp_path: Path) -> None:
    handler = type("Routes", (OriginalRoutes,), {"init": make_export(tmp_path / "original")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        doc = (Path(__file__).resolve().parent.parent / "docs" / "migration.md").read_text()
        blocks = _shell_blocks(doc, "1. Make the export on the original orchestrator")
        assert len(blocks) == 2
        script = "\n".join(blocks).replace("OLD=http://old-orchestrator:3000\n", "")
        work = tmp_path / "site"
        work.mkdir()
        subprocess.run(
            ["bash", "-c", script], cwd=work, env={"PATH": "/usr/bin:/bin",
            "OLD": f"http://127.0.0.1:{server.server_address[1]}"}, timeout=60, check=False,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    saved = sorted(p.name for p in (work / "init" / "files").iterdir())
    # thermo.wasm was never in the original's files; everything else came over its routes.
    assert saved == ["double.wasm", "fibo.wasm", "greeter.wasm", "hello-greeting.txt",
                     "sample-input.bin", "sketch.wasm", "square.wasm"]  # fmt: skip
    code, document = report(work / "init", tmp_path / "fleet")
    _, direct = report(make_export(tmp_path / "direct"), tmp_path / "fleet-direct")
    assert code == 1
    assert document["modules"] == direct["modules"]
    assert document["deployments"] == direct["deployments"]
    assert len(document["problems"]) == len(direct["problems"]) == 15


def test_ids_in_mongodb_extended_json_are_read_as_ids(tmp_path: Path) -> None:
    """mongoexport writes ids as {"$oid": ...}; the records mean the same."""
    init = make_export(tmp_path / "export")
    for path in init.glob("*/*.json"):
        text = re.sub(r'"([0-9a-f]{24})"(?!\s*:)', r'{"$oid": "\1"}', path.read_text())
        path.write_text(text)
    assert (
        '"_id": {"$oid": "68625a3144799bc88dfe2d69"}' in (init / "module/modules.json").read_text()
    )
    _, document = report(init, tmp_path / "fleet")
    _, direct = report(make_export(tmp_path / "direct"), tmp_path / "fleet-direct")
    assert document["modules"] == direct["modules"]
    assert document["deployments"] == direct["deployments"]
    assert messages(document) == messages(direct)
    assert load(tmp_path / "fleet/deployments/fibo-chain.yaml") == load(
        tmp_path / "fleet-direct/deployments/fibo-chain.yaml"
    )


def test_what_the_loader_would_reject_is_left_out_and_reported(tmp_path: Path) -> None:
    """A chain the repository format forbids: fibo's integer result into count(), no params."""
    init = make_export(tmp_path / "export")
    chain = {
        "_id": "68625d0144799bc88dfe2d91", "name": "mismatch", "active": True,
        "isInFailover": False, "validationError": None,
        "sequence": [
            {"device": "68625a0244799bc88dfe2d5c", "module": "68625a3144799bc88dfe2d69",
             "func": "fibo"},
            {"device": "68625a0244799bc88dfe2d5d", "module": "68625a4a44799bc88dfe2d6e",
             "func": "count"},
        ],
        "failoversBySequence": [["68625a0244799bc88dfe2d5c"], ["68625a0244799bc88dfe2d5d"]],
        "fullManifest": {},
    }  # fmt: skip
    (init / "deployment" / "mismatch.json").write_text(json.dumps(chain))
    repo = tmp_path / "fleet"
    code, document = report(init, repo)
    assert code == 1
    found(document, "deployment/mismatch.json", "'mismatch'", "would not validate",
          "takes no parameters")  # fmt: skip
    assert "mismatch" not in document["deployments"]
    assert not (repo / "deployments" / "mismatch.yaml").exists()
    assert "fibo-chain" in document["deployments"]
    checked = subprocess.run(
        [str(CLI), "validate", str(repo)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout


def test_an_export_with_nothing_to_run_is_not_a_success(tmp_path: Path) -> None:
    init = make_export(tmp_path / "export")
    modules = json.loads((init / "module/modules.json").read_text())
    core = [m for m in modules if m.get("isCoreModule")]
    (init / "module/modules.json").write_text(json.dumps(core))
    for path in (init / "deployment").glob("*.json"):
        path.unlink()  # nothing refers to a missing module: no other problem to report
    code, document = report(init, tmp_path / "fleet")
    assert code == 1
    found(document, "the export", "nothing this orchestrator can run")
    assert document["modules"] == {}


def test_a_device_without_a_usable_address_keeps_its_entry(tmp_path: Path) -> None:
    init = make_export(tmp_path / "export")
    devices = json.loads((init / "device/devices.json").read_text())
    devices[3]["communication"] = {"addresses": ["garage pi/0"], "port": 5000}  # blacklisted
    devices[2]["communication"] = {"addresses": [], "port": 5000}
    (init / "device/devices.json").write_text(json.dumps(devices))
    repo = tmp_path / "fleet"
    _, document = report(init, repo, "--static-addresses")
    assert load(repo / "devices.yaml")["devices"] == {
        "garage-pi": {"cordoned": True},
        "hall-pi": {},
        "kitchen-pi": {"address": "http://192.168.1.20:5000"},
    }
    found(document, "device/devices.json[3]", "'garage-pi'", "no usable address")
    found(document, "device/devices.json[2]", "'hall-pi'", "no usable address")
