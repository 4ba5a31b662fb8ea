"""Pages at scale and on phones: the devices list filtered and searched on the server, paged;
nothing wider than a 390 px phone (the devices table, a device page, the try-it result).

The many-device tests serve the real app from a real SQLite store filled as the orchestrator
fills it (devices, health checks, logs, events written through the store's own writers), so a
fleet of hundreds costs no processes; the try-it result is shown by a real `serve` running a
deployment on simulated devices. Browsers are Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import PHONE, chromium, screenshot
from conftest import git_init_commit
from playwright.sync_api import Page, expect
from test_pages import Unused, running_site, serving
from test_store import record_head

from gitops_orchestrator.fleetdb import DeviceRecord, Event, HealthCheck, LogEntry
from gitops_orchestrator.store import Store
from gitops_orchestrator.web.app import Services, create_app

NOW = 1_800_000_000.0
STATES = ("online", "offline", "gone")
# A name as long as an mDNS instance label allows (63 bytes), and values as long as people
# write them: what a narrow screen must wrap rather than scroll.
LONG = "greenhouse-north-east-corner-humidity-and-temperature-sensor-42"
LONG_LABEL = "the-second-floor-of-the-east-wing-behind-the-large-water-tanks"


def _device(name: str, state: str, number: int) -> DeviceRecord:
    return DeviceRecord(
        device=name, url=f"http://10.20.{number // 250}.{number % 250 + 1}:5000",
        addresses=(f"10.20.{number // 250}.{number % 250 + 1}",), port=5000,
        interfaces=("fd_write", "fd_read", "path_open", "wasi_snapshot_preview1_clock_time_get"),
        platform={"cpu": {"humanReadableName": "ARMv8 Processor rev 4 (v8l) " * 3,
                          "clockSpeed": {"Hz": 1_500_000_000}},
                  "memory": {"bytes": 4_000_000_000}, "network": {"wlan0-with-a-long-name": 1}},
        origin="registered", state=state, introduced_at=NOW, online_since=NOW, last_seen=NOW,
    )  # fmt: skip


def _names() -> list[str]:
    """240 ordinary names, two that tell `_` from any character, and one very long name."""
    return [f"dev{n:03d}" for n in range(240)] + ["sensor_7", "sensorx7", LONG]


@pytest.fixture
def fleet_site(tmp_path: Path) -> Iterator[httpx.Client]:
    """The app on a store with 243 devices in every state; yields a client of it."""
    folder = tmp_path
    repo = folder / "repo"
    repo.mkdir()
    (repo / "devices.yaml").write_text(
        f"devices:\n  {LONG}:\n    labels: {{place: {LONG_LABEL}, room: kitchen}}\n"
    )
    git_init_commit(repo, "an empty fleet")
    store = Store.open(folder / "data")
    try:
        record_head(store, repo, now=NOW)
        for number, name in enumerate(_names()):
            store.upsert_device(_device(name, STATES[number % 3], number))
        message = "could not reach " + "http://10.20.0.243:5000/health?" + "x" * 120
        store.record_health(
            [HealthCheck(LONG, NOW, False, error=message), HealthCheck(LONG, NOW, True,
             report={"cpuUsage": 0.25, "a-very-long-health-report-key-for-the-wifi-signal": 1})],
            [], keep=20,
        )  # fmt: skip
        store.add_logs([LogEntry(LONG, NOW, "WARNING", "x" * 300, {"logData": "y" * 300})], keep=50)
        store.add_events([Event("online", "back online: " + "z" * 200, device=LONG)], now=NOW)
        services = Services(
            store=store, repo=str(repo), branch="main", fetch=Unused(), introducer=Unused(),
            runner=Unused(), logs=Unused(),
        )  # fmt: skip
        with serving(create_app(services)) as client:
            yield client
    finally:
        store.close()


def _states(number: int) -> str:
    return STATES[number % 3]


def test_the_devices_api_filters_by_state_and_searches_by_name(fleet_site: httpx.Client) -> None:
    names = _names()
    offline = sorted(n for i, n in enumerate(names) if _states(i) == "offline")
    page = fleet_site.get("/api/v1/devices", params={"state": "offline", "limit": 500}).json()
    assert page["total"] == len(offline)
    assert [item["name"] for item in page["items"]] == offline
    assert (page["state"], page["search"]) == (["offline"], "")

    # Paged through the filter: the total counts what matches, not the whole fleet.
    second = fleet_site.get(
        "/api/v1/devices", params={"state": "offline", "offset": 10, "limit": 5}
    ).json()
    assert second["total"] == len(offline)
    assert [item["name"] for item in second["items"]] == offline[10:15]

    # Several states; a search is a case-insensitive part of the name, `_` only matches `_`.
    both = fleet_site.get("/api/v1/devices?state=online&state=gone&search=DEV1&limit=500").json()
    expected = sorted(n for i, n in enumerate(names) if _states(i) != "offline" and "dev1" in n)
    assert [item["name"] for item in both["items"]] == expected
    underscore = fleet_site.get("/api/v1/devices", params={"search": "sensor_"}).json()
    assert [item["name"] for item in underscore["items"]] == ["sensor_7"]
    percent = fleet_site.get("/api/v1/devices", params={"search": "%"}).json()
    assert percent["total"] == 0
    everything = fleet_site.get("/api/v1/devices", params={"state": "", "search": ""}).json()
    assert everything["total"] == len(names)

    for bad in ({"state": "sleeping"}, {"search": "x" * 201}):
        answer = fleet_site.get("/api/v1/devices", params=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["status"] == 400


def test_the_devices_page_filters_on_the_server_and_keeps_the_filter_when_paging(
    fleet_site: httpx.Client,
) -> None:
    html = fleet_site.get(
        "/devices", params={"state": "gone", "search": "dev", "limit": 10},
        headers={"Accept": "text/html"},
    ).text  # fmt: skip
    gone = sorted(n for i, n in enumerate(_names()) if _states(i) == "gone" and "dev" in n)
    shown = re.findall(r'<th scope="row"><a href="/devices/([^"]+)"', html)
    assert shown == gone[:10]
    assert f"1\N{EN DASH}10 of {len(gone)} devices" in html
    assert 'rel="next" href="/devices?state=gone&amp;search=dev&amp;offset=10&amp;limit=10"' in html
    assert 'href="/api/v1/devices?state=gone&amp;search=dev&amp;offset=0&amp;limit=10"' in html
    assert '<option value="gone" selected>' in html
    assert re.search(r'<input id="filter-search" name="search"[^>]* value="dev"', html)

    none = fleet_site.get("/devices?search=nothing-like-this", headers={"Accept": "text/html"})
    assert "No devices match" in none.text
    bad = fleet_site.get("/devices?state=sleeping", headers={"Accept": "text/html"})
    assert bad.status_code == 400
    assert "state is one of online, offline, gone" in bad.text


def overflowing(page: Page) -> list[str]:
    """What sticks out to the right of a phone's screen, or scrolls sideways inside a box."""
    found: list[str] = page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          const out = [];
          if (document.documentElement.scrollWidth > width) out.push("the page scrolls sideways");
          for (const el of document.querySelectorAll("main *")) {
            const box = el.getBoundingClientRect();
            const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
              + (el.className && typeof el.className === "string" ? "." + el.className : "");
            if (box.width > 0 && box.right > width + 1) out.push(name + " ends at " + box.right);
            if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== "visible")
              out.push(name + " scrolls sideways: " + el.scrollWidth + " > " + el.clientWidth);
          }
          return out;
        }"""
    )
    return found


def test_the_devices_list_and_a_device_page_fit_a_phone(fleet_site: httpx.Client) -> None:
    url = str(fleet_site.base_url).rstrip("/")
    with chromium() as browser:
        phone = browser.new_context(viewport=PHONE, base_url=url, is_mobile=True)
        try:
            page = phone.new_page()
            page.set_default_timeout(10_000)
            page.goto("/devices?limit=20")
            # Filter with the form: the server answers the filtered page.
            page.get_by_label("State").select_option("offline")
            page.get_by_label("Name contains").fill("DEV")
            page.get_by_role("button", name="Filter").click()
            expect(page).to_have_url(re.compile(r"state=offline&search=DEV"))
            rows = page.locator("#content tbody tr")
            expect(rows).to_have_count(20)
            expect(rows.first).to_contain_text("dev001")
            expect(rows.first).to_contain_text("offline")
            expect(page.locator(".pager")).to_contain_text(" of 80 devices")
            page.get_by_role("link", name=re.compile("^Next")).click()
            expect(rows.first).to_contain_text("dev061")
            assert overflowing(page) == []

            page.goto("/devices?search=greenhouse")
            expect(rows).to_have_count(1)
            assert overflowing(page) == []
            screenshot(page, "devices-phone")
            page.get_by_role("link", name=LONG).click()
            expect(page.locator("h1")).to_contain_text(LONG)
            expect(page.locator("#content")).to_contain_text(LONG_LABEL)
            assert overflowing(page) == []
            screenshot(page, "device-phone")
        finally:
            phone.close()


def test_the_try_it_result_and_the_commit_pages_fit_a_phone(tmp_path: Path) -> None:
    with running_site(tmp_path) as site, chromium() as browser:
        phone = browser.new_context(viewport=PHONE, base_url=site.url, is_mobile=True)
        try:
            page = phone.new_page()
            page.set_default_timeout(10_000)
            # banner.render answers the URL of its output file: a long link to wrap.
            page.goto("/deployments/banner")
            page.get_by_label("param0").fill("3")
            page.get_by_role("button", name="Run banner").click()
            expect(page.locator("#try-it-result output a")).to_contain_text("http://")
            assert overflowing(page) == []
            screenshot(page, "try-it-phone")
            page.get_by_label("param0").fill("9" * 30)  # no i32: a long error message
            page.get_by_role("button", name="Run banner").click()
            expect(page.locator("#try-it-result")).to_contain_text("Failed")
            assert overflowing(page) == []

            # The overview links the desired commit to its page, which fits too.
            page.goto("/")
            page.locator("#desired a.sha").click()
            expect(page).to_have_url(re.compile(r"/commits/[0-9a-f]{40}$"))
            expect(page.locator("h1")).to_contain_text("Commit")
            expect(page.locator("#content")).to_contain_text("commit_accepted")
            assert overflowing(page) == []
            screenshot(page, "commit-phone")
        finally:
            phone.close()
