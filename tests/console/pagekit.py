"""HTTP helpers for the models, fit and checkups page tests: a store with a two-version model,
signed-in console clients against a real server on loopback, and the CSRF token of a page."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from kennel.store.add import import_gguf
from kennel.store.profile import Profile
from kennel.store.registry import Store

MODEL = "tiny"

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def two_versions(home: KennelHome, gguf: Path, name: str = MODEL) -> None:
    """``name`` @1 (the imported GGUF) and @2 (the same weights with a system prompt), `latest` on @2,
    made through the store's API as `kennel import` and `kennel create` make them."""
    with Store.open(home) as store:
        v1 = import_gguf(store, gguf, name=name, actor="tester", message="first import")
        profile = Profile(base=v1.profile.base, base_file=v1.profile.base_file, system="Answer briefly.")
        store.add_version(name, profile, action="create", actor="tester", message="a system prompt")


def make_keys(home: KennelHome) -> tuple[str, str]:
    """(admin secret, user secret)."""
    with KeyStore.open(home) as keys:
        _, admin = keys.create("boss", role="admin")
        _, user = keys.create("reader", role="user")
    return admin, user


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m is not None, "no CSRF token in the page"
    return m.group(1)


@contextmanager
def console_client(url: str, secret: str | None = None) -> Iterator[httpx.Client]:
    """A client with a console session, signed in with ``secret`` when given."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as client:
        if secret is not None:
            form = client.get("/ui/signin")
            r = client.post(
                "/ui/signin", data={"key": secret, "next": "/ui/", "csrf_token": csrf_of(form.text)}
            )
            assert r.status_code == 303, r.text
        yield client


def visible_text(html: str) -> str:
    """The page's text without tags, whitespace collapsed (good enough for assertions)."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(html_lib.unescape(text).split())


def add_untagged_version(home: KennelHome, name: str = MODEL) -> int:
    """A second version of the served model for promote/rollback in the browser: the same weights
    with a system prompt, and no tag moved (``latest`` stays where the server found it). Made once;
    the number of the newest version."""
    with Store.open(home) as store:
        versions = store.versions(name)
        if len(versions) >= 2:
            return versions[-1].version
        base = versions[-1].profile
        profile = Profile(base=base.base, base_file=base.base_file, system="Answer briefly.")
        v = store.add_version(
            name, profile, action="create", actor="tester", message="for the console", tags=()
        )
        return v.version
