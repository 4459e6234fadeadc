"""The overview in a real browser: the model warm after a request, the live part refreshed by
console.js, and the whole page readable with JavaScript off."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page

from tests.console.conftest import MODEL, PageFactory, screenshot


def _one_request(console_url: str, key: str) -> None:
    r = httpx.post(
        console_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text


def test_the_model_is_warm_after_a_request(admin_page: Page, console_url: str, admin_key: str) -> None:
    _one_request(console_url, admin_key)
    admin_page.goto("/ui/")
    row = admin_page.locator(f"tr[data-model='{MODEL}']")
    assert row.locator("[data-state]").get_attribute("data-state") == "warm"
    assert "Warm" in row.inner_text() and " min " in row.inner_text()  # and when it unloads
    assert admin_page.locator("#tps-h ~ svg[role=img]").count() == 1
    assert (
        admin_page.locator("#ttft-h ~ svg[role=img] > title").text_content()
        == "Time to first token, last hour"
    )
    screenshot(admin_page, "overview")
    # console.js swaps the live part in again every few seconds (the fragment's own URL)
    admin_page.wait_for_selector("#live[data-refreshed]", state="attached", timeout=15_000)
    assert admin_page.locator(f"#live tr[data-model='{MODEL}'] [data-state='warm']").count() == 1


def test_the_overview_reads_without_javascript(
    new_page: PageFactory, console_url: str, user_key: str
) -> None:
    _one_request(console_url, user_key)
    page = new_page(user_key, js=False)
    page.goto("/ui/")
    assert page.get_by_role("heading", name="Overview", level=1).count() == 1
    assert page.locator(f"tr[data-model='{MODEL}'] [data-state]").get_attribute("data-state") == "warm"
    assert page.locator("svg[role=img]").count() >= 2  # the charts are server-drawn
    assert page.get_by_role("heading", name="Recent errors").count() == 1
    assert "held of a" in page.locator("#memory-h + p").inner_text()


def test_the_overview_fits_a_phone(new_page: PageFactory, user_key: str) -> None:
    page = new_page(user_key)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/ui/")
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= 390, f"the page is {scroll}px wide on a 390px screen"
    screenshot(page, "overview-phone")
