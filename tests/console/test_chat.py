"""The chat playground in a real browser: the answer streams in (seen growing), then tokens/s
and TTFT under it; without JavaScript the form post renders the whole answer."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.console.conftest import MODEL, PageFactory, screenshot

# records the answer's length each time the page changes it, from before the request is sent
WATCH = """() => {
  window.__lengths = [];
  const conversation = document.getElementById("conversation");
  new MutationObserver(() => {
    const answers = conversation.querySelectorAll(".turn-assistant .answer");
    if (answers.length) window.__lengths.push(answers[answers.length - 1].textContent.length);
  }).observe(conversation, {subtree: true, childList: true, characterData: true});
}"""


def test_chat_streams_the_answer(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/chat")
    assert page.get_by_label("Model or profile").input_value() == MODEL
    page.locator("summary").click()
    page.get_by_label("System prompt").fill("You are terse.")
    page.get_by_label("Temperature").fill("0.7")
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Seed").fill("7")
    page.get_by_label("Message").fill("Tell me a story about a dog.")
    page.evaluate(WATCH)
    # a slow link (Chromium's own throttling): the tiny model writes faster than a person reads,
    # and the whole answer could otherwise arrive in one read
    cdp = page.context.new_cdp_session(page)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": 4000, "uploadThroughput": 1_000_000},
    )
    page.get_by_role("button", name="Send").click()
    stats = page.locator(".turn-assistant .stats")
    stats.wait_for(timeout=60_000)
    assert "tokens/s" in stats.inner_text() and "first token after" in stats.inner_text()
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    lengths = [n for n in page.evaluate("window.__lengths") if n > 0]
    growth = sorted(set(lengths))
    assert len(growth) >= 2, f"the answer never grew while streaming: {lengths}"
    assert lengths == sorted(lengths)  # it only grew
    answer = page.locator(".turn-assistant .answer").inner_text()
    assert len(answer) == growth[-1]
    assert page.locator(".turn-user .answer").inner_text() == "Tell me a story about a dog."
    # the conversation goes on: the history travels with the next message
    assert MODEL and "Tell me a story" in page.locator("input[name=history]").input_value()
    screenshot(page, "chat")


def test_chat_without_javascript(new_page: PageFactory, user_key: str) -> None:
    page = new_page(user_key, js=False)
    page.goto("/ui/chat")
    page.get_by_label("Message").fill("hello")
    page.locator("summary").click()  # <details> opens without JavaScript
    page.get_by_label("Max tokens").fill("8")
    page.get_by_role("button", name="Send").click()
    page.wait_for_load_state()
    assert page.locator(".turn-user .answer").inner_text() == "hello"
    assert page.locator(".turn-assistant").count() == 1
    assert "tokens/s" in page.locator(".turn-assistant .stats").inner_text()
