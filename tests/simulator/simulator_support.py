"""Helpers of the simulator tests: an orchestrator stand-in and the corpus' modules.

`Orchestrator` is a real HTTP server on 127.0.0.1 in a thread of its own (like the
`python -m http.server` of the recording): it serves module files, answers the registration
and log POSTs the way the original orchestrator does, and records every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import wasmtime

DATA = Path(__file__).resolve().parent.parent / "data"
CASES: list[dict[str, Any]] = json.loads((DATA / "deploy-cases.json").read_text(encoding="utf-8"))
# The 15 bytes the recording served as /file/module/files/data.txt.
DATA_TXT = b"some data file\n"


def corpus_files() -> dict[str, bytes]:
    """The recording's file server content: the three modules and the data file."""
    files = {
        f"/file/module/{name}/wasm": bytes(wasmtime.wat2wasm((DATA / f"{name}.wat").read_text()))
        for name in ("inc", "sq", "files")
    }
    files["/file/module/files/data.txt"] = DATA_TXT
    return files


def substitute(value: Any, replacements: Mapping[str, str]) -> Any:
    """`value` with the corpus placeholders (http://ORCHESTRATOR, ...) replaced in every string."""
    if isinstance(value, str):
        for placeholder, real in replacements.items():
            value = value.replace(placeholder, real)
        return value
    if isinstance(value, list):
        return [substitute(item, replacements) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, replacements) for key, item in value.items()}
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # socketserver's 5 resets a fleet registering all at once


class Orchestrator:
    """A recording orchestrator stand-in on 127.0.0.1; use as a context manager."""

    def __init__(self, files: Mapping[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.requests: list[str] = []  # "GET /path -> 200", in arrival order
        self.registrations: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="orchestrator"
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Orchestrator:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def downloads(self) -> list[str]:
        with self.lock:
            return [line for line in self.requests if line.startswith("GET ")]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.registrations.clear()
            self.logs.clear()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        orchestrator = self

        class Handler(BaseHTTPRequestHandler):
            # One request per connection, like `python -m http.server`: no handler thread
            # outlives its request.
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                content = orchestrator.files.get(self.path)
                self._answer(200 if content is not None else 404, content or b"not found")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/file/device/discovery/register":
                    with orchestrator.lock:
                        orchestrator.registrations.append(json.loads(body))
                    self._answer(204, b"")
                    return
                if self.path == "/device/logs":
                    [log_data] = parse_qs(body.decode())["logData"]
                    with orchestrator.lock:
                        orchestrator.logs.append(json.loads(log_data))
                self._answer(200, b'{"message":"ok"}')

            def _answer(self, status: int, content: bytes) -> None:
                with orchestrator.lock:
                    orchestrator.requests.append(f"{self.command} {self.path} -> {status}")
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if status != 204:
                    self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read `requests` instead

        return Handler
