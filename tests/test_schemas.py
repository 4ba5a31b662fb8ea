"""The checked-in JSON Schemas match the models, and agree with them on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
import yaml

from gitops_orchestrator import schemas

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(schemas.SCHEMAS))
def test_checked_in_schema_is_current(name: str) -> None:
    on_disk = (ROOT / "schema" / name).read_text(encoding="utf-8")
    assert on_disk == schemas.rendered()[name], "stale: run `make schemas` and commit schema/"


def _jsonschema_validator(name: str):  # type: ignore[no-untyped-def]
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft202012Validator(json.loads((ROOT / "schema" / name).read_text()))


def test_sample_files_satisfy_the_schemas() -> None:
    sample = ROOT / "sample-repo"
    files = [("devices.schema.json", sample / "devices.yaml")]
    files += [("module.schema.json", p) for p in sorted(sample.glob("modules/*/module.yaml"))]
    files += [("deployment.schema.json", p) for p in sorted(sample.glob("deployments/*.yaml"))]
    for name, path in files:
        errors = list(_jsonschema_validator(name).iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], f"{path}: {errors[0].message if errors else ''}"


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("module.schema.json", {"name": "Bad Name", "wasm": "x.wasm", "functions": {}}),
        ("module.schema.json", {"name": "x", "wasm": "x.wasm", "functions": {"f": {}}}),
        ("deployment.schema.json", {"name": "d", "sequence": [{"module": "m"}]}),
        ("devices.schema.json", {"admission": "closed"}),
        ("devices.schema.json", {"devices": {"a": {"colour": "red"}}}),
    ],
    ids=["bad-name", "missing-output", "step-without-function", "bad-admission", "unknown-key"],
)
def test_schemas_reject_what_the_models_reject(name: str, document: dict[str, object]) -> None:
    model = schemas.SCHEMAS[name]
    assert list(_jsonschema_validator(name).iter_errors(document)), "schema accepted it"
    with pytest.raises(pydantic.ValidationError):
        model.model_validate(document)
