"""Rebuild the committed WebAssembly binaries from their WAT sources.

The ``.wasm`` files under ``modules/`` are committed because the orchestrator
deploys binaries, not sources. Committing build output is only trustworthy if
anyone can regenerate it byte for byte and see that it matches, so this script
is the single way the binaries are produced:

    python build.py           # write modules/<name>/<name>.wasm from <name>.wat
    python build.py --check   # exit 1 and list every .wasm that differs

Compilation uses ``wasmtime.wat2wasm`` (pip package ``wasmtime``; binaries
were produced with 50.0.1). Its output depends only on the source text, and
files are written as raw bytes in sorted order, so repeated builds are
identical. A different wasmtime release may encode e.g. the name section
differently; ``--check`` is how that would be noticed.
"""

import argparse
import sys
from pathlib import Path

from wasmtime import wat2wasm

ROOT = Path(__file__).resolve().parent


def sources() -> list[Path]:
    return sorted(ROOT.glob("modules/*/*.wat"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare instead of write; exit 1 on any difference"
    )
    args = parser.parse_args()

    stale = []
    for wat in sources():
        wasm = wat.with_suffix(".wasm")
        built = bytes(wat2wasm(wat.read_text(encoding="utf-8")))
        rel = wasm.relative_to(ROOT)
        if args.check:
            if not wasm.is_file() or wasm.read_bytes() != built:
                stale.append(rel)
        else:
            wasm.write_bytes(built)
            print(f"built {rel} ({len(built)} bytes)")

    for rel in stale:
        print(f"out of date: {rel}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
