"""Runs one exported function of a stored module with wasmtime, as the supervisor does.

Each run gets a fresh store and WASI context with the module's own folder preopened as fd 3
(`.`, writable), so modules read their data files and write their outputs there. Host functions
the device advertises in `supervisorInterfaces` (other than WASI's) are stubs that return zeros:
enough for placement tests, not an emulation of a camera. Blocking: call it from a thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import wasmtime

WASI = "wasi_snapshot_preview1"
_ENGINE = wasmtime.Engine()
# Compiled modules by the sha256 of their bytes. A device stores binaries by module name and
# re-reads the file on every run (a later deploy may replace it), so the cache is keyed by
# content; 64 entries hold every module of a large test fleet.
_CACHE_SIZE = 64
_compiled: OrderedDict[bytes, wasmtime.Module] = OrderedDict()
_lock = threading.Lock()

_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "i32": int,
    "i64": int,
    "f32": float,
    "f64": float,
}


def load(binary: Path) -> wasmtime.Module:
    """The compiled module stored at `binary` (raises if the bytes are not WebAssembly)."""
    data = binary.read_bytes()
    digest = hashlib.sha256(data).digest()
    with _lock:
        module = _compiled.get(digest)
        if module is not None:
            _compiled.move_to_end(digest)
            return module
    module = wasmtime.Module(_ENGINE, data)
    with _lock:
        _compiled[digest] = module
        while len(_compiled) > _CACHE_SIZE:
            _compiled.popitem(last=False)
    return module


def param_converters(module: wasmtime.Module, function: str) -> list[Callable[[str], Any]]:
    """How to turn query strings into the function's arguments, by position.

    Raises KeyError(function) when the module exports no such function, which the history
    shows as `'name'` (transcript §10d).
    """
    for export in module.exports:
        if export.name == function and isinstance(export.type, wasmtime.FuncType):
            return [_CONVERTERS.get(str(param), int) for param in export.type.params]
    raise KeyError(function)


def call(
    module: wasmtime.Module,
    function: str,
    args: Sequence[Any],
    *,
    folder: Path,
    interfaces: Collection[str],
) -> Any:
    """Run `function(*args)` with `folder` preopened; the wasm result (int, list or None)."""
    store = wasmtime.Store(_ENGINE)
    wasi = wasmtime.WasiConfig()
    wasi.preopen_dir(str(folder), ".")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(_ENGINE)
    linker.define_wasi()
    missing = [
        f"{item.module}::{item.name}"
        for item in module.imports
        if item.module != WASI and item.name not in interfaces
    ]
    if missing:
        raise RuntimeError(f"unknown import: {', '.join(missing)} (not in supervisorInterfaces)")
    linker.define_unknown_imports_as_default_values(store, module)
    instance = linker.instantiate(store, module)
    func = instance.exports(store)[function]
    if not isinstance(func, wasmtime.Func):
        raise KeyError(function)
    expected = len(func.type(store).params)
    if len(args) < expected:
        # The supervisor's own check and wording (transcript §7).
        raise RuntimeError(f"too few parameters provided: given {len(args)}, expected {expected}")
    return func(store, *args)
