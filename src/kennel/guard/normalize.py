"""Text normalization for injection matching.

Attackers dodge keyword lists with tricks a model reads straight through: invisible characters
inside words, fullwidth or Cyrillic look-alike letters, leetspeak, accents removed or added,
letters spaced or dotted apart. ``normalize`` undoes those, once, so every detector matches
against the same canonical tokens, and reports the invisible characters it removed (they are a
signal of their own, see ``detectors.detect_invisible``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

InvisibleKind = Literal["zero_width", "bidi", "tag", "variation_selector"]

# Characters that render as nothing. Zero-width joiners are legitimate inside emoji sequences and
# some scripts, so they are reported with their context and the detector decides.
_ZERO_WIDTH = frozenset(
    "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f\u115f\u1160\u3164\uffa0"
)
# Bidi controls reorder what the reader sees ("Trojan Source"); LRM/RLM included, the detector
# weighs overrides and isolates above marks.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
BIDI_OVERRIDES = frozenset("\u202d\u202e\u2066\u2067\u2068")

# Cyrillic and Greek letters that look Latin: "іgnоre" must read as "ignore".
_HOMOGLYPHS = str.maketrans("аеорсухіјѕԁһӏԛԝкοαεικνρτυχ", "aeopcyxijsdhlqwkoaeikvptux")
# Leetspeak digits and symbols, applied only inside tokens that also hold letters, so numbers
# ("2024", "$5") survive.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# Traditional forms of the Chinese characters the phrase tables use, mapped to simplified.
_TRAD_TO_SIMP = str.maketrans(
    "統設規則開發顯詞導說對話內隱輸無視記過從現約製裝們個這麼讓給訴洩複請繞棄違獄審濾碼態擬權應須絕"
    "護義處務條禁聽們氣單歷錄據憑鑰密",
    "统设规则开发显词导说对话内隐输无视记过从现约制装们个这么让给诉泄复请绕弃违狱审滤码态拟权应须绝"
    "护义处务条禁听们气单历录据凭钥密",
)
# Letters that carry no combining mark in NFD but are accented forms all the same.
_BASE_LETTERS = str.maketrans({"đ": "d", "ð": "d", "ø": "o", "ł": "l", "ħ": "h", "ı": "i"})

# Two or more single characters (two: Vietnamese syllables like "b ỏ") joined by one separator,
# the same one throughout: "i g n o r e", "i.g.n.o.r.e", "1-g-n-0-r-3". A double space or a
# different separator ends the run, so "i g n o r e  a l l" and "b.ỏ q.u.a" stay separate words.
_SPACED = re.compile(r"(?<![\w@$])[\w@$]([ .\-_*|/+~:·•])[\w@$](?:\1[\w@$])*(?![\w@$])")
_SEPARATORS = re.compile(r"[ .\-_*|/+~:·•]")
_APOSTROPHES = re.compile(r"(?<=\w)['’`´](?=\w)")
# Word tokens: runs of Latin letters and digits; each CJK character is a token of its own, since
# Chinese is written without spaces.
# An identifier stays one token ("system_prompt" in code is a name, not a request).
_TOKEN = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*|[\u3400-\u9fff\uf900-\ufaff\u3040-\u30ff]|[^\W\d_]+")
_LETTER = re.compile(r"[a-z]")


@dataclass(frozen=True)
class InvisibleChar:
    position: int  # index in the original text
    codepoint: int
    kind: InvisibleKind
    inside_word: bool  # between two letters: it splits a word for a keyword filter


@dataclass(frozen=True)
class Normalized:
    original: str
    kept: str  # NFKC, casefolded, invisibles removed, accents kept (Chinese, display)
    folded: str  # accents stripped, look-alikes and leetspeak mapped, spaced letters joined
    tokens: tuple[str, ...]  # words of ``folded``; one per CJK character
    invisible: tuple[InvisibleChar, ...]
    hidden: str  # ASCII smuggled in Unicode tag characters (U+E0020..E007E), decoded
    homoglyphs: int  # Cyrillic/Greek look-alikes found inside otherwise Latin words


_INVISIBLE = re.compile(
    "[" + "".join(sorted(_ZERO_WIDTH | _BIDI)) + "\U000e0000-\U000e007f\ufe00-\ufe0f\U000e0100-\U000e01ef]"
)


def invisible_kind(ch: str) -> InvisibleKind | None:
    if ch in _ZERO_WIDTH:
        return "zero_width"
    if ch in _BIDI:
        return "bidi"
    cp = ord(ch)
    if 0xE0000 <= cp <= 0xE007F:
        return "tag"
    if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF:
        return "variation_selector"
    return None


def find_invisible(text: str) -> tuple[InvisibleChar, ...]:
    """Every invisible character in ``text`` with its position and whether it splits a word."""
    found: list[InvisibleChar] = []
    for m in _INVISIBLE.finditer(text):
        i, ch = m.start(), m.group(0)
        kind = invisible_kind(ch)
        assert kind is not None  # the pattern and invisible_kind name the same characters
        found.append(InvisibleChar(i, ord(ch), kind, _letter_near(text, i, -1) and _letter_near(text, i, 1)))
    return tuple(found)


def _letter_near(text: str, i: int, step: int) -> bool:
    """Whether the nearest visible character before/after ``i`` is a letter (not an emoji or space)."""
    j = i + step
    while 0 <= j < len(text) and invisible_kind(text[j]) is not None:
        j += step
    return 0 <= j < len(text) and text[j].isalpha()


def strip_accents(text: str) -> str:
    """Remove diacritics: "bỏ qua mọi hướng dẫn" -> "bo qua moi huong dan". Han characters have no
    decomposition and pass through unchanged."""
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", bare).translate(_BASE_LETTERS)


def unleet(text: str) -> str:
    """Map leetspeak inside words that also contain letters: "1gn0r3" -> "ignore", "2024" stays."""
    return " ".join(w.translate(_LEET) if _LETTER.search(w) else w for w in text.split(" "))


def collapse_spacing(text: str) -> str:
    """Join single characters spaced or dotted apart: "i g n o r e" / "i.g.n.o.r.e" -> "ignore"."""
    return _SPACED.sub(_join_spaced, text)


def _join_spaced(m: re.Match[str]) -> str:
    run = m.group(0)
    # Digits alone are numbers ("4.5", "1 2 3"), not a word spelled out.
    return _SEPARATORS.sub("", run) if any(ch.isalpha() for ch in run) else run


def tokenize(folded: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(folded))


def normalize(text: str) -> Normalized:
    invisible = find_invisible(text)
    hidden = "".join(chr(inv.codepoint - 0xE0000) for inv in invisible if 0xE0020 <= inv.codepoint <= 0xE007E)
    visible = _INVISIBLE.sub("", text) if invisible else text
    kept = unicodedata.normalize("NFKC", visible).casefold().translate(_TRAD_TO_SIMP)
    stripped = strip_accents(kept)
    mapped = stripped.translate(_HOMOGLYPHS)
    homoglyphs = _count_homoglyphs(stripped, mapped)
    folded = _APOSTROPHES.sub("", mapped)
    folded = unleet(collapse_spacing(folded))
    tokens = tokenize(folded)
    return Normalized(text, kept, " ".join(tokens), tokens, invisible, hidden, homoglyphs)


def _count_homoglyphs(before: str, after: str) -> int:
    """Look-alikes mapped inside words that also hold real Latin letters (a Russian word alone is
    just Russian)."""
    count = 0
    for word_before, word_after in zip(before.split(), after.split(), strict=True):
        if word_before != word_after and _LETTER.search(word_before):
            count += sum(a != b for a, b in zip(word_before, word_after, strict=True))
    return count
