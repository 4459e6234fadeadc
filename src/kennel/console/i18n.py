"""Message catalogs and language choice.

Catalogs are the ``.po`` files under ``locale/<lang>/LC_MESSAGES/``; every ``.po`` file of a language
is read and merged (each engineer's pages keep their own file), once, when the app starts
(``Catalogs.load``), never at import. English ``.po`` files may leave a msgstr empty: the msgid is
the English text. Reading the ``.po`` files directly (Babel's reader) keeps compiled ``.mo``
binaries out of the repository.

The language of a request: the ``kennel_lang`` cookie set by the switch, else the best match of
``Accept-Language``, else English."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

LANGUAGES: tuple[str, ...] = ("en", "vi")
# each language named in itself, for the switch (not translated: a reader looks for their own)
ENDONYMS: tuple[tuple[str, str], ...] = (("en", "English"), ("vi", "Tiếng Việt"))
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "kennel_lang"
LOCALE_DIR = Path(__file__).parent / "locale"

Gettext = Callable[..., str]


def N_(msgid: str) -> str:
    """Marks a msgid for extraction where it is translated later (a table of words, a state name):
    the text itself, unchanged."""
    return msgid


# Words templates translate from data (``_(key.role)``, ``_(state)``): listed so extraction sees them
DATA_WORDS = (
    N_("admin"),
    N_("user"),
    N_("active"),
    N_("expired"),
    N_("revoked"),
    N_("failing"),
    N_("recovered"),
)


@dataclass(frozen=True)
class Translations:
    """One language's messages: msgid -> msgstr, and plural forms (msgid -> list of forms)."""

    lang: str
    messages: Mapping[str, str] = field(default_factory=dict)
    plurals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def gettext(self, msgid: str, /, **values: Any) -> str:
        """The translation of ``msgid`` (the msgid itself when there is none), with ``%(name)s``
        placeholders filled from ``values`` when any are given."""
        text = self.messages.get(msgid) or msgid
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, /, **values: Any) -> str:
        """Singular or plural by ``n`` (Vietnamese has one form); ``%(num)s`` is ``n``."""
        forms = self.plurals.get(singular)
        if forms and any(forms):
            text = forms[0] if len(forms) == 1 or n == 1 else forms[1]
        else:
            text = singular if n == 1 else plural
        return text % {"num": n, **values}


@dataclass(frozen=True)
class Catalogs:
    by_lang: Mapping[str, Translations]

    @classmethod
    def load(cls, root: Path = LOCALE_DIR) -> Catalogs:
        out: dict[str, Translations] = {}
        for lang in LANGUAGES:
            messages: dict[str, str] = {}
            plurals: dict[str, tuple[str, ...]] = {}
            for po in sorted((root / lang / "LC_MESSAGES").glob("*.po")):
                with po.open("rb") as f:
                    catalog = read_po(f, locale=lang)
                for message in catalog:
                    msgid, string = message.id, message.string
                    if not msgid:
                        continue  # the header
                    if isinstance(msgid, str):
                        if string:
                            messages[msgid] = str(string)
                    else:  # a plural: (singular, plural) -> its forms
                        forms = tuple(str(s) for s in string) if isinstance(string, (tuple, list)) else ()
                        plurals[str(msgid[0])] = forms
            out[lang] = Translations(lang, messages, plurals)
        return cls(out)

    def get(self, lang: str) -> Translations:
        return self.by_lang.get(lang) or self.by_lang[DEFAULT_LANGUAGE]


def negotiate(accept_language: str | None, cookie: str | None = None) -> str:
    """The cookie's language if it is one we have, else the best of ``Accept-Language``
    (q-values honoured, ``vi-VN`` counts as ``vi``), else English."""
    if cookie in LANGUAGES:
        return cookie
    best: tuple[float, str] | None = None
    for part in (accept_language or "").split(","):
        fields = part.strip().split(";")
        tag = fields[0].strip().lower()
        if not tag:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.split("-")[0]
        # a later entry wins only with a strictly higher q: ties keep the order the browser gave
        if primary in LANGUAGES and q > 0 and (best is None or q > best[0]):
            best = (q, primary)
    return best[1] if best else DEFAULT_LANGUAGE
