"""Languages: every msgid of the console (templates and Python) has a Vietnamese translation with
the same placeholders; templates hold no visible text outside ``_()``; Accept-Language, the
switch and its cookie choose the language; and in a real browser the switch shows Vietnamese."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from jinja2 import Environment, nodes

from kennel.console.i18n import Catalogs, negotiate
from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.console.apptest import console_client

CONSOLE = Path(__file__).resolve().parents[2] / "src" / "kennel" / "console"
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _msgids() -> dict[str | tuple[str, ...], list[str]]:
    method_map, options_map = parse_mapping_cfg(io.StringIO((CONSOLE / "babel.cfg").read_text()))
    found: dict[str | tuple[str, ...], list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(CONSOLE), method_map, options_map, keywords=KEYWORDS
    ):
        key = message if isinstance(message, str) else tuple(message)
        found.setdefault(key, []).append(f"{filename}:{lineno}")
    return found


def test_extraction_finds_the_console_strings() -> None:
    ids = _msgids()
    # a template string, a Python string and a plural: extraction covers all three kinds
    assert "Skip to content" in ids and "Write a message first." in ids
    assert any(isinstance(k, tuple) for k in ids)


def test_every_msgid_has_a_vietnamese_translation_with_the_same_placeholders() -> None:
    vi = Catalogs.load().get("vi")
    missing, wrong = [], []
    for msgid, where in _msgids().items():
        if isinstance(msgid, tuple):
            forms = vi.plurals.get(msgid[0], ())
            if not forms or not all(forms):
                missing.append((msgid[0], where[0]))
            elif any(
                set(PLACEHOLDER.findall(f)) - {"num"} != set(PLACEHOLDER.findall(msgid[1])) - {"num"}
                for f in forms
            ):
                wrong.append((msgid[0], where[0]))
            continue
        text = vi.messages.get(msgid)
        if not text:
            missing.append((msgid, where[0]))
        elif set(PLACEHOLDER.findall(text)) != set(PLACEHOLDER.findall(msgid)):
            wrong.append((msgid, where[0]))
    assert not missing, f"no Vietnamese for: {missing}"
    assert not wrong, f"placeholders differ in: {wrong}"


class _Visible(HTMLParser):
    """Text a reader sees or hears: element text, and the attributes read out or shown."""

    SPOKEN = ("aria-label", "title", "placeholder", "alt", "aria-description")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if name in self.SPOKEN and value:
                self.found.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.found.append(data)


def _literal_text(source: str) -> list[str]:
    # what Jinja prints becomes a mark and its tags a space (they may sit inside an HTML tag):
    # what is left was written in the template
    bare = re.sub(r"\{\{.*?\}\}", "\x00", source, flags=re.S)
    bare = re.sub(r"\{%.*?%\}|\{#.*?#\}", " ", bare, flags=re.S)
    parser = _Visible()
    parser.feed(bare)
    return [t.strip() for t in parser.found if re.search(r"[^\W\d_]", t.replace("\x00", ""))]


@pytest.mark.parametrize("template", sorted(p.name for p in (CONSOLE / "templates").glob("*.html")))
def test_templates_have_no_text_outside_gettext(template: str) -> None:
    assert _literal_text((CONSOLE / "templates" / template).read_text(encoding="utf-8")) == []


def test_the_literal_text_check_can_fail() -> None:
    assert _literal_text('<p>{{ _("Fine") }}</p><p>Not fine</p><a title="Nor this">{{ x }}</a>') == [
        "Not fine",
        "Nor this",
    ]


def _literal_labels(source: str) -> list[str]:
    # what a page hands a macro of _macros.html to show: each column of data_table (a label, or a
    # (label, kind) pair) and its caption, each either _() or no words at all ("#")
    found: list[str] = []

    def check(node: nodes.Node) -> None:
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "_":
            return
        found.extend(
            c.value
            for c in [node, *node.find_all(nodes.Const)]
            if isinstance(c, nodes.Const)
            if isinstance(c.value, str) and re.search(r"[^\W\d_]", c.value)
        )

    for call in Environment().parse(source).find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == "data_table"):
            continue
        shown = [k.value for k in call.kwargs if k.key == "caption"]
        for columns in call.args[:1]:
            for group in [columns, *columns.find_all(nodes.List)]:
                if not isinstance(group, nodes.List):
                    continue
                for column in group.items:
                    if isinstance(column, nodes.Tuple):
                        label, kind = column.items
                        assert isinstance(kind, nodes.Const) and kind.value in ("num", "hidden"), kind
                        shown.append(label)
                    else:
                        shown.append(column)
        for node in shown:
            check(node)
    return found


@pytest.mark.parametrize("template", sorted(p.name for p in (CONSOLE / "templates").glob("*.html")))
def test_templates_hand_macros_only_translated_labels(template: str) -> None:
    assert _literal_labels((CONSOLE / "templates" / template).read_text(encoding="utf-8")) == []


def test_the_macro_label_check_can_fail() -> None:
    source = (
        '{% call data_table([_("Fine"), ("#", "num"), ("Not fine", "num"), "Nor this"],'
        ' caption="Nor that") %}{% endcall %}'
    )
    assert sorted(_literal_labels(source)) == ["Nor that", "Nor this", "Not fine"]


def test_negotiation() -> None:
    assert negotiate(None) == "en"
    assert negotiate("vi-VN,vi;q=0.9,en-US;q=0.8") == "vi"
    assert negotiate("en-US,en;q=0.9,vi;q=0.8") == "en"
    assert negotiate("fr-FR,vi;q=0.5") == "vi"  # the first language we have
    assert negotiate("fr-FR,de;q=0.5") == "en"
    assert negotiate("vi;q=0,en;q=0.1") == "en"  # q=0: not acceptable
    assert negotiate("en", cookie="vi") == "vi"  # the switch wins over the browser
    assert negotiate("vi", cookie="xx") == "vi"  # an unknown cookie is ignored


def test_language_from_the_browser_and_the_switch(tmp_path: Path) -> None:
    with console_client(tmp_path / "home") as client:
        r = client.get("/ui/", headers={"accept-language": "vi-VN,vi;q=0.9"})
        assert '<html lang="vi">' in r.text and "<h1>Tổng quan</h1>" in r.text
        r = client.get("/ui/lang?set=vi&next=/ui/chat", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/chat"
        assert "kennel_lang=vi" in r.headers["set-cookie"]
        assert "<h1>Trò chuyện</h1>" in client.get("/ui/chat").text
        client.get("/ui/lang?set=en&next=//evil.example/")  # only a console path is followed
        r = client.get("/ui/lang?set=en&next=//evil.example/", follow_redirects=False)
        assert r.headers["location"] == "/ui/"
        assert "<h1>Chat</h1>" in client.get("/ui/chat", headers={"accept-language": "vi"}).text


def test_switching_to_vietnamese_in_the_browser(admin_page) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    page.goto("/ui/chat")
    page.get_by_role("link", name="Tiếng Việt").click()
    page.wait_for_load_state()
    assert page.url.endswith("/ui/chat")
    assert page.get_by_role("heading", level=1).inner_text() == "Trò chuyện"
    assert page.get_by_role("button", name="Gửi").count() == 1
    assert page.locator("html").get_attribute("lang") == "vi"
    page.goto("/ui/")
    assert page.get_by_role("heading", level=1).inner_text() == "Tổng quan"
    page.get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Overview"


@pytest.mark.parametrize(("lang", "label"), [("en", "API keys"), ("vi", "Khóa API")])
def test_the_keys_page_is_named_as_its_link_in_the_navigation(tmp_path: Path, lang: str, label: str) -> None:
    with console_client(tmp_path / "home") as client:
        html = client.get("/ui/keys", headers={"accept-language": lang}).text
    assert f'<a href="/ui/keys" aria-current="page">{label}</a>' in html and f"<h1>{label}</h1>" in html


def test_the_sign_in_page_says_where_the_key_is_kept(tmp_path: Path) -> None:
    """The server holds the key for the session; the browser only a random session id."""
    with KeyStore.open(KennelHome(tmp_path / "home")) as keys:
        keys.create("boss", role="admin")  # with a key, the console asks for one
    with console_client(tmp_path / "home") as client:
        en = client.get("/ui/signin").text
        vi = client.get("/ui/signin", headers={"accept-language": "vi"}).text
    assert "The server keeps the key in its memory" in en and "only a random session id" in en
    assert "browser's session only" not in en
    assert "Máy chủ giữ khóa trong bộ nhớ" in vi and "mã phiên ngẫu nhiên" in vi
