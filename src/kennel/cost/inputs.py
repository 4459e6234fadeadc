"""What users type, read into the cost model's values: shares ('10%'), token volumes ('30M'), the
load, the printed currency and the electricity price."""

from __future__ import annotations

import re

from kennel.cost.money import Money
from kennel.cost.prices import PriceBook
from kennel.cost.workload import Workload
from kennel.errors import InvalidOptionError

_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmb]?)\s*$", re.IGNORECASE)


def parse_share(flag: str, text: str) -> float:
    """'10%', '0.1' and '10' all mean a tenth (a plain number above 1 is a percentage); a growth
    rate may end in '/month'."""
    t = text.strip().removesuffix("/month").removesuffix("/mo").strip()
    try:
        value = float(t.rstrip("%").strip())
    except ValueError as exc:
        raise InvalidOptionError(
            f"{flag} {text!r} is not a percentage.", hint="Write it like 10% or 0.1."
        ) from exc
    share = value / 100 if t.endswith("%") or value > 1 else value
    if share < 0:
        raise InvalidOptionError(f"{flag} must not be negative.", hint="Write it like 10%.")
    return share


def parse_tokens(text: str) -> float:
    """'30M', '1.5B', '800k', '12000' (decimal: k, M, B are thousand, million, billion)."""
    m = _AMOUNT.match(text)
    if m is None:
        raise InvalidOptionError(
            f"Cannot read token count {text!r}.",
            hint="Write IN,OUT like 30M,10M (k, M, B: thousand, million, billion).",
        )
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]


def workload_from(
    *,
    users: int | None,
    requests_per_user_day: float,
    prompt_tokens: int,
    output_tokens: int,
    tokens_per_month: str | None,
    hours: float,
    days: float,
    peak_factor: float,
) -> Workload:
    """The load from --users (a team) or --tokens-per-month IN,OUT (a volume)."""
    if users is not None and tokens_per_month is not None:
        raise InvalidOptionError(
            "Give --users or --tokens-per-month, not both.", hint="--users 40, or --tokens-per-month 30M,10M."
        )
    if tokens_per_month is not None:
        parts = tokens_per_month.split(",")
        if len(parts) != 2:
            raise InvalidOptionError(
                "--tokens-per-month takes IN,OUT.", hint="For example --tokens-per-month 30M,10M."
            )
        return Workload.monthly_tokens(
            input_tokens=parse_tokens(parts[0]),
            output_tokens=parse_tokens(parts[1]),
            output_per_request=output_tokens,
            busy_hours=hours,
            days_per_month=days,
            peak_factor=peak_factor,
        )
    if users is None:
        raise InvalidOptionError(
            "Say how much load to plan for.",
            hint="Give --users N (with --requests-per-user-day), or --tokens-per-month IN,OUT.",
        )
    return Workload.team(
        users=users,
        requests_per_user_day=requests_per_user_day,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        busy_hours=hours,
        days_per_month=days,
        peak_factor=peak_factor,
    )


def money_from(book: PriceBook, currency: str | None, fx: float | None) -> Money:
    """The printed currency: the price book's, or another at the rate the user gives."""
    code = (currency or book.currency).strip().upper()
    if code == book.currency:
        return Money(code, 1.0)
    if fx is None:
        raise InvalidOptionError(
            f"--currency {code} needs an exchange rate.",
            hint=f"Give --fx: how many {code} one {book.currency} buys, e.g. --currency VND --fx 25400.",
        )
    return Money(code, fx)


def kwh_from(book: PriceBook, money: Money, given: float | None) -> tuple[float, str]:
    """Electricity per kWh in the printed currency, and where the figure came from."""
    if given is not None:
        return given, "--kwh-price"
    tariff = book.tariff(money.currency)
    if tariff is None:
        raise InvalidOptionError(
            f"The price file has no electricity tariff in {money.currency} or {book.currency}.",
            hint="Give --kwh-price.",
        )
    if tariff.currency == money.currency:
        return tariff.per_kwh, tariff.name
    return money.convert(tariff.per_kwh), f"{tariff.name}, converted"
