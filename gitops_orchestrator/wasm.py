"""What a wasm binary offers (exports) and needs (imports).

wasmtime decides whether the bytes are valid WebAssembly (`Module.validate`: no code
generation, so it costs milliseconds even for large binaries). The exports and imports are then
read from the binary's type, import, function and export sections by a small parser, which
avoids compiling every module the repository holds; anything it does not expect falls back to
compiling the module with wasmtime, which reports the same facts more slowly.
"""

from __future__ import annotations

import wasmtime

from .models import Inspection, WasmImport

MAGIC = b"\0asm\x01\0\0\0"
_FUNC_TYPE = 0x60
# Section ids of the binary format (WebAssembly core spec §5.5).
_TYPE, _IMPORT, _FUNCTION, _EXPORT = 1, 2, 3, 7
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
_ENGINE = wasmtime.Engine()


class InvalidWasm(ValueError):
    """The bytes are not a valid WebAssembly module."""


def inspect(binary: bytes) -> Inspection:
    """Validate `binary` with wasmtime and list its exported functions and imports."""
    try:
        wasmtime.Module.validate(_ENGINE, binary)
    except wasmtime.WasmtimeError as exc:
        raise InvalidWasm(" ".join(str(exc).split())) from exc
    try:
        return _parse(binary)
    except _Unsupported:
        return _inspect_compiled(binary)


class _Unsupported(Exception):
    """An encoding the parser does not know (for example a GC proposal type)."""


class _Reader:
    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _Unsupported
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    def name(self) -> str:
        length = self.uint()
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value_type(self) -> None:
        if self.byte() in (0x63, 0x64):  # (ref null? heaptype): a signed LEB heap type follows
            self.uint()

    def limits(self) -> None:
        flags = self.byte()
        self.uint()
        if flags & 1:
            self.uint()
        if flags & 8:  # custom page size
            self.uint()


def _parse(binary: bytes) -> Inspection:
    if not binary.startswith(MAGIC):
        raise _Unsupported
    reader = _Reader(binary, len(MAGIC))
    types: list[int] = []
    function_types: list[int] = []
    imports: list[WasmImport] = []
    exports: dict[str, int] = {}
    while reader.pos < reader.end:
        section = reader.byte()
        size = reader.uint()
        body = _Reader(binary, reader.pos, reader.pos + size)
        reader.pos += size
        if section == _TYPE:
            types = [_function_type(body) for _ in range(body.uint())]
        elif section == _IMPORT:
            for _ in range(body.uint()):
                module, name, kind = body.name(), body.name(), body.byte()
                imports.append(WasmImport(module, name, _KINDS.get(kind, str(kind))))
                _skip_import(body, kind, function_types)
        elif section == _FUNCTION:
            function_types.extend(body.uint() for _ in range(body.uint()))
        elif section == _EXPORT:
            for _ in range(body.uint()):
                name, kind, index = body.name(), body.byte(), body.uint()
                if kind == 0:
                    exports[name] = types[function_types[index]]
    return Inspection(functions=dict(sorted(exports.items())), imports=tuple(imports))


def _function_type(body: _Reader) -> int:
    if body.byte() != _FUNC_TYPE:
        raise _Unsupported
    params = body.uint()
    for _ in range(params):
        body.value_type()
    for _ in range(body.uint()):
        body.value_type()
    return params


def _skip_import(body: _Reader, kind: int, function_types: list[int]) -> None:
    if kind == 0:
        function_types.append(body.uint())
    elif kind == 1:
        body.value_type()
        body.limits()
    elif kind == 2:
        body.limits()
    elif kind == 3:
        body.value_type()
        body.byte()
    else:
        raise _Unsupported


def _inspect_compiled(binary: bytes) -> Inspection:
    module = wasmtime.Module(_ENGINE, binary)
    functions = {
        export.name: len(export.type.params)
        for export in module.exports
        if isinstance(export.type, wasmtime.FuncType)
    }
    imports = tuple(
        WasmImport(item.module, item.name or "", _kind_of(item.type)) for item in module.imports
    )
    return Inspection(functions=dict(sorted(functions.items())), imports=imports)


def _kind_of(extern: object) -> str:
    kinds = {
        wasmtime.FuncType: "func",
        wasmtime.TableType: "table",
        wasmtime.MemoryType: "memory",
        wasmtime.GlobalType: "global",
    }
    return next((kind for cls, kind in kinds.items() if isinstance(extern, cls)), "other")
