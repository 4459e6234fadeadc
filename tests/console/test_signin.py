"""Signing in to the console in a real browser, with and without JavaScript."""

from __future__ import annotations

import re

from tests.console.conftest import PageFactory, screenshot


def test_sign_in_with_an_admin_key(new_page: PageFactory, admin_key: str) -> None:
    page = new_page()
    response = page.goto("/ui/")
    assert response is not None and page.url.endswith("/ui/signin?next=%2Fui%2F")
    screenshot(page, "signin")
    page.get_by_label("API key").fill(admin_key[:-2] + "xx")  # a wrong key
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "That key was not accepted. Check it and try again."
    page.get_by_label("API key").fill(admin_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/$"))
    assert "Signed in as console-admin (admin)" in page.locator("header").inner_text()
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="API keys").count() == 1  # an admin sees the admin pages
    cookie = next(c for c in page.context.cookies() if c["name"] == "kennel_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/ui/signin$"))
    page.goto("/ui/chat")
    assert "/ui/signin" in page.url  # signed out: the pages ask for a key again


def test_sign_in_without_javascript(new_page: PageFactory, user_key: str) -> None:
    page = new_page(js=False)
    page.goto("/ui/signin")
    page.get_by_label("API key").fill(user_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/$"))
    assert "Signed in as console-user (user)" in page.locator("header").inner_text()
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="API keys").count() == 0  # a user does not see the admin pages
