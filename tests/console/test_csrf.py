"""A forged cross-site form post is refused: a page served by another loopback server (another
origin, and the same site, so the browser does send the SameSite=Strict cookie) auto-submits a
form to the console while an admin is signed in. The request is refused before any route runs
(the Origin is not the console's) and nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.console.conftest import PageFactory
from tests.loopback import Quiet, serving


def _evil_page(target: str) -> bytes:
    return f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}/ui/keys">
  <input name="name" value="forged"><input name="role" value="admin">
  <input name="csrf_token" value="guessed">
</form>
<script>document.getElementById("f").submit();</script>
</body></html>""".encode()


@pytest.fixture
def evil_site(console_url: str) -> Iterator[str]:
    body = _evil_page(console_url)

    class Handler(Quiet):
        def do_GET(self) -> None:
            self.reply(200, body, "text/html")

    with serving(Handler) as url:
        yield url


def test_a_forged_cross_site_form_post_is_refused(
    new_page: PageFactory, admin_key: str, evil_site: str, console_url: str, console_home: Path
) -> None:
    page = new_page(admin_key, allow=(evil_site,))
    posted: list[tuple[str, int | None]] = []
    page.on("response", lambda r: posted.append((r.url, r.status)) if r.request.method == "POST" else None)
    with page.expect_navigation(url=console_url + "/ui/keys"):
        page.goto(evil_site + "/")
    assert posted == [(console_url + "/ui/keys", 403)]
    assert "origin_not_allowed" in page.content() and "its own pages" in page.content()  # not the keys page
    with KeyStore.open(KennelHome(console_home)) as keys:
        assert "forged" not in {k.name for k in keys.list(include_revoked=True)}
    # the session itself is untouched: the admin still uses the console
    assert page.goto(console_url + "/ui/keys") is not None and page.locator("#keys-table").count() == 1
