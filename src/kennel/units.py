"""Parsing and printing sizes and counts the way users type and read them."""

from __future__ import annotations

import math
import re

from kennel.errors import InvalidOptionError

KiB = 1024
MiB = 1024**2
GiB = 1024**3

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str, *, default_unit: str = "g") -> int:
    """Parse '64G', '64GB', '64GiB', '512m', '24' (GiB by default) into bytes.

    Memory sizes are binary on every platform users see them on (a '64 GB' DIMM kit is 64 GiB),
    so both G and GiB mean 1024**3.
    """
    m = _SIZE.match(text)
    if not m:
        raise InvalidOptionError(f"Cannot read size {text!r}.", hint="Write it like 64G, 512M or 1.5T.")
    value, unit = float(m.group(1)), (m.group(2) or default_unit).lower()
    return int(value * 1024 ** _POWERS[unit])


def parse_count(text: str) -> int:
    """Parse '8192', '8k', '128K', '1M' into an integer (k = 1024, as context sizes are)."""
    m = re.match(r"^\s*(\d+)\s*([kKmM]?)\s*$", text)
    if not m:
        raise InvalidOptionError(f"Cannot read number {text!r}.", hint="Write it like 8192 or 8k.")
    mult = {"": 1, "k": 1024, "m": 1024**2}[m.group(2).lower()]
    return int(m.group(1)) * mult


def fmt_bytes(n: float) -> str:
    """Human bytes, binary units, three significant figures: '4.58 GiB'."""
    if n < 0:
        return "-" + fmt_bytes(-n)
    for unit, size in (("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{int(n)} B"


def fmt_rate(tok_s: float) -> str:
    if tok_s >= 100:
        return f"{tok_s:.0f}"
    if tok_s >= 10:
        return f"{tok_s:.1f}"
    return f"{tok_s:.2f}"


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float) -> float:
    """Seconds from 30, "30s", "5m", "1h" or -1 (Ollama's keep_alive forms); ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    try:
        if text and text[-1] in _DURATION_UNITS:
            return float(text[:-1]) * _DURATION_UNITS[text[-1]]
        return float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h or -1") from None


def at_least_one(x: float) -> int:
    """How many whole things carry ``x`` of them: rounded up, at least one, and a ratio a float
    error puts a hair above a whole number (3.0000000001 boxes) is that number."""
    return max(1, math.ceil(x - 1e-9))
