"""Seen case 10 of issue 11: a rejected branch head, told truthfully, and forgotten once fixed.

A real `serve` follows a real git repository with three simulated devices. When the branch head
is rejected, the overview, every deployment page and `/api/v1/deployments/<name>` say the head
is not applied and which commit runs; once a newer commit is accepted the red "Rejected commit"
box goes away (the rejection stays in the commit history).
"""

from __future__ import annotations

from pathlib import Path

from browser import DESKTOP, PHONE, chromium, screenshot
from conftest import eventually, git_init_commit, write_files
from playwright.sync_api import expect
from test_pages import LIVE, Site, running_site

BROKEN = {"deployments/broken.yaml": "name: broken\nsequence: []\n"}


def _head(site: Site) -> str:
    sha: str = site.api("/api/v1/sync")["last_seen"]["sha"]
    return sha


def test_a_rejected_head_is_not_applied_until_a_newer_commit_is_accepted(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        good = site.api("/api/v1/sync")["desired"]["sha"]
        write_files(site.repo, BROKEN)
        bad = git_init_commit(site.repo, "a deployment without steps")
        eventually(lambda: _head(site) == bad, "the broken head to be seen")

        head = {"sha": bad, "status": "rejected", "applied": False, "runs": good}
        assert site.api("/api/v1/sync")["head"] == head
        assert site.api("/api/v1/overview")["sync"]["head"] == head
        deployment = site.api("/api/v1/deployments/fibo-chain")
        assert deployment["status"] == "synced"  # to the commit that runs, not to the head
        assert deployment["head"] == head
        assert site.api("/api/v1/deployments")["head"] == head

        overview = site.get("/").text
        assert 'id="rejected"' in overview
        assert "deployments/broken.yaml" in overview
        for path in ("/deployments/fibo-chain", "/deployments/banner", "/deployments", "/"):
            html = site.get(path).text
            assert 'id="head-not-applied"' in html, path
            notice = html.split('id="head-not-applied"', 1)[1].split("</div>", 1)[0]
            assert "not applied" in notice, path
            assert bad[:12] in notice, path
            assert f'href="/commits/{good}"' in notice, path  # which commit runs

        (site.repo / "deployments/broken.yaml").unlink()
        fixed = git_init_commit(site.repo, "drop the broken deployment")
        eventually(lambda: site.api("/api/v1/sync")["desired"]["sha"] == fixed, "the fix")

        sync = site.api("/api/v1/sync")
        assert sync["head"] == {"sha": fixed, "status": "accepted", "applied": True, "runs": fixed}
        assert sync["last_rejected"]["sha"] == bad  # history keeps it
        assert site.api("/api/v1/deployments/fibo-chain")["head"]["applied"] is True
        for path in ("/", "/deployments/fibo-chain", "/deployments"):
            html = site.get(path).text
            assert 'id="rejected"' not in html, path
            assert 'id="head-not-applied"' not in html, path
        history = site.get("/commits").text
        assert f'id="c-{bad}"' in history
        assert "deployments/broken.yaml" in history


def test_people_see_the_rejected_head_and_see_the_box_go_when_it_is_fixed(tmp_path: Path) -> None:
    with running_site(tmp_path) as site, chromium() as browser:
        good = site.api("/api/v1/sync")["desired"]["sha"]
        write_files(site.repo, BROKEN)
        bad = git_init_commit(site.repo, "a deployment without steps")
        eventually(lambda: _head(site) == bad, "the broken head to be seen")
        for viewport, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
            context = browser.new_context(viewport=viewport, base_url=site.url)
            try:
                page = context.new_page()
                page.goto("/deployments/fibo-chain")
                notice = page.locator("#head-not-applied")
                expect(notice).to_be_visible()
                expect(notice).to_contain_text("not applied")
                expect(notice.get_by_role("link", name=good[:12])).to_be_visible()
                screenshot(page, f"deployment-head-rejected{suffix}")
            finally:
                context.close()

        context = browser.new_context(viewport=DESKTOP, base_url=site.url)
        try:
            page = context.new_page()
            page.goto("/")
            expect(page.locator("#live")).to_have_text("live", timeout=LIVE)
            expect(page.locator("#rejected")).to_contain_text("deployments/broken.yaml")
            expect(page.locator("#rejected")).to_contain_text("not applied")
            screenshot(page, "overview-head-rejected")
            (site.repo / "deployments/broken.yaml").unlink()
            git_init_commit(site.repo, "drop the broken deployment")
            # The open overview drops the box by itself (a live update, not a reload).
            expect(page.locator("#rejected")).to_have_count(0, timeout=LIVE)
            expect(page.locator("#head-not-applied")).to_have_count(0)
            page.goto("/commits")
            expect(page.locator(f"#c-{bad}")).to_contain_text("rejected")
        finally:
            context.close()
