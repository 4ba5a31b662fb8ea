"""Plan benchmark: `gitops-orchestrator plan` end to end, beside `validate` of the same commit.

    .venv/bin/python bench/plan.py [--deployments 500] [--devices 1000] [--runs 9]

A generated repository with N two-step deployments (each first step its own module and binary,
a fifth of them importing a host function) and an inventory of M devices (labels, a few
offline, some lacking that host function) gets a second commit that changes it the way a busy
pull request does: rebuilt binaries, a new import, deployments added, removed and moved, a
device cordoned. Both commands run as processes, as CI runs them; the medians of `--runs` runs
are printed with their ratio. Everything runs in a temporary folder; nothing touches the network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).with_name("gitops-orchestrator")
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@localhost",
           "PATH": "/usr/bin:/bin:/usr/local/bin"}  # fmt: skip
INTERFACES = ["millis", "print", "path_open", "fd_read", "fd_write", "fd_close"]
ROOMS = ("kitchen", "hallway", "garage", "attic", "cellar")
TARGET = 2.0
"""Seconds a plan of this size may take end to end (issue 7)."""


def git(path: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=path, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def binary(number: int, *, version: int = 0, imports: bool = False) -> bytes:
    """A distinct module per number (and per version), exporting run(i32) -> i32."""
    needs = '(import "env" "millis" (func (result i32)))' if imports else ""
    return bytes(
        wasmtime.wat2wasm(
            f'(module {needs} (func (export "run") (param i32) (result i32)'
            f" (i32.add (local.get 0) (i32.const {number * 100 + version}))))"
        )
    )


def module_files(number: int, *, version: int = 0, imports: bool | None = None) -> dict[str, bytes]:
    name = f"m{number:04d}"
    manifest = f"name: {name}\nwasm: {name}.wasm\nfunctions:\n  run:\n    params: [integer]\n"
    manifest += "    output: integer\n"
    uses = number % 5 == 0 if imports is None else imports
    return {
        f"modules/{name}/module.yaml": manifest.encode(),
        f"modules/{name}/{name}.wasm": binary(number, version=version, imports=uses),
    }


def deployment(number: int, *, devices: int, shift: int = 0) -> tuple[str, bytes]:
    """Step 1 runs the deployment's own module; step 2 a shared one (its neighbour's)."""
    name = f"d{number:04d}"
    first = f"  - module: m{number:04d}\n    function: run\n"
    if number % 10 == 0:  # named, with a failover
        named, failover = (number + shift) % devices, (number + shift + 1) % devices
        first += f"    device: dev{named:04d}\n    failovers: [dev{failover:04d}]\n"
    elif number % 10 == 1:
        first += f"    selector: {{room: {ROOMS[number % len(ROOMS)]}}}\n"
    second = f"  - module: m{(number + 1) % 1000:04d}\n    function: run\n"
    return f"deployments/{name}.yaml", f"name: {name}\nsequence:\n{first}{second}".encode()


def devices_yaml(devices: int, cordoned: tuple[int, ...] = ()) -> bytes:
    lines = ["admission: open", "devices:"]
    for number in range(0, devices, 4):  # a quarter of the fleet is labelled
        lines.append(f"  dev{number:04d}:")
        lines.append(f"    labels: {{room: {ROOMS[number % len(ROOMS)]}}}")
        if number in cordoned:
            lines.append("    cordoned: true")
    return ("\n".join(lines) + "\n").encode()


def write(root: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def generate(root: Path, *, deployments: int, devices: int) -> None:
    """Two commits: a fleet, then a busy pull request's change to it."""
    files: dict[str, bytes] = {"devices.yaml": devices_yaml(devices)}
    modules = max(deployments + 1, 2)
    for number in range(modules):
        files.update(module_files(number % 1000))
    for number in range(deployments):
        path, content = deployment(number, devices=devices)
        files[path] = content
    write(root, files)
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "the fleet")
    change: dict[str, bytes] = {"devices.yaml": devices_yaml(devices, cordoned=(0, 4))}
    for number in range(3, 3 + 10):  # rebuilt binaries
        change.update(module_files(number, version=1))
    change.update(module_files(7, version=2, imports=True))  # a new import
    for number in range(20, 120, 10):  # named steps moved to other devices
        path, content = deployment(number, devices=devices, shift=500)
        change[path] = content
    for number in range(deployments, deployments + 5):  # new deployments (and modules)
        change.update(module_files(number % 1000 + 1))
        path, content = deployment(number, devices=devices)
        change[path] = content.replace(f"m{(number + 1) % 1000:04d}".encode(), b"m0001")
    write(root, change)
    for number in range(deployments - 3, deployments):  # removed deployments
        (root / f"deployments/d{number:04d}.yaml").unlink()
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "a busy pull request")


def inventory(path: Path, devices: int) -> None:
    items: list[dict[str, object]] = []
    for number in range(devices):
        interfaces = INTERFACES if number % 7 else INTERFACES[1:]  # every 7th lacks millis
        items.append({
            "name": f"dev{number:04d}", "state": "offline" if number % 50 == 49 else "online",
            "url": f"http://10.{number // 250}.{number % 250}.1:5000",
            "addresses": [f"10.{number // 250}.{number % 250}.1"], "port": 5000,
            "interfaces": interfaces, "labels": {}, "admitted": True,
            "admission": "admission is open", "cordoned": False, "origin": "mdns",
            "introduced_at": None, "online_since": None, "last_seen": None, "runs": [],
        })  # fmt: skip
    path.write_text(json.dumps({"devices": items}))


def timed(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Seconds of each run of each command; the commands take turns, so that a busy moment of
    this shared machine slows all of them, not one."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            times[name].append(time.perf_counter() - start)
            if done.returncode not in (0, 1):
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=500)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as folder:
        root, inventory_file = Path(folder, "repo"), Path(folder, "inventory.json")
        generate(root, deployments=options.deployments, devices=options.devices)
        inventory(inventory_file, options.devices)
        plan = [str(CLI), "plan", "--repo", str(root), "--base", "HEAD~1", "--head", "HEAD",
                "--inventory", str(inventory_file), "--format", "json"]  # fmt: skip
        validate = [str(CLI), "validate", str(root), "--ref", "HEAD"]
        commands = {
            "plan --format json": plan,
            "plan --format markdown": [*plan[:-1], "markdown"],
            "validate --ref HEAD": validate,
            "--help (process start)": [str(CLI), "--help"],
        }
        timed(commands, 1)  # warm the file-system cache
        times = timed(commands, options.runs)
        planned = subprocess.run(plan, capture_output=True, text=True, check=False)
        validated = subprocess.run(validate, capture_output=True, text=True, check=False)
    result = json.loads(planned.stdout)
    changes = sum(len(d["gains"]) + len(d["changes"]) + len(d["loses"]) for d in result["devices"])
    print(f"repository: {options.deployments} deployments; inventory: {options.devices} devices")
    print(f"plan: {result['summary']} ({changes} deployment changes on devices, "
          f"{len(result['modules'])} modules changed)")  # fmt: skip
    print(f"validate: {validated.stdout.strip()}")
    print(f"{'command':<26} {'median':>8} {'min':>8}   ({options.runs} runs, taking turns)")
    for name, values in times.items():
        median, best = statistics.median(values) * 1000, min(values) * 1000
        print(f"{name:<26} {median:6.0f} ms {best:5.0f} ms")
    plan_time = statistics.median(times["plan --format json"])
    validate_time = statistics.median(times["validate --ref HEAD"])
    verdict = "under" if plan_time < TARGET else "OVER"
    print(
        f"plan / validate: {plan_time / validate_time:.2f}x (medians); plan is {verdict} the "
        f"{TARGET:g} s target"
    )


if __name__ == "__main__":
    main()
