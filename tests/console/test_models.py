"""The Models pages over HTTP: the store listing, one model's versions, diff and history, and
promote / rollback: admins only, with a CSRF token and a reason, writing the CLI's audit entry."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kennel.settings import KennelHome
from kennel.store.registry import Store
from tests.conftest import ModelFactory
from tests.console.apptest import console_client, csrf_of, sign_in
from tests.console.conftest import kennel_cli, screenshot
from tests.console.pagekit import MODEL, add_untagged_version, make_keys, two_versions, visible_text

if TYPE_CHECKING:
    from playwright.sync_api import Page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser tests skip themselves (tests/console/conftest.py)
    expect = None  # type: ignore[assignment]


@pytest.fixture
def store_home(kennel_home: Path, make_model: ModelFactory) -> KennelHome:
    home = KennelHome(kennel_home)
    gguf, _ = make_model()
    two_versions(home, gguf)
    return home


def _history(home: KennelHome) -> list[tuple[str, str, str | None, int | None, int | None, str]]:
    with Store.open(home) as store:
        return [
            (e.actor, e.action, e.tag, e.version_before, e.version_after, e.message)
            for e in store.history(MODEL)
        ]


def test_models_lists_the_store_like_kennel_ls(store_home: KennelHome, kennel_home: Path) -> None:
    with console_client(kennel_home) as client:  # no keys, loopback: the console is open
        r = client.get("/ui/models")
    assert r.status_code == 200
    text = visible_text(r.text)
    assert MODEL in text
    assert "latest → @2" in text and "f16 → @1" in text  # the import's quant tag stays on @1
    assert "F16" in text  # the quantization, from the GGUF header
    assert "gguf" in text
    assert "by tester" in text  # the last change and who made it
    assert f'href="/ui/models/{MODEL}"' in r.text


def test_an_empty_store_says_how_to_fill_it(kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        r = client.get("/ui/models", headers={"accept-language": "vi"})
    assert r.status_code == 200
    assert "kennel pull" in r.text
    assert 'lang="vi"' in r.text


def test_model_page_shows_versions_history_and_a_chosen_diff(
    store_home: KennelHome, kennel_home: Path
) -> None:
    with console_client(kennel_home) as client:
        page = client.get(f"/ui/models/{MODEL}")
        diff = client.get(f"/ui/models/{MODEL}", params={"a": "1", "b": "2"})
        same = client.get(f"/ui/models/{MODEL}", params={"a": "2", "b": "2"})
        missing = client.get("/ui/models/nope")
        bad_version = client.get(f"/ui/models/{MODEL}", params={"a": "1", "b": "9"})
    assert page.status_code == 200
    text = visible_text(page.text)
    assert "@1" in text and "@2" in text
    assert "first import" in text and "a system prompt" in text  # history: why
    assert 'id="diff"' not in page.text  # no diff until two versions are chosen
    assert 'id="promote-form"' in page.text  # the open console's local user is an admin
    assert diff.status_code == 200
    assert '<span class="diff-add">+system: Answer briefly.</span>' in diff.text
    with Store.open(store_home) as store:  # the same text `kennel diff` prints
        assert "+system: Answer briefly." in store.diff(MODEL, 1, 2)
    assert same.status_code == 200 and "have the same profile" in same.text
    assert missing.status_code == 404 and "No model 'nope'" in visible_text(missing.text)
    assert bad_version.status_code == 404 and "has no version 9" in bad_version.text


def test_admin_promotes_and_rolls_back_with_the_cli_audit_entry(
    store_home: KennelHome, kennel_home: Path
) -> None:
    admin, _ = make_keys(store_home)
    with console_client(kennel_home) as client:
        sign_in(client, admin)
        token = csrf_of(client.get(f"/ui/models/{MODEL}").text)
        r = client.post(
            f"/ui/models/{MODEL}/promote",
            data={"csrf_token": token, "version": "2", "tag": "prod", "reason": "passed the checkups"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert r.headers["location"].startswith(f"/ui/models/{MODEL}?done=promoted")
        after = client.get(r.headers["location"])
        assert "prod now points at version 2." in after.text
        r = client.post(
            f"/ui/models/{MODEL}/rollback",
            data={"csrf_token": token, "tag": "prod", "to": "1", "reason": "answers got worse"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        back = client.get(r.headers["location"])
        assert "prod rolled back to version 1." in back.text
        assert "answers got worse" in visible_text(back.text)  # in the history table
    history = _history(store_home)
    assert history[-2:] == [
        ("console:boss", "tag", "prod", None, 2, "passed the checkups"),
        ("console:boss", "rollback", "prod", 2, 1, "answers got worse"),
    ]
    with Store.open(store_home) as store:
        assert store.tags(MODEL)["prod"] == 1


def test_rollback_without_a_version_goes_to_the_one_before(store_home: KennelHome, kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        token = csrf_of(client.get(f"/ui/models/{MODEL}").text)
        r = client.post(
            f"/ui/models/{MODEL}/rollback",
            data={"csrf_token": token, "tag": "latest", "to": "", "reason": "bad"},
            follow_redirects=False,
        )
    assert r.status_code == 303
    assert _history(store_home)[-1] == ("console:local", "rollback", "latest", 2, 1, "bad")


def test_a_reason_is_required(store_home: KennelHome, kennel_home: Path) -> None:
    before = _history(store_home)
    with console_client(kennel_home) as client:
        token = csrf_of(client.get(f"/ui/models/{MODEL}").text)
        r = client.post(
            f"/ui/models/{MODEL}/promote",
            data={"csrf_token": token, "version": "1", "tag": "prod", "reason": "   "},
        )
        vi = client.post(
            f"/ui/models/{MODEL}/rollback",
            data={"csrf_token": token, "tag": "latest", "reason": ""},
            headers={"accept-language": "vi"},
        )
    assert r.status_code == 400
    assert "Give a reason" in r.text
    assert 'id="promote-form"' in r.text and 'aria-invalid="true"' in r.text  # the form, to fix and resend
    assert vi.status_code == 400 and "Give a reason" not in vi.text  # said in Vietnamese
    assert _history(store_home) == before


def test_a_store_refusal_is_shown_on_the_page(store_home: KennelHome, kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        token = csrf_of(client.get(f"/ui/models/{MODEL}").text)
        r = client.post(
            f"/ui/models/{MODEL}/rollback",
            data={"csrf_token": token, "tag": "f16", "reason": "try"},  # f16 is on @1, the oldest
        )
        bad_tag = client.post(
            f"/ui/models/{MODEL}/promote",
            data={"csrf_token": token, "version": "1", "tag": "../x", "reason": "try"},
        )
    assert r.status_code == 400 and "nothing to roll back to" in r.text
    assert bad_tag.status_code == 400 and "not a valid tag" in bad_tag.text


def test_users_read_but_cannot_change(store_home: KennelHome, kennel_home: Path) -> None:
    _, user = make_keys(store_home)
    before = _history(store_home)
    with console_client(kennel_home) as client:
        sign_in(client, user)
        listing = client.get("/ui/models")
        page = client.get(f"/ui/models/{MODEL}")
        token = csrf_of(page.text)  # the sign-out form's: a valid token, still refused
        r = client.post(
            f"/ui/models/{MODEL}/promote",
            data={"csrf_token": token, "version": "1", "tag": "prod", "reason": "sneaky"},
        )
        rb = client.post(
            f"/ui/models/{MODEL}/rollback", data={"csrf_token": token, "tag": "latest", "reason": "x"}
        )
    assert listing.status_code == 200 and page.status_code == 200
    assert "@2" in page.text
    assert 'id="promote-form"' not in page.text and 'id="rollback-form"' not in page.text
    assert r.status_code == 403 and rb.status_code == 403
    assert _history(store_home) == before


def test_a_post_without_the_csrf_token_is_refused(store_home: KennelHome, kennel_home: Path) -> None:
    admin, _ = make_keys(store_home)
    before = _history(store_home)
    with console_client(kennel_home) as client:
        sign_in(client, admin)
        r = client.post(
            f"/ui/models/{MODEL}/promote", data={"version": "1", "tag": "prod", "reason": "forged"}
        )
        wrong = client.post(
            f"/ui/models/{MODEL}/promote",
            data={"csrf_token": "not-the-token", "version": "1", "tag": "prod", "reason": "forged"},
        )
    assert r.status_code == 403 and wrong.status_code == 403
    assert _history(store_home) == before


def test_signed_out_visitors_are_sent_to_sign_in(store_home: KennelHome, kennel_home: Path) -> None:
    make_keys(store_home)
    with console_client(kennel_home) as client:
        r = client.get(f"/ui/models/{MODEL}", follow_redirects=False)
        post = client.post(f"/ui/models/{MODEL}/promote", data={"version": "1"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin?next=")
    assert post.status_code in (303, 403)
    assert _history(store_home)[-1][0] == "tester"


# ---- in the browser, against `kennel serve` (tests/console/conftest.py) -------------------------
@pytest.fixture(scope="module")
def newest_version(console_url: str, console_home: Path) -> int:
    return add_untagged_version(KennelHome(console_home))


def test_browser_promote_writes_the_entry_kennel_history_shows(
    admin_page: Page, console_home: Path, newest_version: int
) -> None:
    reason = f"promoted from the browser {uuid.uuid4().hex[:8]}"
    page = admin_page
    page.goto("/ui/models")
    screenshot(page, "models")
    page.get_by_role("link", name=MODEL, exact=True).click()
    page.wait_for_url(f"**/ui/models/{MODEL}")
    form = page.locator("#promote-form")
    form.get_by_label("Version", exact=True).select_option(str(newest_version))
    form.get_by_label("Tag", exact=True).fill("prod")
    form.get_by_label("Reason (kept in the history)").fill(reason)
    form.get_by_role("button", name="Promote").click()
    page.wait_for_url(re.compile(r"done=promoted"))
    expect(page.get_by_role("status")).to_contain_text(f"prod now points at version {newest_version}.")
    expect(page.locator("#history")).to_contain_text(reason)
    page.locator("#diff-a").select_option("1")
    page.locator("#diff-b").select_option(str(newest_version))
    page.get_by_role("button", name="Show the differences").click()
    expect(page.locator("#diff")).to_contain_text("+system: Answer briefly.")
    screenshot(page, "model")
    shown = kennel_cli(console_home, "history", MODEL, "--json")
    assert shown.returncode == 0, shown.stderr
    events = json.loads(shown.stdout)["events"]
    entry = next(e for e in events if e["message"] == reason)
    assert (entry["actor"], entry["action"], entry["tag"], entry["version_after"]) == (
        "console:console-admin",
        "tag",
        "prod",
        newest_version,
    )


def test_browser_user_sees_no_change_forms(user_page: Page, newest_version: int) -> None:
    user_page.goto(f"/ui/models/{MODEL}")
    expect(user_page.locator("#versions")).to_contain_text(f"@{newest_version}")
    expect(user_page.locator("#promote-form")).to_have_count(0)
    expect(user_page.locator("#rollback-form")).to_have_count(0)


def test_browser_rollback_moves_the_tag_back(
    admin_page: Page, console_home: Path, newest_version: int
) -> None:
    page = admin_page
    page.goto(f"/ui/models/{MODEL}")
    promote = page.locator("#promote-form")
    promote.get_by_label("Version", exact=True).select_option(str(newest_version))
    promote.get_by_label("Tag", exact=True).fill("staging")
    promote.get_by_label("Reason (kept in the history)").fill("try the new prompt")
    promote.get_by_role("button", name="Promote").click()
    page.wait_for_url(re.compile(r"done=promoted"))
    rollback = page.locator("#rollback-form")
    rollback.get_by_label("Tag", exact=True).select_option("staging")
    rollback.get_by_label("Back to").select_option("1")
    rollback.get_by_label("Reason (kept in the history)").fill("the new prompt rambles")
    rollback.get_by_role("button", name="Roll back").click()
    page.wait_for_url(re.compile(r"done=rolledback"))
    expect(page.get_by_role("status")).to_contain_text("staging rolled back to version 1.")
    with Store.open(KennelHome(console_home)) as store:
        assert store.tags(MODEL)["staging"] == 1
        last = store.history(MODEL)[-1]
    assert (last.actor, last.action, last.version_before, last.message) == (
        "console:console-admin",
        "rollback",
        newest_version,
        "the new prompt rambles",
    )
