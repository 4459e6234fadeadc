"""The keys page in a real browser: an admin creates a key (its secret shown once) and revokes
it; a user key can neither see the page nor post to it, even with a valid CSRF token of its own."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page

from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.console.conftest import screenshot


def _models(console_url: str, secret: str) -> int:
    return httpx.get(console_url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code


def test_create_a_key_shown_once_then_revoke_it(
    admin_page: Page, console_url: str, console_home: Path
) -> None:
    page = admin_page
    page.goto("/ui/keys")
    page.get_by_label("Name").fill("from-console")
    page.get_by_label("Role").select_option("user")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("[data-secret]").inner_text().strip()
    assert re.fullmatch(r"kn-[A-Za-z0-9_-]{43}", secret)
    assert "shown only once" in page.get_by_role("status").first.inner_text()
    row = page.locator("tr[data-key='from-console']")
    assert row.get_attribute("data-state") == "active" and "user" in row.inner_text()
    assert "console:console-admin" in row.inner_text()  # who made it, for an audit
    screenshot(page, "keys")
    assert _models(console_url, secret) == 200  # the key works on the API at once
    page.goto("/ui/keys")
    assert secret not in page.content()  # shown once: never again
    with KeyStore.open(KennelHome(console_home)) as keys:
        made = keys.get("from-console")
    assert (made.role, made.created_by) == ("user", "console:console-admin")

    page.get_by_role("button", name="Revoke the key from-console").click()
    assert "Revoked the key from-console" in page.get_by_role("status").first.inner_text()
    assert page.locator("tr[data-key='from-console']").count() == 0  # revoked keys are hidden
    page.get_by_role("link", name="Show revoked keys").click()
    assert page.locator("tr[data-key='from-console']").get_attribute("data-state") == "revoked"
    assert _models(console_url, secret) == 401


def test_a_user_key_cannot_see_or_post_to_the_keys_page(
    user_page: Page, console_url: str, console_home: Path
) -> None:
    page = user_page
    response = page.goto("/ui/keys")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", name="Not allowed").count() == 1
    page.goto("/ui/chat")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    # a valid CSRF token of its own session, from the console's own origin: still not an admin
    for path in ("/ui/keys", "/ui/keys/console-admin/revoke"):
        r = page.request.post(
            console_url + path,
            form={"csrf_token": token, "name": "sneaky", "role": "admin"},
            headers={"Origin": console_url},
        )
        assert r.status == 403, path
    with KeyStore.open(KennelHome(console_home)) as keys:
        names = {k.name: k.state() for k in keys.list(include_revoked=True)}
    assert "sneaky" not in names and names["console-admin"] == "active"
