"""JSON Schemas for the repository files, generated from the models into `schema/`.

Editors validate `module.yaml`, deployments and `devices.yaml` with these while people type;
the loader stays the authority (it also checks the wasm and references between files).
`python -m gitops_orchestrator.schemas [FOLDER]` rewrites them; a test fails when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .models import Deployment, Devices, Module

SCHEMAS: dict[str, type[BaseModel]] = {
    "module.schema.json": Module,
    "deployment.schema.json": Deployment,
    "devices.schema.json": Devices,
}
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "schema"


def schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one repository file."""
    generated = model.model_json_schema()
    _close_pattern_properties(generated)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **generated}


def _close_pattern_properties(node: Any) -> None:
    # pydantic describes a dict with constrained keys by `patternProperties` alone, which lets
    # any other key through; the models refuse such keys, so the schema must too.
    if isinstance(node, dict):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_pattern_properties(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_properties(value)


def rendered() -> dict[str, str]:
    """File name -> the text that belongs in `schema/`."""
    return {
        name: json.dumps(schema(model), indent=2, sort_keys=True) + "\n"
        for name, model in SCHEMAS.items()
    }


def write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (folder / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FOLDER)
