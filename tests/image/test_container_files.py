"""The container files say what `make test-image` relies on, checked without a Docker engine.

`tests/image/run.sh` builds and runs them for real (it needs root and a few minutes, so
`make test` leaves it to `make test-image`); these checks are quick and catch the drift a
user meets first: a variable missing from `.env.example`, demo devices the sample does not
admit, an image pulled from a registry, a root container, a repository git refuses to read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.site.yml"]


def compose(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return document


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [item.strip() for item in re.split(r"(?<!\\)\n", "\n".join(lines)) if item.strip()]


def test_env_example_names_every_variable_the_compose_files_use() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    used = {
        name
        for file in COMPOSE_FILES
        for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / file).read_text())
    }
    assert used, "no variables found: the pattern no longer matches the files"
    assert sorted(used - documented) == []


def test_the_demo_devices_are_the_ones_the_sample_admits() -> None:
    services = compose("docker-compose.yml")["services"]
    admitted = yaml.safe_load((ROOT / "sample-repo" / "devices.yaml").read_text())["devices"]
    demo = {
        name: service for name, service in services.items() if "demo" in service.get("profiles", [])
    }
    assert sorted(demo) == sorted(admitted)
    public_url = services["orchestrator"]["environment"]["GITOPS_PUBLIC_URL"]
    for name, service in demo.items():
        words = service["command"].split()
        # The device registers the address it listens on: 0.0.0.0 means its container's own.
        assert words[:3] == ["device", "--name", name]
        assert words[words.index("--host") + 1] == "0.0.0.0"
        orchestrator = words[words.index("--orchestrator") + 1]
        assert public_url == f"${{GITOPS_PUBLIC_URL:-{orchestrator}}}"
        assert service["depends_on"]["orchestrator"]["condition"] == "service_healthy"


def test_no_service_is_pulled_from_a_registry() -> None:
    for file in COMPOSE_FILES:
        for name, service in compose(file)["services"].items():
            assert service["pull_policy"] == "never", (file, name)
            assert service["image"].startswith("${GITOPS_IMAGE:-local/"), (file, name)


def test_the_real_site_runs_on_the_hosts_network_with_mdns() -> None:
    orchestrator = compose("docker-compose.site.yml")["services"]["orchestrator"]
    assert orchestrator["network_mode"] == "host"
    assert "ports" not in orchestrator  # meaningless on the host's network
    assert orchestrator["environment"]["GITOPS_MDNS_INTERFACES"] == "${GITOPS_MDNS_INTERFACES:-all}"
    bridge = compose("docker-compose.yml")["services"]["orchestrator"]
    assert bridge["environment"]["GITOPS_MDNS_INTERFACES"] == "none"


def test_the_image_runs_as_a_user_with_its_state_in_a_volume() -> None:
    instructions = dockerfile()
    assert instructions[0] == "ARG BASE=python:3.11-slim-bookworm"
    assert [i for i in instructions if i.startswith("FROM")] == [
        "FROM ${BASE} AS build",
        "FROM ${BASE}",
    ]
    [user] = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert user.split(":")[0] not in {"0", "root"}
    assert 'VOLUME ["/data"]' in instructions
    [healthcheck] = [i for i in instructions if i.startswith("HEALTHCHECK")]
    assert "/healthz" in healthcheck
    assert instructions[-2:] == ['ENTRYPOINT ["gitops-orchestrator"]', 'CMD ["serve"]']
    assert not any("[dev]" in i for i in instructions)


def test_the_mounted_repository_is_safe_for_git() -> None:
    compose_mount = compose("docker-compose.yml")["services"]["orchestrator"]["volumes"]
    [repo] = [volume for volume in compose_mount if volume.endswith(":/repo:ro")]
    assert repo.startswith("${GITOPS_REPO_DIR")
    assert any("git config --system --add safe.directory /repo" in i for i in dockerfile()), (
        "a /repo owned by another uid is refused by git as dubious ownership"
    )
