"""Module descriptions (protocol §3) against golden files.

Set UPDATE_GOLDEN=1 to rewrite the golden files after an intended change, then review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from gitops_orchestrator.core import openapi
from gitops_orchestrator.models import Module

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "openapi"

# A module exercising what the sample modules do not: POST, several parameters, images,
# several input files of both input stages.
CAMERA = {
    "name": "camera",
    "wasm": "camera.wasm",
    "functions": {
        "snap": {
            "method": "post",
            "params": ["integer", "integer"],
            "output": "image/jpeg",
            "mounts": [
                {"path": "model.bin", "stage": "deployment"},
                {"path": "frame.png", "stage": "execution", "media_type": "image/png"},
                {"path": "out.jpg", "stage": "output", "media_type": "image/jpeg"},
            ],
        },
        "ping": {"output": "integer"},
    },
    "data": {"model.bin": "model.bin"},
}


def _modules() -> dict[str, Module]:
    modules = {
        path.parent.name: Module.model_validate(yaml.safe_load(path.read_text()))
        for path in sorted((ROOT / "sample-repo" / "modules").glob("*/module.yaml"))
    }
    modules["camera"] = Module.model_validate(CAMERA)
    return modules


@pytest.mark.parametrize("name", sorted(_modules()))
def test_description_matches_golden(name: str) -> None:
    document = openapi.module_description(_modules()[name])
    text = json.dumps(document, indent=2) + "\n"
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_description_follows_the_original_shape() -> None:
    document = openapi.module_description(_modules()["camera"])
    assert document["openapi"] == "3.0.3"
    assert document["servers"][0]["url"] == "http://{serverIp}:{port}"
    snap = document["paths"]["/{deployment}/modules/camera/snap"]["post"]
    assert [p["name"] for p in snap["parameters"]] == ["param0", "param1"]
    assert all(p["in"] == "query" and p["required"] for p in snap["parameters"])
    body = snap["requestBody"]["content"]["multipart/form-data"]
    assert sorted(body["schema"]["properties"]) == ["frame.png", "model.bin"]
    assert snap["responses"]["200"]["content"] == {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}}
    }
    ping = document["paths"]["/{deployment}/modules/camera/ping"]["get"]
    assert ping["parameters"] == []
    assert "requestBody" not in ping
    assert ping["responses"]["200"]["content"] == {
        "application/json": {"schema": {"type": "integer"}}
    }


def test_description_is_deterministic() -> None:
    module = _modules()["banner"]
    assert json.dumps(openapi.module_description(module)) == json.dumps(
        openapi.module_description(module)
    )
