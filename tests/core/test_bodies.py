"""Deploy bodies (protocol §3) for the sample repository, checked against the recorded corpus.

`tests/data/deploy-cases.json` holds bodies the real Python supervisor accepted or rejected.
Every body we build must use only the keys and value kinds of the accepted cases that follow
the reference orchestrator's shape and ran successfully.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_placement import (
    CAMERA,
    NOW,
    OFFLINE,
    WASI,
    device,
    fleet_of,
    loaded,
    sample_fleet,
    sample_snapshot,
    snapshot_of,
)

from gitops_orchestrator.core import bodies, placement
from gitops_orchestrator.models import FILE_MEDIA_TYPES, DeviceView, Snapshot

BASE = "http://orchestrator.test:3000"
CASES = json.loads((Path(__file__).parent.parent / "data" / "deploy-cases.json").read_text())
# The cases that follow the reference orchestrator's body shape (corpus README) and ran; the
# other accepted ones only show what the supervisor tolerates (int64, extra keys, "GET").
REFERENCE = [
    "minimal-one-function",
    "two-functions",
    "two-modules",
    "chain-two-steps",
    "deployment-data-file",
    "execution-file-multipart",
    "file-output",
    "empty-parameters",
    "method-post",
]
# Keys whose values come from a closed set: ours must be among the reference cases' values.
ENUM_KEYS = {"type", "format", "method", "in", "stage"}
# Keys of the reference cases we leave out on purpose: the supervisor never reads parameter
# objects, and the module description (urls.description) documents the parameters.
LEFT_OUT = {"parameter": {"description"}}
# Cases whose body is fine but whose delivery is not (a dead URL, a wrong content type).
NOT_ABOUT_SHAPE = {"binary-unreachable", "binary-404", "body-wrong-content-type"}

Objects = Iterator[tuple[str, dict[str, Any]]]


def _values(value: Any) -> list[Any]:
    return list(value.values()) if isinstance(value, dict) else []


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _objects(body: dict[str, Any]) -> Objects:
    """Every object of a deploy body with its kind, tolerating any malformed part."""
    yield "body", body
    for module in _items(body.get("modules")):
        if isinstance(module, dict):
            yield "module", module
            if isinstance(module.get("urls"), dict):
                yield "urls", module["urls"]
    for functions in _values(body.get("endpoints")):
        for endpoint in _values(functions):
            yield from _endpoint(endpoint)
    if isinstance(body.get("instructions"), dict):
        yield "instructions", body["instructions"]
        for functions in _values(body["instructions"].get("modules")):
            for step in _values(functions):
                yield "instruction", step
                for hop in (step.get("from"), step.get("to")):
                    yield from _endpoint(hop)
    for functions in _values(body.get("mounts")):
        for lists in _values(functions):
            yield "mount lists", lists
            for items in _values(lists):
                for mount in _items(items):
                    yield "mount", mount


def _endpoint(endpoint: Any) -> Objects:
    if not isinstance(endpoint, dict):
        return
    yield "endpoint", endpoint
    request, response = endpoint.get("request"), endpoint.get("response")
    if isinstance(request, dict):
        yield "request", request
        for parameter in _items(request.get("parameters")):
            yield "parameter", parameter
            yield from _schema(parameter.get("schema"))
        if isinstance(request.get("request_body"), dict):
            yield "request body", request["request_body"]
            yield from _schema(request["request_body"].get("schema"))
            for encoding in _values(request["request_body"].get("encoding")):
                yield "encoding", encoding
    if isinstance(response, dict):
        yield "response", response
        yield from _schema(response.get("schema"))


def _schema(schema: Any) -> Objects:
    if isinstance(schema, dict):
        yield "schema", schema
        for item in _values(schema.get("properties")):
            yield from _schema(item)


def _kinds(value: Any) -> set[str]:
    kind = "null" if value is None else type(value).__name__
    return {kind, f"={value}"} if isinstance(value, str) else {kind}


def _reference() -> tuple[dict[str, dict[str, set[str]]], dict[str, set[str]]]:
    """Value kinds per object kind and key, and the keys every object of a kind has."""
    allowed: dict[str, dict[str, set[str]]] = {}
    required: dict[str, set[str]] = {}
    for case in CASES:
        if case["name"] not in REFERENCE:
            continue
        assert case["accepted"], case["name"]
        assert case["executed"]["status"] == 200, case["name"]
        for kind, obj in _objects(case["body"]):
            for key, value in obj.items():
                allowed.setdefault(kind, {}).setdefault(key, set()).update(_kinds(value))
            required[kind] = required.get(kind, set(obj)) & set(obj)
    return allowed, {kind: keys - LEFT_OUT.get(kind, set()) for kind, keys in required.items()}


ALLOWED, REQUIRED = _reference()


def _functions(mapping: Any) -> set[tuple[str, str]]:
    if not isinstance(mapping, dict):
        return set()
    return {
        (m, f) for m, functions in mapping.items() if isinstance(functions, dict) for f in functions
    }


def assert_corpus_shape(body: dict[str, Any]) -> None:
    """`body` has only keys, value kinds and enum values of the reference cases, and all keys
    every reference object of its kind has; every function is in all three sections."""
    for kind, obj in _objects(body):
        assert set(obj) >= REQUIRED[kind], f"{kind} misses {REQUIRED[kind] - set(obj)}"
        for key, value in obj.items():
            assert key in ALLOWED[kind], f"{kind} has key {key!r} no reference case has"
            kinds = _kinds(value)
            assert kinds & ALLOWED[kind][key], f"{kind}.{key} = {value!r}"
            if key in ENUM_KEYS:
                assert kinds <= ALLOWED[kind][key], f"{kind}.{key} = {value!r}"
            if key == "media_type":
                assert value in {"application/json", "multipart/form-data", *FILE_MEDIA_TYPES}
    assert body["modules"], "modules is empty"
    listed = _functions(body["endpoints"])
    assert listed, "no function"
    assert _functions(body["instructions"]["modules"]) == listed
    assert _functions(body["mounts"]) == listed
    assert {m for m, _ in listed} == {module["name"] for module in body["modules"]}


def build(
    snapshot: Snapshot, fleet: dict[str, DeviceView], previous: dict[Any, str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    result = placement.place(snapshot, fleet=fleet, previous=previous or {}, now=NOW)
    return bodies.deploy_bodies(snapshot, placement=result, fleet=fleet, base_url=BASE)


def endpoint(url: str, path: str) -> dict[str, Any]:
    return {
        "url": url,
        "path": path,
        "method": "get",
        "request": {
            "parameters": [
                {"name": "param0", "in": "query", "required": True, "schema": {"type": "integer"}}
            ]
        },
        "response": {"media_type": "application/json", "schema": {"type": "integer"}},
    }


def test_the_checker_rejects_every_other_case() -> None:
    # Rejected bodies, and accepted ones that fail when called or only show what the supervisor
    # tolerates: the check must refuse each, or it proves nothing.
    others = [
        case
        for case in CASES
        if case["name"] not in REFERENCE
        and case["name"] not in NOT_ABOUT_SHAPE
        and isinstance(case["body"], dict)
    ]
    assert len(others) >= 25
    for case in others:
        with pytest.raises(AssertionError):
            assert_corpus_shape(case["body"])


def test_the_checker_accepts_the_reference_cases() -> None:
    for case in CASES:
        if case["name"] in REFERENCE:
            assert_corpus_shape(case["body"])


def test_fibo_chain_across_two_devices() -> None:
    result = build(sample_snapshot(), sample_fleet())
    first, second = result["sup1"]["fibo-chain"], result["sup2"]["fibo-chain"]
    fibo = endpoint("http://sup1.test:5000", "/fibo-chain/modules/fibo/fibo")
    double = endpoint("http://sup2.test:5000", "/fibo-chain/modules/double/double")
    module = sample_snapshot().modules["fibo"]
    assert first == {
        "deploymentId": "fibo-chain",
        "modules": [
            {
                "id": "fibo",
                "name": "fibo",
                "urls": {
                    "binary": f"{BASE}/file/module/fibo/wasm?digest={module.binary.digest}",
                    "description": f"{BASE}/file/module/fibo/description",
                    "other": {},
                },
            }
        ],
        "endpoints": {"fibo": {"fibo": fibo}},
        "instructions": {"modules": {"fibo": {"fibo": {"from": fibo, "to": double}}}},
        "mounts": {"fibo": {"fibo": {"execution": [], "deployment": [], "output": []}}},
    }
    assert second["endpoints"] == {"double": {"double": double}}
    assert second["instructions"] == {
        "modules": {"double": {"double": {"from": double, "to": None}}}
    }
    assert [m["name"] for m in second["modules"]] == ["double"]


def test_one_device_holding_both_steps_gets_one_body() -> None:
    fleet = fleet_of(device("sup1", interfaces=WASI, labels={"room": "kitchen"}))
    result = build(sample_snapshot(), fleet)
    assert set(result) == {"sup1"}
    assert set(result["sup1"]) == {"banner", "double", "fibo-chain"}
    body = result["sup1"]["fibo-chain"]
    assert [module["id"] for module in body["modules"]] == ["fibo", "double"]
    chain = body["instructions"]["modules"]
    assert chain["fibo"]["fibo"]["to"] == body["endpoints"]["double"]["double"]
    assert chain["fibo"]["fibo"]["to"]["url"] == "http://sup1.test:5000"
    assert chain["double"]["double"]["to"] is None


def test_banner_sends_its_data_file_and_output_mount() -> None:
    result = build(sample_snapshot(), sample_fleet())
    (body,) = [deployments["banner"] for deployments in result.values() if "banner" in deployments]
    module = sample_snapshot().modules["banner"]
    greeting = module.data["greeting.txt"].digest
    assert body["modules"][0]["urls"]["other"] == {
        "greeting.txt": f"{BASE}/file/module/banner/greeting.txt?digest={greeting}"
    }
    render = body["endpoints"]["banner"]["render"]
    assert render["request"]["request_body"] == {
        "media_type": "multipart/form-data",
        "schema": {
            "type": "object",
            "properties": {"greeting.txt": {"type": "string", "format": "binary"}},
        },
        "encoding": {"greeting.txt": {"contentType": "application/octet-stream"}},
    }
    assert render["response"] == {
        "media_type": "application/octet-stream",
        "schema": {"type": "string", "format": "binary"},
    }
    assert body["mounts"]["banner"] == {
        "render": {
            "execution": [],
            "deployment": [
                {
                    "path": "greeting.txt",
                    "media_type": "application/octet-stream",
                    "stage": "deployment",
                }
            ],
            "output": [
                {"path": "out.bin", "media_type": "application/octet-stream", "stage": "output"}
            ],
        }
    }


def test_post_function_with_an_execution_file() -> None:
    banner = loaded(
        "banner",
        functions={
            "count": {
                "method": "post",
                "output": "image/png",
                "mounts": [
                    {"path": "in.bin", "stage": "execution"},
                    {"path": "out.png", "stage": "output", "media_type": "image/png"},
                ],
            }
        },
    )
    snapshot = snapshot_of(
        [{"name": "count", "sequence": [{"module": "banner", "function": "count"}]}], [banner]
    )
    body = build(snapshot, fleet_of(device("sup1")))["sup1"]["count"]
    count = body["endpoints"]["banner"]["count"]
    assert count["method"] == "post"
    assert count["request"]["parameters"] == []
    assert count["request"]["request_body"]["encoding"] == {
        "in.bin": {"contentType": "application/octet-stream"}
    }
    assert count["response"]["media_type"] == "image/png"
    assert_corpus_shape(body)


@pytest.mark.parametrize(
    "fleet",
    [
        pytest.param(sample_fleet(), id="spread"),
        pytest.param(
            fleet_of(device("sup1", interfaces=WASI, labels={"room": "kitchen"})), id="solo"
        ),
        pytest.param(
            fleet_of(
                device("a", interfaces=WASI, labels={"room": "kitchen"}),
                device("b", interfaces=WASI, labels={"room": "kitchen"}),
                device("c", interfaces={CAMERA, *WASI}),
            ),
            id="three",
        ),
    ],
)
def test_every_body_has_the_corpus_shape(fleet: dict[str, DeviceView]) -> None:
    result = build(sample_snapshot(), fleet)
    assert result
    for deployments in result.values():
        for body in deployments.values():
            assert_corpus_shape(body)


def test_an_incomplete_deployment_is_deployed_nowhere() -> None:
    fleet = sample_fleet()
    fleet["sup1"] = device("sup1", interfaces=WASI, labels={"room": "kitchen"}, state=OFFLINE)
    fleet["sup2"] = device("sup2", labels={"room": "hallway"})  # no WASI: banner cannot run
    result = build(sample_snapshot(), fleet)
    # fibo-chain fails over to sup2; double waits for a kitchen device; banner for WASI.
    assert result == {"sup2": {"fibo-chain": result["sup2"]["fibo-chain"]}}


def test_bodies_are_deterministic_and_digests_follow_content() -> None:
    one, two = build(sample_snapshot(), sample_fleet()), build(sample_snapshot(), sample_fleet())
    assert json.dumps(one) == json.dumps(two)
    assert list(one) == sorted(one)
    digest = bodies.body_digest(one["sup1"]["fibo-chain"])
    assert digest == bodies.body_digest(two["sup1"]["fibo-chain"])
    assert len(digest) == 64
    moved = sample_fleet()
    moved["sup2"] = DeviceView(
        "sup2",
        "http://10.0.0.2:5000",
        moved["sup2"].state,
        moved["sup2"].interfaces,
        moved["sup2"].labels,
    )
    # The first step's `to` names sup2's new address, so sup1's body changes too.
    assert bodies.body_digest(build(sample_snapshot(), moved)["sup1"]["fibo-chain"]) != digest


def test_base_url_trailing_slash_is_ignored() -> None:
    snapshot = sample_snapshot()
    result = placement.place(snapshot, fleet=sample_fleet(), previous={}, now=NOW)
    slash = bodies.deploy_bodies(
        snapshot, placement=result, fleet=sample_fleet(), base_url=BASE + "/"
    )
    assert slash == build(snapshot, sample_fleet())


def test_canonical_json_is_compact_and_sorted() -> None:
    assert bodies.canonical_json({"b": 1, "a": [None, "é"]}) == '{"a":[null,"é"],"b":1}'.encode()
