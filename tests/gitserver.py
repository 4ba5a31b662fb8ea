"""A real git HTTP server for tests: `git http-backend` behind basic auth, on 127.0.0.1.

    with serve_git(root, username="alice", password="s3cret") as server:
        url = server.url("origin.git")      # http://127.0.0.1:<port>/origin.git

`root` is the folder holding bare repositories (GIT_PROJECT_ROOT). Every request must carry
`Authorization: Basic base64(username:password)`, else the answer is 401 with a
`WWW-Authenticate` challenge, like a real forge. Each request runs the real CGI program, so
what git sees is the smart HTTP protocol, not a fake. Request bodies are passed through as
they come (gzip included: `git http-backend` inflates them itself when told the encoding).
`server.requests` records what arrived, for tests that check what a client sent.
"""

from __future__ import annotations

import base64
import binascii
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


def _http_backend() -> str:
    exec_path = subprocess.run(
        ["git", "--exec-path"], check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return os.path.join(exec_path, "git-http-backend")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None
    status: int


class _Server(http.server.ThreadingHTTPServer):
    # Request threads are joined by server_close(), so none outlives the server.
    daemon_threads = False
    block_on_close = True

    def __init__(self, root: Path, username: str, password: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.backend = _http_backend()
        self.requests: list[Request] = []
        self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet

    def _record(self, status: int) -> None:
        with self.server.lock:
            self.server.requests.append(
                Request(self.command, self.path, self.headers.get("Authorization"), status)
            )

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        if given == self.server.expected:
            return True
        try:  # also accept a differently padded/cased scheme, like real servers do
            scheme, _, value = given.partition(" ")
            return scheme.lower() == "basic" and base64.b64decode(
                value, validate=True
            ) == base64.b64decode(self.server.expected.split(" ", 1)[1])
        except (binascii.Error, ValueError):
            return False

    def _serve(self) -> None:
        body = self._body()
        if not self._authorized():
            self._record(401)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        url = urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "git",
            "REMOTE_ADDR": self.client_address[0],
        }
        for header in ("Content-Encoding", "Git-Protocol", "Accept"):
            value = self.headers.get(header)
            if value is not None:
                env["HTTP_" + header.upper().replace("-", "_")] = value
        done = subprocess.run(
            [self.server.backend], input=body, env=env, capture_output=True, timeout=60
        )
        head, sep, payload = done.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = done.stdout.partition(b"\n\n")
        status = 200 if done.returncode == 0 else 500
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        self._record(status)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class GitServer:
    """A running server; see the module docstring."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.port: int = server.server_address[1]

    @property
    def requests(self) -> list[Request]:
        with self._server.lock:
            return list(self._server.requests)

    def url(self, name: str, *, userinfo: str = "") -> str:
        """The URL of repository `name` (a path under the root), with optional `user:pw@`."""
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}/{name}"


@contextmanager
def serve_git(
    root: Path, *, username: str = "git", password: str = "secret"
) -> Iterator[GitServer]:
    """Serve the bare repositories under `root` until the block ends."""
    server = _Server(root, username, password)
    thread = threading.Thread(target=server.serve_forever, name="gitserver", daemon=True)
    thread.start()
    try:
        yield GitServer(server)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
