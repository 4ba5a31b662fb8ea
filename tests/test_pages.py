"""The status pages, on a real orchestrator with a real (simulated) fleet.

A `serve` process follows a git copy of sample-repo (plus a `count` deployment whose first step
takes an input file); three simulated supervisors register with it and run what it places. The
fast tests read the pages over HTTP; the browser test drives a real headless Chromium through
them: it follows links, runs deployments with the try-it form, watches pages change without a
reload as the repository and the fleet change, and saves a screenshot of every page.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from browser import DESKTOP, PHONE, chromium, screenshot
from conftest import CLI, copy_sample, eventually, free_port, git_init_commit, write_files
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from test_store import record_head

from gitops_orchestrator.settings import WebSettings
from gitops_orchestrator.simulator.fleet import FleetThread
from gitops_orchestrator.store import Store
from gitops_orchestrator.web import pages
from gitops_orchestrator.web.app import Services, create_app

BOUND = 20.0
DEVICES = ["sup1", "sup2", "sup3"]
# banner.count returns the size of its execution-stage input file in.bin.
COUNT = "name: count\nsequence:\n  - {module: banner, function: count}\n"
LIVE = 5000  # ms a page may take to show a change, after the change is made


class Site:
    """A running orchestrator with its repository and its simulated fleet."""

    def __init__(self, url: str, repo: Path, fleet: FleetThread) -> None:
        self.url, self.repo, self.fleet = url, repo, fleet
        self.client = httpx.Client(base_url=url, timeout=10, trust_env=False)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path, headers={"Accept": "text/html"})

    def api(self, path: str) -> Any:
        return self.client.get(path).json()

    def synced(self) -> bool:
        items = self.api("/api/v1/deployments")["items"]
        return bool(items) and all(item["status"] == "synced" for item in items)


@contextmanager
def running_site(folder: Path, *, message: str = "the fleet") -> Iterator[Site]:
    """`serve` on a copy of sample-repo, with sup1..sup3 registered and everything synced."""
    repo = copy_sample(folder / "repo")
    write_files(repo, {"deployments/count.yaml": COUNT})
    git_init_commit(repo, message)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "serve.log").open("w")  # a pipe nobody reads would fill up
    process = subprocess.Popen(
        [str(CLI), "serve", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(folder / "data"), "--public-url", url, "--reconcile-interval", "0.5",
         # The pages show placements made as the devices register, without a settle wait.
         "--settle-window", "0"],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: _answers(url), "the orchestrator to listen")
        with FleetThread(orchestrator_url=url) as fleet:
            fleet.add(names=DEVICES)
            site = Site(url, repo, fleet)
            try:
                eventually(site.synced, "every deployment to be synced")
                yield site
            finally:
                site.client.close()
    finally:
        process.terminate()
        process.communicate(timeout=BOUND)
        log.close()
        stderr = (folder / "serve.log").read_text()
        assert "Traceback" not in stderr, stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One orchestrator for the read-only tests; its commit message tries to inject a script."""
    message = "the fleet <script>alert('pwned')</script>"
    with running_site(tmp_path_factory.mktemp("pages"), message=message) as running:
        yield running


# Without a browser: every page answers HTML that names and links what it involves.

PAGES = {
    "/": ['href="/devices"', 'href="/deployments"', "Recent events", 'href="/devices/sup1"'],
    "/devices": ['href="/devices/sup1"', 'href="/devices/sup2"', 'href="/devices/sup3"',
                 'href="/deployments/fibo-chain"', "room=kitchen"],
    "/devices/sup1": ["<h1>sup1", 'href="/deployments/fibo-chain"', "room=kitchen",
                      "listed in devices.yaml", "Recent logs", "What runs here"],
    "/modules": ['href="/modules/banner"', 'href="/modules/double"', 'href="/modules/fibo"',
                 'href="/deployments/count"'],
    "/modules/banner": ["<h1>banner", 'href="/file/module/banner/description"',
                        'href="/deployments/banner"', 'href="/deployments/count"',
                        "greeting.txt", "fd_write", "sha256:"],
    "/deployments": ['href="/deployments/fibo-chain"', 'href="/deployments/banner"',
                     'href="/modules/fibo"', 'href="/devices/sup1"'],
    "/deployments/fibo-chain": ["<h1>fibo-chain", 'href="/modules/fibo"',
                                'href="/modules/double"', 'href="/devices/sup1"',
                                'href="/devices/sup2"', "on sup1 as named",
                                'action="/execute/fibo-chain"', 'name="param0"'],
    "/commits": ["accepted", "Test User"],
}  # fmt: skip


@pytest.mark.parametrize(("path", "expected"), PAGES.items(), ids=list(PAGES))
def test_every_page_answers_html_that_names_and_links_what_it_involves(
    site: Site, path: str, expected: list[str]
) -> None:
    answer = site.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert '<html lang="en">' in html
    assert 'name="viewport"' in html
    assert 'id="main"' in html
    assert 'aria-current="page"' in html
    for text in expected:
        assert text in html, f"{text!r} not on {path}"


def test_the_overview_and_the_history_show_the_full_commit(site: Site) -> None:
    sha = site.api("/api/v1/sync")["desired"]["sha"]
    assert f'href="/commits/{sha}"' in site.get("/").text
    assert f'id="c-{sha}"' in site.get("/commits").text


@pytest.mark.parametrize("path", ["/", "/commits"])
def test_text_from_the_repository_is_escaped(site: Site, path: str) -> None:
    html = site.get(path).text
    assert "&lt;script&gt;alert(" in html
    assert "<script>alert(" not in html


@pytest.mark.parametrize(
    "path", ["/devices/nope", "/modules/nope", "/deployments/nope", "/deployments/%3Cb%3Ex"]
)
def test_unknown_names_get_a_404_page_with_the_same_look(site: Site, path: str) -> None:
    answer = site.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in answer.text
    assert 'href="/devices"' in answer.text
    assert 'id="live"' in answer.text
    assert "<b>" not in answer.text


def test_lists_are_paged_like_the_api(site: Site) -> None:
    html = site.get("/devices?offset=1&limit=1").text
    assert 'href="/devices/sup2"' in html
    assert 'href="/devices/sup1"' not in html
    assert 'href="/devices/sup3"' not in html
    assert "2\N{EN DASH}2 of 3 devices" in html
    assert 'rel="prev" href="/devices?offset=0&amp;limit=1"' in html
    assert 'rel="next" href="/devices?offset=2&amp;limit=1"' in html
    assert 'href="/api/v1/devices?offset=1&amp;limit=1"' in html

    bad = site.get("/devices?limit=0")
    assert bad.status_code == 400
    assert "limit between 1 and" in bad.text
    assert site.get(f"/commits?offset={2**90}").status_code == 400  # past SQLite's integers


def test_a_page_is_rendered_once_per_store_version(site: Site) -> None:
    # The store changes as devices report in; one quiet moment among a few tries is enough.
    for _ in range(10):
        first = site.get("/deployments")
        again = site.client.get("/deployments", headers={"If-None-Match": first.headers["etag"]})
        if again.status_code == 304:
            break
    assert again.status_code == 304
    assert "no-cache" in first.headers["cache-control"]
    assert "script-src" not in first.headers["content-security-policy"]  # default-src 'self'


def test_the_try_it_form_asks_for_the_first_steps_inputs(site: Site) -> None:
    fibo = site.get("/deployments/fibo-chain").text
    assert 'name="param0"' in fibo
    assert 'type="file"' not in fibo
    # count reads an execution-stage file; banner's greeting.txt ships at deploy time.
    count = site.get("/deployments/count").text
    assert 'name="in.bin" type="file"' in count
    assert 'name="param0"' not in count
    banner = site.get("/deployments/banner").text
    assert 'name="param0"' in banner
    assert 'type="file"' not in banner


def test_the_static_files_are_served(site: Site) -> None:
    html = site.get("/").text
    for asset, media_type in (("style.css", "text/css"), ("live.js", "text/javascript")):
        url = re.search(rf'"(/static/{re.escape(asset)}\?v=\w+)"', html)
        assert url is not None, f"{asset} is not linked"
        answer = site.client.get(url.group(1))
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(media_type)


class Unused:
    """The collaborators the pages never call (webhook, registration, execute, logs)."""

    def trigger(self) -> None:
        raise AssertionError("not used by the pages")

    def submit(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None:
        raise AssertionError("not used by the pages")

    async def run(self, deployment: str, **options: Any) -> Any:
        raise AssertionError("not used by the pages")

    def accept(self, raw: str | None, *, peer: str | None) -> None:
        raise AssertionError("not used by the pages")

    @property
    def counts(self) -> dict[str, int]:
        return {}


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test process keeps its own signal handlers


@contextmanager
def serving(app: Starlette) -> Iterator[httpx.Client]:
    """`app` served by uvicorn on a free loopback port in a thread; a client for it."""
    server = _ThreadServer(
        uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=1)
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="pages")
    thread.start()
    try:
        eventually(lambda: server.started or not thread.is_alive(), "the server to start")
        assert thread.is_alive(), "the server did not start"
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_try_it_can_be_turned_off(sample_copy: Path) -> None:
    git_init_commit(sample_copy, "the sample")
    store = Store.open(None)
    try:
        record_head(store, sample_copy, now=1_000_000.0)
        services = Services(
            store=store, repo="sample", branch="main", fetch=Unused(), introducer=Unused(),
            runner=Unused(), logs=Unused(),
        )  # fmt: skip
        with serving(create_app(services)) as client:
            assert 'id="try-it-form"' in client.get("/deployments/fibo-chain").text
        with serving(create_app(services, WebSettings(try_it=False))) as client:
            html = client.get("/deployments/fibo-chain").text
            assert 'id="try-it-form"' not in html
            assert "turned off" in html
    finally:
        store.close()


def test_the_app_can_answer_unknown_paths_with_the_404_page() -> None:
    app = Starlette(exception_handlers={404: pages.not_found})
    with serving(app) as client:
        html = client.get("/no/such/page", headers={"Accept": "text/html"})
        assert html.status_code == 404
        assert "<h1>Not found</h1>" in html.text
        for path, accept in (("/no/such/page", "application/json"), ("/api/v1/nope", "text/html")):
            answer = client.get(path, headers={"Accept": accept})
            assert answer.status_code == 404
            assert answer.json()["error"]["status"] == 404


# With a browser.


def _mark(page: Page) -> None:
    """Mark the loaded document, so `_not_reloaded` can tell a live update from a reload."""
    page.evaluate("window.__sameDocument = true")


def _not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def test_the_pages_in_a_real_browser(tmp_path: Path) -> None:
    with running_site(tmp_path) as site, chromium() as browser:
        context = browser.new_context(viewport=DESKTOP, base_url=site.url)
        try:
            page = context.new_page()
            page.set_default_timeout(10_000)
            sha = site.api("/api/v1/sync")["desired"]["sha"]

            page.goto("/")
            expect(page.locator("#live")).to_have_text("live", timeout=LIVE)
            expect(page.locator("#desired")).to_contain_text(sha[:12])
            expect(page.locator("#device-counts")).to_contain_text("3 online")
            page.keyboard.press("Tab")
            expect(page.locator(".skip")).to_be_focused()

            # Follow the links: devices -> a device -> a deployment it runs -> a module of it.
            page.goto("/devices")
            expect(page.get_by_role("row", name=re.compile(r"^sup2 "))).to_contain_text("synced")
            screenshot(page, "devices")
            page.get_by_role("link", name="sup1", exact=True).click()
            expect(page).to_have_url(f"{site.url}/devices/sup1")
            expect(page.locator("h1")).to_contain_text("sup1")
            expect(page.locator("#content")).to_contain_text("listed in devices.yaml")
            screenshot(page, "device")
            page.locator("#content table").get_by_role("link", name="fibo-chain").click()
            expect(page).to_have_url(f"{site.url}/deployments/fibo-chain")
            chain = page.locator(".chain .step")
            expect(chain).to_have_count(2)
            expect(chain.nth(0)).to_contain_text("sup1")
            expect(chain.nth(1)).to_contain_text("sup2")

            # Try it: fibo-chain(13) = double(fibo(13)) = 466.
            page.get_by_label("param0").fill("13")
            page.get_by_role("button", name="Run fibo-chain").click()
            expect(page.locator("#try-it-result output")).to_have_text("466")
            screenshot(page, "deployment")
            page.locator(".chain").get_by_role("link", name="double", exact=True).click()
            expect(page).to_have_url(f"{site.url}/modules/double")
            expect(page.get_by_role("link", name="OpenAPI description")).to_have_attribute(
                "href", "/file/module/double/description"
            )
            page.goto("/modules/banner")
            expect(page.locator("#content")).to_contain_text("greeting.txt")
            screenshot(page, "module")

            # A file input: count answers the size of in.bin.
            page.goto("/deployments/count")
            page.get_by_label("in.bin").set_input_files(
                files=[{"name": "in.bin", "mimeType": "application/octet-stream",
                        "buffer": b"x" * 42}]
            )  # fmt: skip
            page.get_by_role("button", name="Run count").click()
            expect(page.locator("#try-it-result output")).to_have_text("42")

            page.goto("/modules")
            expect(page.get_by_role("row", name=re.compile(r"^banner "))).to_contain_text("count")
            screenshot(page, "modules")

            # Live: a new deployment appears on the open list without a reload.
            page.goto("/deployments")
            expect(page.locator("#live")).to_have_text("live", timeout=LIVE)
            _mark(page)
            write_files(site.repo, {"deployments/again.yaml": (
                "name: again\nsequence:\n  - {module: double, function: double, device: sup2}\n"
            )})  # fmt: skip
            git_init_commit(site.repo, "one more deployment")
            row = page.get_by_role("row", name=re.compile(r"^again "))
            expect(row).to_contain_text("synced", timeout=LIVE)
            _not_reloaded(page)
            screenshot(page, "deployments")

            # Live: a device restarts; its page shows the restart and the redeploys.
            page.goto("/devices/sup1")
            expect(page.locator("#live")).to_have_text("live", timeout=LIVE)
            _mark(page)
            site.fleet.run(site.fleet.fleet["sup1"].restart())
            # (the redeploys say "(restarted)" too: look for the event's own kind)
            restart = page.locator(".events li .badge").filter(has_text=re.compile("^restart$"))
            expect(restart.first).to_have_text("restart", timeout=LIVE)
            _not_reloaded(page)

            # A rejected commit is shown with its problems; the fleet keeps the last good one.
            write_files(site.repo, {"deployments/broken.yaml": "name: broken\nsequence: []\n"})
            git_init_commit(site.repo, "a deployment without steps")
            eventually(lambda: site.api("/api/v1/sync")["last_rejected"], "the rejection")
            page.goto("/")
            expect(page.locator("#rejected")).to_contain_text("deployments/broken.yaml")
            expect(page.locator("#rejected")).to_contain_text("a deployment without steps")
            screenshot(page, "overview")
            page.get_by_role("link", name="Commits").click()
            expect(page.locator(".commits li").first).to_contain_text("sequence")
            screenshot(page, "commits")

            page.goto("/devices/no-such-device")
            expect(page.locator("h1")).to_have_text("Not found")
            screenshot(page, "not-found")

            phone = browser.new_context(viewport=PHONE, base_url=site.url, is_mobile=True)
            try:
                small = phone.new_page()
                for path, name in (
                    ("/", "overview-phone"),
                    ("/deployments/fibo-chain", "deployment-phone"),
                ):
                    small.goto(path)
                    expect(small.locator("h1")).to_be_visible()
                    width = small.evaluate("document.documentElement.scrollWidth")
                    assert width <= PHONE["width"], f"{path} scrolls sideways on a phone"
                    screenshot(small, name)
            finally:
                phone.close()
        finally:
            context.close()


def test_the_device_page_shows_what_the_device_acknowledged_since_it_started(site: Site) -> None:
    detail = site.api("/api/v1/devices/sup1")
    entry = next(e for e in detail["ledger"] if e["deployment"] == "fibo-chain")
    assert entry["status"] == "synced"
    assert entry["applied_digest"] == entry["desired_digest"]
    assert entry["pending_since"] is None
    html = site.get("/devices/sup1").text
    assert "Acknowledged since it started" in html
    assert f"<dd>{detail['incarnation']}, started" in html
    assert f"<code>{entry['applied_digest'][:12]}</code>" in html
