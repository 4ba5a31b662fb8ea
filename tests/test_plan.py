"""`gitops-orchestrator plan` and `inventory` on real repositories with two commits.

Each test commits a small fleet (base), changes it and commits again (head) in `tmp_path`, and
plans the change against an inventory (a file, a URL, or none). Golden outputs: set
UPDATE_GOLDEN=1 to rewrite tests/golden/plan/* after an intended change, then review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from click.testing import CliRunner
from conftest import CLI, SAMPLE_REPO, Files, git, git_init_commit, wat, write_files

from gitops_orchestrator import inventory, report, review
from gitops_orchestrator.cli import main
from gitops_orchestrator.core.breaking import BreakingKind
from gitops_orchestrator.core.devicediff import DeploymentChange, DeviceChange
from gitops_orchestrator.core.modulediff import Change
from gitops_orchestrator.simulator.fleet import FleetThread

GOLDEN = Path(__file__).parent / "golden" / "plan"
NOW = 1_800_000_000.0
INTERFACES = ["millis", "print", "path_open", "fd_read", "fd_write", "fd_close"]


def fn(name: str, params: int = 1, body: str = "(local.get 0)", imports: str = "") -> bytes:
    """A module exporting `name` with `params` i32 parameters."""
    signature = " ".join(["(param i32)"] * params)
    result = body if params else "(i32.const 0)"
    return wat(f'(module {imports} (func (export "{name}") {signature} (result i32) {result}))')


def manifest(name: str, *functions: str, params: int = 1, method: str = "get") -> str:
    entries = "".join(
        f"  {function}:\n    method: {method}\n    params: [{', '.join(['integer'] * params)}]\n"
        "    output: integer\n"
        for function in functions
    )
    return f"name: {name}\nwasm: {name}.wasm\nfunctions:\n{entries}"


GREET = """name: greet
wasm: greet.wasm
functions:
  render:
    params: [integer]
    output: application/octet-stream
    mounts:
      - {path: greeting.txt, stage: deployment}
      - {path: out.bin, stage: output}
data:
  greeting.txt: greeting.txt
"""
# chain: fibo on sup1 (sup2 takes over), then double on the least loaded device (sup2).
CHAIN = (
    "name: chain\nsequence:\n"
    "  - {module: fibo, function: fibo, device: sup1, failovers: [sup2]}\n"
    "  - {module: double, function: double}\n"
)
BASE: Files = {
    "devices.yaml": "admission: listed\ndevices:\n"
    "  sup1: {labels: {room: kitchen}}\n"
    "  sup2: {labels: {room: hallway}}\n"
    "  sup3: {labels: {room: garage}}\n",
    "modules/fibo/module.yaml": manifest("fibo", "fibo"),
    "modules/fibo/fibo.wasm": fn("fibo"),
    "modules/double/module.yaml": manifest("double", "double"),
    "modules/double/double.wasm": fn("double", body="(i32.mul (local.get 0) (i32.const 2))"),
    "modules/greet/module.yaml": GREET,
    "modules/greet/greet.wasm": fn("render"),
    "modules/greet/greeting.txt": "Hello\n",
    "deployments/chain.yaml": CHAIN,
    "deployments/solo.yaml": "name: solo\nsequence:\n"
    "  - {module: double, function: double, selector: {room: hallway}}\n",
    "deployments/greet.yaml": "name: greet\nsequence:\n"
    "  - {module: greet, function: render, device: sup3}\n",
}


def device_item(name: str, port: int, **extra: Any) -> dict[str, Any]:
    """An item of /api/v1/devices, in the API's shape."""
    item = {
        "name": name, "state": "online", "url": f"http://127.0.0.1:{port}",
        "addresses": ["127.0.0.1"], "port": port, "interfaces": INTERFACES, "labels": {},
        "admitted": True, "admission": "listed in devices.yaml", "cordoned": False,
        "origin": "register", "introduced_at": None, "online_since": None, "last_seen": None,
        "runs": [],
    }  # fmt: skip
    item.update(extra)
    return item


ITEMS = [device_item("sup1", 5001), device_item("sup2", 5002), device_item("sup3", 5003)]


def fleet(*items: dict[str, Any]) -> inventory.Inventory:
    return inventory.parse({"devices": list(items or ITEMS)}, source="inventory.json")


def commits(root: Path, head: Files, *, removed: tuple[str, ...] = (), base: Files = BASE) -> Path:
    """A repository at `root` with two commits: `base`, then `head` applied over it."""
    write_files(root, base)
    git_init_commit(root, "base")
    write_files(root, head)
    for path in removed:
        git(root, "rm", "--quiet", path)
    git_init_commit(root, "head")
    return root


def plan(root: Path, devices: inventory.Inventory | None = None, **options: Any) -> review.Planned:
    return review.plan_change(
        root, base="HEAD~1", head="HEAD", inventory=devices or fleet(), now=NOW, **options
    )


def device(planned: review.Planned, name: str) -> Any:
    return next(d for d in planned.review.devices if d.device == name)


# What changes on devices


def test_nothing_changes(tmp_path: Path) -> None:
    planned = plan(commits(tmp_path / "repo", {"README.md": "docs only\n"}))
    assert planned.review.summary == "no device changes"
    assert planned.review.ok
    assert not planned.review.devices
    assert not planned.review.modules


def test_added_deployment_and_module(tmp_path: Path) -> None:
    head: Files = {
        "modules/inc/module.yaml": manifest("inc", "inc"),
        "modules/inc/inc.wasm": fn("inc", body="(i32.add (local.get 0) (i32.const 1))"),
        "deployments/count.yaml": "name: count\nsequence:\n"
        "  - {module: inc, function: inc, device: sup3}\n",
    }
    planned = plan(commits(tmp_path / "repo", head))
    assert planned.review.summary == "1 deployment added, 1 module added; 1 device changes"
    sup3 = device(planned, "sup3")
    assert [(g.deployment, g.steps, g.reason) for g in sup3.gains] == [
        ("count", ("inc.inc",), "new deployment")
    ]
    assert sup3.modules_gained == ("inc",)
    assert not sup3.changes
    assert not sup3.loses
    assert [(m.name, m.change) for m in planned.review.modules] == [("inc", Change.ADDED)]


def test_changed_binary_shows_digest_size_exports_and_imports(tmp_path: Path) -> None:
    binary = wat(
        '(module (import "env" "millis" (func (result i32)))'
        ' (func (export "fibo") (param i32) (result i32) (i32.const 7))'
        ' (func (export "reset") (result i32) (i32.const 0)))'
    )
    planned = plan(commits(tmp_path / "repo", {"modules/fibo/fibo.wasm": binary}))
    (module,) = planned.review.modules
    assert module.change is Change.CHANGED
    old, new = len(BASE["modules/fibo/fibo.wasm"]), len(binary)
    assert module.details[0].startswith("binary sha256:")
    assert f"({old} → {new} bytes, {new - old:+d})" in module.details[0]
    assert "exports added: reset(0)" in module.details
    assert "imports added: env.millis" in module.details
    sup1 = device(planned, "sup1")
    (change,) = sup1.changes
    assert change.deployment == "chain"
    assert change.modules == ("fibo",)
    assert "module fibo changed" in change.details
    assert sup1.modules_changed == ("fibo",)
    # double (on sup2) is not touched by a new fibo: its body does not change.
    assert [d.device for d in planned.review.devices] == ["sup1"]


def test_changed_data_file(tmp_path: Path) -> None:
    planned = plan(commits(tmp_path / "repo", {"modules/greet/greeting.txt": "Hi there\n"}))
    (module,) = planned.review.modules
    assert module.details == ("data files changed: greeting.txt",)
    assert device(planned, "sup3").changes[0].modules == ("greet",)


def test_changed_endpoint_method_and_chain_target(tmp_path: Path) -> None:
    head: Files = {
        "modules/double/module.yaml": manifest("double", "double", method="post"),
        # double now runs on sup3: fibo on sup1 calls it there.
        "deployments/chain.yaml": CHAIN.replace(
            "function: double}", "function: double, device: sup3}"
        ),
    }
    planned = plan(commits(tmp_path / "repo", head))
    (module,) = planned.review.modules
    assert module.details == (
        "function double: get(integer) -> integer → post(integer) -> integer",
    )
    (chain,) = device(planned, "sup1").changes
    assert chain.details == (
        "fibo.fibo now calls double.double on sup3 (was double.double on sup2)",
    )
    sup2, sup3 = device(planned, "sup2"), device(planned, "sup3")
    assert [loss.deployment for loss in sup2.loses] == ["chain"]
    assert sup2.loses[0].reason.startswith("step 2 (double.double) moves to sup3: on sup3 as named")
    assert [(c.deployment, c.details) for c in sup2.changes] == [
        ("solo", ("module double changed", "double.double endpoint method: get → post"))
    ]
    assert [gain.deployment for gain in sup3.gains] == ["chain"]
    assert sup3.gains[0].reason == "step 2 (double.double) moves here from sup2: on sup3 as named"


def test_removed_deployment_and_module(tmp_path: Path) -> None:
    root = commits(
        tmp_path / "repo",
        {},
        removed=("deployments/greet.yaml", "modules/greet/module.yaml",
                 "modules/greet/greet.wasm", "modules/greet/greeting.txt"),
    )  # fmt: skip
    planned = plan(root)
    sup3 = device(planned, "sup3")
    assert [(loss.deployment, loss.reason) for loss in sup3.loses] == [
        ("greet", "removed from the repository")
    ]
    assert sup3.modules_lost == ("greet",)
    assert [(m.name, m.change) for m in planned.review.modules] == [("greet", Change.REMOVED)]
    guard = planned.review.prune  # 1 of 4 running pairs: under the prune limit
    assert guard is not None
    assert not guard.held


# Steps that cannot be placed, or wait


def test_unknown_device_is_unplaceable(tmp_path: Path) -> None:
    head = {"deployments/greet.yaml": "name: greet\nsequence:\n"
            "  - {module: greet, function: render, device: sup9}\n"}  # fmt: skip
    planned = plan(commits(tmp_path / "repo", head))
    (issue,) = planned.review.unplaceable
    assert (issue.deployment, issue.step, issue.module, issue.function) == (
        "greet", 1, "greet", "render"
    )  # fmt: skip
    assert issue.reason == "sup9 is unknown; no known device can take it"
    assert not planned.review.ok
    assert planned.review.summary == (
        "1 deployment changed; 1 device changes, 1 step cannot be placed"
    )
    (loss,) = device(planned, "sup3").loses
    assert loss.reason.startswith("not fully placed, so deployed nowhere (step 1 unplaceable")


def test_no_device_offers_the_imports(tmp_path: Path) -> None:
    binary = wat(
        '(module (import "env" "takeImage" (func (result i32)))'
        ' (func (export "render") (param i32) (result i32) (local.get 0)))'
    )
    head: Files = {
        "modules/greet/greet.wasm": binary,
        "deployments/greet.yaml": "name: greet\nsequence:\n  - {module: greet, function: render}\n",
    }
    planned = plan(commits(tmp_path / "repo", head))
    (issue,) = planned.review.unplaceable
    assert issue.reason == (
        "sup3: lacks interface takeImage; no known device offers every import of greet: takeImage"
    )
    (breaking,) = planned.review.breaking
    assert breaking.message == (
        "greet now imports takeImage, which sup3 lacks: greet step 1 cannot be placed: "
        + issue.reason
    )


def test_offline_device_makes_a_step_wait(tmp_path: Path) -> None:
    head = {"deployments/later.yaml": "name: later\nsequence:\n"
            "  - {module: double, function: double, device: sup3}\n"}  # fmt: skip
    devices = fleet(ITEMS[0], ITEMS[1], device_item("sup3", 5003, state="offline"))
    planned = plan(commits(tmp_path / "repo", head), devices)
    assert [(i.deployment, i.step, i.reason) for i in planned.review.waiting] == [
        ("greet", 1, "sup3 is offline; waiting for sup3"),
        ("later", 1, "sup3 is offline; waiting for sup3"),
    ]
    assert planned.review.ok  # waiting is not an error
    assert planned.review.summary == (
        "1 deployment added; no device changes, 2 steps wait for a device"
    )


def test_the_prune_guard_would_hold(tmp_path: Path) -> None:
    root = commits(
        tmp_path / "repo", {}, removed=("deployments/chain.yaml", "deployments/solo.yaml")
    )
    planned = plan(root)
    guard = planned.review.prune
    assert guard is not None
    assert guard.held
    assert guard.text.startswith(
        "would remove 2 of 3 deployments from 2 devices (3 of 4 (device, deployment) pairs, "
        "75% > the 50% prune limit)"
    )
    assert planned.review.summary.endswith("held by the prune guard")
    released = plan(root, prune_limit=1.0).review.prune
    assert released is not None
    assert not released.held


# Breaking changes between module versions


def test_export_removed_while_a_deployment_calls_it(tmp_path: Path) -> None:
    planned = plan(commits(tmp_path / "repo", {"modules/fibo/fibo.wasm": fn("fib")}))
    assert not planned.review.valid
    assert not planned.review.devices
    problem = planned.review.head_problems[0]
    assert problem.file == "modules/fibo/module.yaml"
    assert "function 'fibo' is not exported by fibo.wasm (exports: fib)" in problem.message
    (breaking,) = planned.review.breaking
    assert breaking.kind is BreakingKind.EXPORT_REMOVED
    assert breaking.message == "fibo.fibo is no longer exported, but chain step 1 calls it"
    assert breaking.base.startswith("modules/fibo/fibo.wasm sha256:")
    assert breaking.base.endswith("exports fibo with 1 parameter")
    assert breaking.head.endswith("exports fib(1)")
    assert planned.review.summary.startswith("head is not valid (1 problem)")


def test_parameter_count_changed_while_a_deployment_calls_it(tmp_path: Path) -> None:
    head: Files = {
        "modules/fibo/fibo.wasm": fn("fibo", params=2),
        "modules/fibo/module.yaml": manifest("fibo", "fibo", params=2),
    }
    planned = plan(commits(tmp_path / "repo", head))
    assert planned.review.valid  # the files agree with each other; callers may not
    (breaking,) = planned.review.breaking
    assert breaking.kind is BreakingKind.PARAMS_CHANGED
    assert (
        breaking.message
        == "fibo.fibo takes 2 parameters instead of 1, and chain step 1 still calls it"
    )
    assert breaking.callers == ("chain step 1",)
    assert (
        "fibo.fibo endpoint request: 1 parameter → 2" in device(planned, "sup1").changes[0].details
    )


def test_new_import_the_device_lacks_moves_the_step(tmp_path: Path) -> None:
    binary = wat(
        '(module (import "env" "takeImage" (func (result i32)))'
        ' (func (export "fibo") (param i32) (result i32) (local.get 0)))'
    )
    devices = fleet(
        ITEMS[0], device_item("sup2", 5002, interfaces=[*INTERFACES, "takeImage"]), ITEMS[2]
    )
    planned = plan(commits(tmp_path / "repo", {"modules/fibo/fibo.wasm": binary}), devices)
    (breaking,) = planned.review.breaking
    assert breaking.kind is BreakingKind.NEW_IMPORT
    assert breaking.message == (
        "fibo now imports takeImage, which sup1 lacks: chain step 1 moves to sup2"
    )
    (loss,) = device(planned, "sup1").loses
    assert loss.reason == (
        "step 1 (fibo.fibo) moves to sup2: sup1: lacks interface takeImage; on failover sup2"
    )


# Inputs: an invalid base, a subfolder, no inventory, the running placement


def test_without_an_inventory_devices_yaml_addresses_stand_in(tmp_path: Path) -> None:
    devices = (
        "admission: listed\ndevices:\n"
        "  sup1: {address: 'http://10.0.0.1:5000', labels: {room: kitchen}}\n"
        "  sup2: {address: 'http://10.0.0.2:5000', labels: {room: hallway}}\n  sup3: {}\n"
    )
    root = commits(tmp_path / "repo", {"modules/fibo/fibo.wasm": fn("fibo", body="(i32.const 1)")},
                   base={**BASE, "devices.yaml": devices})  # fmt: skip
    planned = review.plan_change(root, base="HEAD~1", head="HEAD", inventory=None, now=NOW)
    assert planned.inventory is None
    assert planned.review.fleet == 3
    assert planned.review.notes[0].startswith(
        "no inventory: the devices of devices.yaml with an address (sup1, sup2) are taken as "
        "online, those without one (sup3) as offline; all as offering every import the modules "
        "need (a missing import is not detected), and no other device as known."
    )
    assert [d.device for d in planned.review.devices] == ["sup1"]
    (issue,) = planned.review.waiting  # greet is named to sup3
    assert issue.reason == "sup3 is offline; waiting for sup3"


def test_a_subfolder_and_an_invalid_base(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    broken = {**{f"fleet/{k}": v for k, v in BASE.items()}, "fleet/devices.yaml": "version: 1\n"}
    write_files(root, broken)
    git_init_commit(root, "broken base")
    write_files(root, {"fleet/devices.yaml": BASE["devices.yaml"]})
    git_init_commit(root, "fixed")
    planned = review.plan_change(
        root / "fleet", base="HEAD~1", head="HEAD", inventory=fleet(), now=NOW
    )
    assert not planned.review.base_valid
    assert planned.folder == "fleet"
    assert "base is not valid: compared with an empty fleet" in planned.review.notes
    assert {d.device for d in planned.review.devices} == {"sup1", "sup2", "sup3"}
    assert all(g.reason == "new deployment" for d in planned.review.devices for g in d.gains)


def test_where_steps_run_now_keeps_them_there(tmp_path: Path) -> None:
    # The running orchestrator put chain's double on sup3: base is placed sticky to that.
    devices = fleet(ITEMS[0], ITEMS[1], device_item(
        "sup3", 5003, runs=[{"deployment": "chain", "status": "synced", "steps": [1]}]
    ))  # fmt: skip
    planned = plan(
        commits(tmp_path / "repo", {"modules/double/double.wasm": fn("double")}), devices
    )
    assert {d.device: [c.deployment for c in d.changes] for d in planned.review.devices} == {
        "sup2": ["solo"], "sup3": ["chain"]
    }  # fmt: skip


# The command: formats, golden outputs, exit codes


def kitchen_sink(tmp_path: Path) -> Path:
    """A change with something of everything, for the golden outputs."""
    clock = wat(
        '(module (import "env" "millis" (func (result i32)))'
        ' (func (export "now") (result i32) (i32.const 0)))'
    )
    head: Files = {
        "modules/fibo/fibo.wasm": wat(
            '(module (func (export "fibo") (param i32) (result i32) (i32.const 7))'
            ' (func (export "reset") (result i32) (i32.const 0)))'
        ),
        "modules/greet/greeting.txt": "Hi there\n",
        "modules/greet/greet.wasm": fn("render", params=2),
        "modules/greet/module.yaml": GREET.replace("[integer]", "[integer, integer]"),
        "modules/clock/module.yaml": manifest("clock", "now", params=0),
        "modules/clock/clock.wasm": clock,
        "deployments/tick.yaml": "name: tick\nsequence:\n  - {module: clock, function: now}\n",
        "deployments/far.yaml": "name: far\nsequence:\n"
        "  - {module: double, function: double, device: sup9}\n",
    }
    root = commits(tmp_path / "repo", head, removed=("deployments/solo.yaml",))
    (tmp_path / "inventory.json").write_text(
        json.dumps({"devices": [*ITEMS[:2], device_item("sup3", 5003, state="offline")]})
    )
    return root


def run_plan(cwd: Path, *args: str) -> Any:
    return CliRunner().invoke(
        main, ["plan", "--base", "HEAD~1", "--head", "HEAD", "--repo", "repo", *args],
        env={"GITOPS_API_TOKEN": None, "GITOPS_PRUNE_LIMIT": None},
    )  # fmt: skip


def normalised(text: str, root: Path, refs: Mapping[str, str] | None = None) -> str:
    for ref, label in (refs or {"HEAD~1": "BASE"}).items() | {("HEAD", "HEAD")}:
        sha = git(root, "rev-parse", ref)
        text = text.replace(sha, f"<{label}_SHA>").replace(sha[:12], f"<{label}>")
    return re.sub(r"sha256:[0-9a-f]{12}", "sha256:<digest>", text)


@pytest.mark.parametrize(("output_format", "suffix"), [("markdown", "md"), ("json", "json")])
def test_golden_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_format: str, suffix: str
) -> None:
    root = kitchen_sink(tmp_path)
    monkeypatch.chdir(tmp_path)
    done = run_plan(tmp_path, "--inventory", "inventory.json", "--format", output_format)
    assert done.exit_code == 1, done.output  # far cannot be placed
    text = normalised(done.stdout, root)
    golden = GOLDEN / f"kitchen-sink.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    if output_format == "json":
        document = json.loads(done.stdout)
        assert document["summary"] == (
            "2 deployments added, 1 deployment removed, 1 module added, 2 modules changed; "
            "2 devices change, 1 step cannot be placed, 1 breaking change, "
            "1 step waits for a device"
        )
        assert done.stderr == f"plan: {document['summary']}\n"  # diagnostics apart from JSON


def test_text_output_lists_blockers_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kitchen_sink(tmp_path)
    monkeypatch.chdir(tmp_path)
    done = run_plan(tmp_path, "--inventory", "inventory.json")
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "plan: 2 deployments added, 1 deployment removed, 1 module added, 2 modules changed; "
        "2 devices change, 1 step cannot be placed, 1 breaking change, 1 step waits for a device"
    )
    assert lines.index("cannot be placed:") < lines.index("devices:")
    assert "  far step 1 (double.double): sup9 is unknown; no known device can take it" in lines


def test_large_plans_fold_details_in_markdown(tmp_path: Path) -> None:
    many = {f"deployments/d{n}.yaml": f"name: d{n}\nsequence:\n"
            f"  - {{module: double, function: double, device: sup{1 + n % 3}}}\n"
            for n in range(30)}  # fmt: skip
    planned = plan(commits(tmp_path / "repo", many))
    text = report.markdown(planned)
    assert text.startswith("### Plan: 30 deployments added; 3 devices change\n")
    assert "<details><summary>Deployments (30)</summary>" in text
    assert "<details><summary>Details (3 devices, 0 modules)</summary>" in text
    assert text.rstrip().endswith("</details>")


def test_a_huge_plan_fits_a_comment(tmp_path: Path) -> None:
    planned = plan(commits(tmp_path / "repo", {"README.md": "x\n"}))
    changes = tuple(
        DeviceChange(f"dev{n:04d}", "online", gains=tuple(
            DeploymentChange(f"deployment-{n}-{m}", ("double.double",), "new deployment " * 5)
            for m in range(10)
        ))
        for n in range(400)
    )  # fmt: skip
    huge = dataclasses.replace(planned, review=dataclasses.replace(planned.review, devices=changes))
    text = report.markdown(huge)
    assert len(text) <= report.MARKDOWN_LIMIT
    assert text.count("\n| `dev") == report.TABLE_ROWS
    assert "…and 300 more devices, in the details below." in text
    assert text.endswith("run `gitops-orchestrator plan --format text` (or json) for the whole "
                         "plan.\n\n</details>")  # fmt: skip
    assert len(json.loads(report.render(huge, "json"))["devices"]) == 400


def test_an_unreadable_head_is_reported_not_fatal(tmp_path: Path) -> None:
    head: Files = {
        "modules/fibo/module.yaml": "name: fibo\nwasm: fibo.wasm\nfunctions: [fibo]\n",
        "modules/double/module.yaml": "name: [double\n",
        "modules/greet/greet.wasm": b"not wasm",
        "deployments/chain.yaml": "sequence: 3\n",
    }
    planned = plan(commits(tmp_path / "repo", head))
    assert not planned.review.valid
    assert len(planned.review.head_problems) >= 4
    assert planned.review.breaking == ()
    assert "head is not valid" in report.text(planned)


def test_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commits(tmp_path / "repo", {"modules/greet/greeting.txt": "Hi\n"})
    (tmp_path / "inventory.json").write_text(json.dumps({"devices": ITEMS}))
    (tmp_path / "broken.json").write_text('{"devices": [{"state": "online"}]}')
    monkeypatch.chdir(tmp_path)
    assert run_plan(tmp_path, "--inventory", "inventory.json").exit_code == 0
    unknown = CliRunner().invoke(
        main, ["plan", "--base", "nope", "--head", "HEAD", "--repo", "repo"]
    )
    assert unknown.exit_code == 2
    assert "'nope' names no commit" in unknown.stderr
    not_repo = CliRunner().invoke(main, ["plan", "--base", "A", "--head", "B", "--repo", "/"])
    assert not_repo.exit_code == 2
    assert "not inside a git repository" in not_repo.stderr
    for source, message in (
        ("missing.json", "cannot read the inventory missing.json"),
        ("broken.json", "broken.json: device 1 has no name"),
        ("http://127.0.0.1:9/", "cannot reach http://127.0.0.1:9/api/v1/devices"),
    ):
        done = run_plan(tmp_path, "--inventory", source)
        assert done.exit_code == 2, done.output
        assert message in done.stderr
    head_invalid = commits(tmp_path / "other", {"modules/fibo/fibo.wasm": fn("fib")})
    monkeypatch.chdir(head_invalid.parent)
    done = CliRunner().invoke(
        main, ["plan", "--base", "HEAD~1", "--head", "HEAD", "--repo", "other", "--format", "json"]
    )
    assert done.exit_code == 1
    problems = json.loads(done.stdout)["head"]["problems"]
    assert problems[0]["file"] == "modules/fibo/module.yaml"


def test_the_installed_command_runs(tmp_path: Path) -> None:
    root = commits(tmp_path / "repo", {"modules/greet/greeting.txt": "Hi\n"})
    (tmp_path / "inventory.json").write_text(json.dumps({"devices": ITEMS}))
    done = subprocess.run(
        [str(CLI), "plan", "--base", "HEAD~1", "--head", "HEAD", "--inventory",
         str(tmp_path / "inventory.json"), "--format", "markdown"],
        cwd=root, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("### Plan: 1 module changed; 1 device changes\n")


def assert_golden(name: str, text: str) -> None:
    """`text` equals tests/golden/plan/`name` (rewritten with UPDATE_GOLDEN=1)."""
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


# The default setup: no inventory, devices.yaml names the devices without addresses (as the
# sample repository and its pull-request workflow do), so every device is taken as offline.


def default_setup(tmp_path: Path) -> Path:
    """A change of every kind to deployments, modules and devices.yaml."""
    head: Files = {
        # added: a step named to a device, with a failover
        "deployments/extra.yaml": "name: extra\nsequence:\n"
        "  - {module: fibo, function: fibo, device: sup2, failovers: [sup1]}\n",
        # changed: the device named and the failovers of step 1
        "deployments/chain.yaml": CHAIN.replace("device: sup1, failovers: [sup2]",
                                                "device: sup3, failovers: [sup2, sup1]"),
        # changed: the selector of step 1, and a step added
        "deployments/solo.yaml": "name: solo\nsequence:\n"
        "  - {module: double, function: double, selector: {room: kitchen}}\n"
        "  - {module: fibo, function: fibo}\n",
        "modules/double/double.wasm": wat(
            '(module (func (export "double") (param i32) (result i32)'
            ' (i32.shl (local.get 0) (i32.const 1)))'
            ' (func (export "halve") (param i32) (result i32) (local.get 0)))'
        ),
        "modules/greet/greeting.txt": "Hi there\n",
        "devices.yaml": "admission: open\ndevices:\n"
        "  sup1: {labels: {room: kitchen, floor: '1'}}\n"
        "  sup2: {labels: {room: hallway}, address: 'http://127.0.0.1:5002'}\n"
        "  sup3: {labels: {room: garage}, cordoned: true}\n"
        "  sup4: {labels: {room: attic}}\n",
    }  # fmt: skip
    return commits(tmp_path / "repo", head, removed=("deployments/greet.yaml",))


def test_without_an_inventory_the_plan_lists_what_changes(tmp_path: Path) -> None:
    root = default_setup(tmp_path)
    result = review.plan_change(root, base="HEAD~1", head="HEAD", inventory=None, now=NOW).review
    assert [(d.deployment, d.change, d.details) for d in result.deployments] == [
        ("chain", Change.CHANGED,
         ("step 1 device: sup1 → sup3", "step 1 failovers: sup2 → sup2, sup1")),
        ("extra", Change.ADDED, ("fibo.fibo on sup2, failovers sup1",)),
        ("greet", Change.REMOVED, ("greet.render on sup3",)),
        ("solo", Change.CHANGED, ("step 1 selector: room=hallway → room=kitchen",
                                  "step 2 added: fibo.fibo")),
    ]  # fmt: skip
    assert [(m.name, m.change) for m in result.modules] == [
        ("double", Change.CHANGED), ("greet", Change.CHANGED)
    ]  # fmt: skip
    assert "exports added: halve(1)" in result.modules[0].details
    assert result.devices_yaml.admission == ("listed", "open")
    assert [(d.device, d.change, d.details) for d in result.devices_yaml.devices] == [
        ("sup1", Change.CHANGED, ("labels: room=kitchen → floor=1, room=kitchen",)),
        ("sup2", Change.CHANGED, ("address: none → http://127.0.0.1:5002",)),
        ("sup3", Change.CHANGED, ("cordoned",)),
        ("sup4", Change.ADDED, ("labels room=attic",)),
    ]  # fmt: skip
    assert result.summary.startswith(
        "1 deployment added, 2 deployments changed, 1 deployment removed, 2 modules changed, "
        "devices.yaml changed; "
    )


def test_steps_replaced_and_removed_and_devices_uncordoned_or_removed(tmp_path: Path) -> None:
    base: Files = {
        **BASE,
        "devices.yaml": "devices:\n  sup1: {labels: {room: kitchen}, cordoned: true}\n"
        "  sup2: {address: 'http://127.0.0.1:5002'}\n",
    }
    head: Files = {
        "deployments/chain.yaml": "name: chain\nsequence:\n  - {module: fibo, function: fibo}\n",
        "deployments/solo.yaml": "name: solo\nsequence:\n  - {module: fibo, function: fibo}\n",
        "devices.yaml": "devices:\n  sup1: {labels: {room: kitchen}}\n",
    }
    root = commits(tmp_path / "repo", head, base=base)
    result = review.plan_change(root, base="HEAD~1", head="HEAD", inventory=None, now=NOW).review
    assert [(d.deployment, d.details) for d in result.deployments] == [
        ("chain", ("step 1 device: sup1 → none", "step 1 failovers: sup2 → none",
                   "step 2 removed: double.double")),
        ("solo", ("step 1: double.double where room=hallway → fibo.fibo",)),
    ]  # fmt: skip
    assert result.devices_yaml.admission is None
    assert [(d.device, d.change, d.details) for d in result.devices_yaml.devices] == [
        ("sup1", Change.CHANGED, ("no longer cordoned",)),
        ("sup2", Change.REMOVED, ("was address http://127.0.0.1:5002, no labels",)),
    ]


@pytest.mark.parametrize("suffix", ["txt", "md", "json"])
def test_golden_outputs_without_an_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    root = default_setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    output_format = {"txt": "text", "md": "markdown", "json": "json"}[suffix]
    done = run_plan(tmp_path, "--format", output_format)
    assert done.exit_code == 0, done.output
    assert_golden(f"default-setup.{suffix}", normalised(done.stdout, root))


def moved_on(tmp_path: Path) -> Path:
    """main moved on by 2 commits (solo removed, greet's data changed) after `change` forked."""
    root = tmp_path / "repo"
    write_files(root, BASE)
    git_init_commit(root, "base")
    git(root, "checkout", "--quiet", "-b", "change")
    write_files(root, {"deployments/count.yaml": "name: count\nsequence:\n"
                       "  - {module: double, function: double, device: sup1}\n"})  # fmt: skip
    git_init_commit(root, "add count")
    git(root, "checkout", "--quiet", "main")
    git(root, "rm", "--quiet", "deployments/solo.yaml")
    git_init_commit(root, "remove solo")
    write_files(root, {"modules/greet/greeting.txt": "Hi there\n"})
    git_init_commit(root, "new greeting")
    git(root, "checkout", "--quiet", "change")
    return root


def test_head_is_compared_with_the_merge_base_and_base_moving_on_is_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = moved_on(tmp_path)
    planned = review.plan_change(root, base="main", head="HEAD", inventory=fleet(), now=NOW)
    fork = git(root, "merge-base", "main", "HEAD")
    assert planned.review.base_sha == fork
    assert planned.base_tip == git(root, "rev-parse", "main")
    assert planned.moved_on == 2
    # Only the branch's own change: main's newer commits are not shown undone.
    assert [(d.deployment, d.change) for d in planned.review.deployments] == [
        ("count", Change.ADDED)
    ]
    assert not planned.review.modules
    assert [d.device for d in planned.review.devices] == ["sup1"]
    (tmp_path / "inventory.json").write_text(json.dumps({"devices": ITEMS}))
    monkeypatch.chdir(tmp_path)
    refs = {"main": "MAIN", fork: "MERGE_BASE"}
    for output_format, suffix in (("text", "txt"), ("json", "json")):
        done = CliRunner().invoke(
            main, ["plan", "--base", "main", "--head", "HEAD", "--repo", "repo",
                   "--inventory", "inventory.json", "--format", output_format],
            env={"GITOPS_API_TOKEN": None, "GITOPS_PRUNE_LIMIT": None},
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        assert_golden(f"moved-on.{suffix}", normalised(done.stdout, root, refs))
    document = json.loads(done.stdout)
    assert document["base"]["merge_base"] == fork
    assert document["base"]["moved_on"] == 2
    assert document["warnings"][0].startswith("base main has moved on by 2 commits")
    assert "warning: base main has moved on by 2 commits" in done.stderr


def test_unrelated_histories_compare_with_base_itself(tmp_path: Path) -> None:
    root = commits(tmp_path / "repo", {"modules/greet/greeting.txt": "Hi\n"})
    git(root, "checkout", "--quiet", "--orphan", "other")
    git_init_commit(root, "unrelated")
    planned = review.plan_change(root, base="main", head="HEAD", inventory=fleet(), now=NOW)
    assert planned.review.base_sha == git(root, "rev-parse", "main")
    assert planned.moved_on == 0
    assert planned.warnings == (
        "base main and head HEAD have no common commit (unrelated histories, or a shallow "
        "clone: fetch with fetch-depth: 0): head is compared with base's tip",
    )


# The prune guard, counted in deployments and devices

ON = "name: {}\nsequence:\n  - {{module: double, function: double, device: {}}}\n"
PRUNED_BASE: Files = {
    **BASE,
    "deployments/d4.yaml": ON.format("d4", "sup1"),
    "deployments/d5.yaml": ON.format("d5", "sup3"),
}
PRUNED = ("deployments/solo.yaml", "deployments/greet.yaml", "deployments/d4.yaml",
          "deployments/d5.yaml")  # fmt: skip


@pytest.mark.parametrize("with_inventory", [True, False], ids=["inventory", "devices.yaml"])
def test_the_prune_guard_is_worded_in_deployments_and_devices(
    tmp_path: Path, with_inventory: bool
) -> None:
    root = commits(tmp_path / "repo", {}, removed=PRUNED, base=PRUNED_BASE)
    devices = fleet() if with_inventory else None
    result = review.plan_change(root, base="HEAD~1", head="HEAD", inventory=devices, now=NOW).review
    guard = result.prune
    assert guard is not None
    assert guard.held
    assert guard.text.startswith(
        "would remove 4 of 5 deployments from 3 devices (4 of 6 (device, deployment) pairs, "
        "67% > the 50% prune limit): the orchestrator would hold this commit"
    )
    assert result.summary.endswith("held by the prune guard")
    assumed = [note for note in result.notes if note.startswith("prune guard: without")]
    assert len(assumed) == (0 if with_inventory else 1)
    kept = review.plan_change(
        root, base="HEAD~1", head="HEAD", inventory=devices, now=NOW, prune_limit=1.0
    ).review.prune
    assert kept is not None
    assert not kept.held
    assert kept.text == (
        "would remove 4 of 5 deployments from 3 devices (4 of 6 (device, deployment) pairs, "
        "67% ≤ the 100% prune limit)"
    )


# The inventory from a running orchestrator


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'inventory.json: an inventory is {"devices": [...]}'),
        ({"devices": [{"name": "a", "state": "asleep"}]},
         "device 1 (a): state is one of online, offline, gone"),
        ({"devices": [{"name": "a", "interfaces": "print"}]}, "interfaces is a list of names"),
        ({"devices": [{"name": "a", "online_since": "noon"}]}, "online_since is not an ISO 8601"),
        ({"devices": ["a"]}, "inventory.json: device 1 is not an object"),
    ],
)  # fmt: skip
def test_malformed_inventories_say_what_is_wrong(document: Any, message: str) -> None:
    with pytest.raises(inventory.InventoryError, match=re.escape(message)):
        inventory.parse(document, source="inventory.json")


def test_an_inventory_keeps_what_was_observed() -> None:
    runs = [{"deployment": "chain", "status": "synced", "steps": [0, 1]}]
    item = device_item("a", 1, online_since="2027-01-15T08:00:00Z", labels={"r": "x"}, runs=runs)
    parsed = inventory.parse({"devices": [item]}, source="inventory.json")
    view = parsed.devices["a"]
    assert view.online_since == NOW  # 2027-01-15T08:00:00Z
    assert view.labels == {}  # labels come from each commit's devices.yaml
    assert parsed.running == {("chain", 0): "a", ("chain", 1): "a"}


class Pages(BaseHTTPRequestHandler):
    """/api/v1/devices over 3 pages of 2, answering only with the right bearer token."""

    items: ClassVar[list[dict[str, Any]]] = []
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.headers.get("Authorization") != "Bearer t0ken":
            self._send(401, {"error": {"status": 401, "message": "needs a token"}})
            return
        query = parse_qs(urlparse(self.path).query)
        offset, limit = int(query["offset"][0]), min(int(query["limit"][0]), 2)
        page = self.items[offset : offset + limit]
        self._send(200, {"total": len(self.items), "offset": offset, "limit": limit, "items": page})

    def _send(self, status: int, document: Mapping[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def paged_api() -> Iterator[str]:
    Pages.items = [device_item(f"dev{n}", 6000 + n) for n in range(5)]
    Pages.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, name="paged-api")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_inventory_fetches_every_page_with_the_token(paged_api: str) -> None:
    done = CliRunner().invoke(
        main, ["inventory", "--from", paged_api], env={"GITOPS_API_TOKEN": "t0ken"}
    )
    assert done.exit_code == 0, done.output
    names = [item["name"] for item in json.loads(done.stdout)["devices"]]
    assert names == [f"dev{n}" for n in range(5)]
    assert [urlparse(p).query for p in Pages.requests] == [
        "offset=0&limit=500", "offset=2&limit=500", "offset=4&limit=500"
    ]  # fmt: skip
    refused = CliRunner().invoke(
        main, ["inventory", "--from", paged_api], env={"GITOPS_API_TOKEN": None}
    )
    assert refused.exit_code == 1
    assert "needs a token: set GITOPS_API_TOKEN" in refused.stderr


def test_inventory_and_plan_against_a_running_orchestrator(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    root = commits(tmp_path / "repo", {"modules/greet/greeting.txt": "Hi\n"})
    orchestrator = serve(str(root), "--public-url", "http://127.0.0.1:1")
    with FleetThread(orchestrator_url=orchestrator.url) as devices:
        devices.add(names=["sup1", "sup2"])
        devices.add(names=["sup3"], interfaces=["print"])
        deadline = time.monotonic() + 20
        while True:
            items = orchestrator.client.get("/api/v1/devices").json()["items"]
            if sum(item["state"] == "online" for item in items) == 3:
                break
            assert time.monotonic() < deadline, items
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_")}
        saved = subprocess.run(
            [str(CLI), "inventory", "--from", orchestrator.url],
            capture_output=True, text=True, timeout=60, check=True, env=env,
        )  # fmt: skip
        document = json.loads(saved.stdout)
        assert sorted(item["name"] for item in document["devices"]) == ["sup1", "sup2", "sup3"]
        assert set(document["devices"][0]) >= {"name", "state", "url", "interfaces", "runs"}
        from_file = inventory.parse(document, source="saved")
        assert from_file.devices["sup3"].interfaces == frozenset({"print"})
        fetched = subprocess.run(
            [str(CLI), "plan", "--base", "HEAD~1", "--head", "HEAD", "--repo", str(root),
             "--inventory", orchestrator.url, "--format", "json"],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    result = json.loads(fetched.stdout)
    assert result["inventory"] == {"source": orchestrator.url, "devices": 3}
    assert [d["device"] for d in result["devices"]] == ["sup3"]
    assert result["devices"][0]["changes"][0]["modules"] == ["greet"]


# The sample pull-request workflow


WORKFLOW = SAMPLE_REPO / ".github" / "workflows" / "plan.yml"


def workflow_commands() -> list[list[str]]:
    document = yaml.safe_load(WORKFLOW.read_text())
    commands = []
    for job in document["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "")
            script = re.sub(r"\$\{\{[^}]*\}\}", "X", script).replace("\\\n", " ")
            for line in script.splitlines():
                words = shlex.split(line, comments=True)
                if "gitops-orchestrator" in words:
                    commands.append(words[words.index("gitops-orchestrator") + 1 :])
    return commands


def test_the_workflow_is_valid_and_runs_commands_that_exist() -> None:
    document = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in document[True]  # YAML 1.1 reads the key `on` as True
    checkout = next(
        step for job in document["jobs"].values() for step in job["steps"]
        if str(step.get("uses", "")).startswith("actions/checkout")
    )  # fmt: skip
    assert checkout["with"]["fetch-depth"] == 0
    commands = workflow_commands()
    assert {command[0] for command in commands} >= {"validate", "plan"}
    for command in commands:
        help_text = CliRunner().invoke(main, [command[0], "--help"]).stdout
        for word in command[1:]:
            if word.startswith("--"):
                assert f"{word.split('=')[0]} " in help_text, (command, word)
    plan_command = next(c for c in commands if c[0] == "plan")
    assert {"--base", "--head", "--format", "markdown"} <= set(plan_command)
    validate_command = next(c for c in commands if c[0] == "validate")
    assert {"--format", "github"} <= set(validate_command)
