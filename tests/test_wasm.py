"""`wasm.inspect` against what wasmtime itself reports when it compiles the module."""

from __future__ import annotations

import pytest
import wasmtime
from conftest import SAMPLE_REPO, wat

from gitops_orchestrator import wasm
from gitops_orchestrator.models import Inspection, WasmImport

KINDS = {
    wasmtime.FuncType: "func",
    wasmtime.TableType: "table",
    wasmtime.MemoryType: "memory",
    wasmtime.GlobalType: "global",
}


def compiled(binary: bytes) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """Exported functions (name -> parameter count) and imports, from a wasmtime compile."""
    module = wasmtime.Module(wasmtime.Engine(), binary)
    functions = {
        export.name: len(export.type.params)
        for export in module.exports
        if isinstance(export.type, wasmtime.FuncType)
    }
    imports = [
        (item.module, item.name, KINDS.get(type(item.type), type(item.type).__name__))
        for item in module.imports
    ]
    return functions, imports


def facts(inspection: Inspection) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    return (
        dict(inspection.functions),
        [(item.module, item.name, item.kind) for item in inspection.imports],
    )


@pytest.mark.parametrize("name", ["fibo", "double", "banner"])
def test_sample_modules_agree_with_wasmtime(name: str) -> None:
    binary = (SAMPLE_REPO / "modules" / name / f"{name}.wasm").read_bytes()
    inspection = wasm.inspect(binary)
    assert facts(inspection) == compiled(binary)
    assert inspection.functions  # each sample module exports something


def test_banner_imports() -> None:
    inspection = wasm.inspect((SAMPLE_REPO / "modules/banner/banner.wasm").read_bytes())
    assert inspection.imports == tuple(
        WasmImport("wasi_snapshot_preview1", name, "func")
        for name in ("path_open", "fd_read", "fd_write", "fd_close")
    )
    assert dict(inspection.functions) == {"count": 0, "render": 1}  # memory is not a function


EVERY_KIND = """
(module
  (import "env" "log" (func (param i32 i64) (result f32)))
  (import "env" "table" (table 1 10 funcref))
  (import "env" "refs" (table 2 externref))
  (import "env" "memory" (memory 1 2))
  (import "env" "counter" (global (mut i64)))
  (import "env" "ratio" (global f64))
  (import "env" "vector" (global v128))
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (func (export "multi") (param i32 f32) (result i32 i64 f64)
    (i32.const 0) (i64.const 0) (f64.const 0))
  (func (export "every_type") (param i32 i64 f32 f64 v128 funcref externref))
  (func (export "nothing"))
  (export "reexported_log" (func 0))
  (export "also_multi" (func 2))
  (export "mem" (memory 0))
  (export "tab" (table 0))
  (export "glob" (global 0))
)
"""


GENERATED = {
    "every-import-kind": (
        EVERY_KIND,
        {"also_multi": 2, "every_type": 7, "multi": 2, "nothing": 0, "reexported_log": 2},
        [
            ("env", "log", "func"),
            ("env", "table", "table"),
            ("env", "refs", "table"),
            ("env", "memory", "memory"),
            ("env", "counter", "global"),
            ("env", "ratio", "global"),
            ("env", "vector", "global"),
            ("wasi_snapshot_preview1", "fd_write", "func"),
        ],
    ),
    "no-exports": ("(module)", {}, []),
    "memory64-import": (
        '(module (import "a" "m" (memory i64 1)) (func (export "x") (param i64)))',
        {"x": 1},
        [("a", "m", "memory")],
    ),
    "shared-memory-import": (
        '(module (import "a" "m" (memory 1 2 shared)) (func (export "x")))',
        {"x": 0},
        [("a", "m", "memory")],
    ),
    "typed-function-references": (
        """(module (type $t (func (param i32)))
             (func (export "x") (param (ref null $t)) (param (ref func)) (param i32)))""",
        {"x": 3},
        [],
    ),
    "gc-types": (
        """(module (type $s (struct (field i32)))
             (func (export "x") (param (ref null $s)) (param anyref)))""",
        {"x": 2},
        [],
    ),
    "recursive-type-group": (
        """(module (rec (type $a (func)) (type $b (func (param i32 i32))))
             (func (export "x") (type $b)) (func (export "y") (type $a)))""",
        {"x": 2, "y": 0},
        [],
    ),
    "many-params": (
        '(module (func (export "wide") (param' + " i32" * 200 + ")))",
        {"wide": 200},
        [],
    ),
    "long-export-name": (
        '(module (func (export "' + "n" * 300 + '") (param i32)))',
        {"n" * 300: 1},
        [],
    ),
}


@pytest.mark.parametrize(
    ("text", "functions", "imports"), list(GENERATED.values()), ids=list(GENERATED)
)
def test_generated_modules_agree_with_wasmtime(
    text: str, functions: dict[str, int], imports: list[tuple[str, str, str]]
) -> None:
    binary = wat(text)
    inspection = wasm.inspect(binary)
    assert facts(inspection) == compiled(binary)
    assert facts(inspection) == (functions, imports)
    assert list(inspection.functions) == sorted(functions)


def test_tag_import_falls_back_to_wasmtime() -> None:
    binary = wat('(module (import "a" "e" (tag (param i32))) (func (export "x") (param i32)))')
    inspection = wasm.inspect(binary)
    assert dict(inspection.functions) == {"x": 1}
    assert [(i.module, i.name) for i in inspection.imports] == [("a", "e")]


@pytest.mark.parametrize(
    ("binary", "fragment"),
    [
        (b"", "unexpected end-of-file"),
        (b"not wasm at all", "magic header not detected"),
        (b"\0asm", "unexpected end-of-file"),
        (b"\0asm\x02\0\0\0", "unknown binary version"),
        (b"\0asm\x01\0\0\0\x01\x05", "unexpected end-of-file"),
        (b"\0asm\x01\0\0\0\x63\x00", "malformed section id"),
    ],
    ids=["empty", "text", "magic-only", "wrong-version", "section-past-end", "unknown-section"],
)
def test_invalid_bytes(binary: bytes, fragment: str) -> None:
    with pytest.raises(wasm.InvalidWasm) as caught:
        wasm.inspect(binary)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("cut", [1, 3, 10])
def test_truncated_binary(cut: int) -> None:
    binary = (SAMPLE_REPO / "modules/banner/banner.wasm").read_bytes()
    with pytest.raises(wasm.InvalidWasm) as caught:
        wasm.inspect(binary[:-cut])
    assert "unexpected end" in str(caught.value) or "out of bounds" in str(caught.value)


def test_type_errors_are_invalid() -> None:
    # Well-formed binary, but the body leaves nothing although the type promises an i32.
    binary = wat('(module (func (export "f") (result i32)))')
    assert binary.startswith(wasm.MAGIC)
    with pytest.raises(wasm.InvalidWasm) as caught:
        wasm.inspect(binary)
    assert str(caught.value).startswith("type mismatch: expected i32 but nothing on stack")


def test_duplicate_export_names_are_invalid() -> None:
    binary = wat('(module (func $f) (export "f" (func $f)) (export "f" (func $f)))')
    with pytest.raises(wasm.InvalidWasm) as caught:
        wasm.inspect(binary)
    assert "duplicate export name" in str(caught.value)


def test_magic_header_message_is_one_line() -> None:
    with pytest.raises(wasm.InvalidWasm) as caught:
        wasm.inspect(b"not wasm at all")
    assert "\n" not in str(caught.value)
