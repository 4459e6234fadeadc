"""Every page in a real browser, as someone using a keyboard or a screen reader meets it: each form
control has a label (an accessible name), the skip link is the first Tab stop and lands on the
content, every nav link is reachable with Tab, and a chat can be sent without the mouse."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from tests.console.conftest import MODEL

PAGES = ("/ui/", "/ui/chat", "/ui/models", f"/ui/models/{MODEL}", "/ui/fit", "/ui/checkups", "/ui/keys")

# A control's accessible name as a screen reader would read it: its <label>, aria-label or
# aria-labelledby; for buttons their text. Hidden inputs are not controls.
_UNNAMED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
  .filter(el => {
    const labelled = (el.labels && [...el.labels].some(l => l.textContent.trim()))
      || (el.getAttribute('aria-label') || '').trim()
      || (el.getAttribute('aria-labelledby') || '').split(' ').some(
           id => id && document.getElementById(id) && document.getElementById(id).textContent.trim())
      || (el.tagName === 'BUTTON' && el.textContent.trim())
      || (el.type === 'submit' && (el.value || '').trim());
    return !labelled;
  })
  .map(el => el.outerHTML.slice(0, 120))"""


@pytest.mark.parametrize("path", PAGES)
def test_every_control_has_a_label(admin_page: Page, path: str) -> None:
    admin_page.goto(path)
    assert admin_page.evaluate(_UNNAMED) == []


def test_the_keyboard_reaches_the_content_and_every_nav_link(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/models")
    page.keyboard.press("Tab")
    first = page.evaluate(
        "() => [document.activeElement.className, document.activeElement.getAttribute('href')]"
    )
    assert first == ["skip", "#main"]
    page.keyboard.press("Enter")
    assert page.evaluate("() => location.hash") == "#main"

    page.goto("/ui/models")
    nav = page.evaluate("() => [...document.querySelectorAll('nav a')].map(a => a.getAttribute('href'))")
    reached: list[str] = []
    for _ in range(40):  # bounded: the header has fewer stops than this
        page.keyboard.press("Tab")
        href = page.evaluate("() => document.activeElement.getAttribute('href')")
        if href in nav and href not in reached:
            reached.append(href)
        if len(reached) == len(nav):
            break
    assert sorted(reached) == sorted(nav)
    # the focused element is visibly marked (an outline or a box shadow, not the browser's none)
    style = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth, s.boxShadow]; }"
    )
    assert (style[0] != "none" and style[1] != "0px") or style[2] != "none", style


def test_a_chat_sent_with_the_keyboard_alone(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/chat")
    message = page.get_by_label("Message")
    message.focus()
    page.keyboard.type("Hello")
    page.keyboard.press("Tab")  # to the Send button
    assert page.evaluate("() => document.activeElement.textContent.trim()") == "Send"
    page.keyboard.press("Enter")
    page.wait_for_selector("text=/tokens\\/s/", timeout=60_000)


def test_the_label_check_finds_an_unlabelled_control(admin_page: Page) -> None:
    admin_page.goto("/ui/fit")
    admin_page.evaluate("() => document.querySelector('main').append(document.createElement('input'))")
    assert len(admin_page.evaluate(_UNNAMED)) == 1
