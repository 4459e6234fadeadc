"""What a machine costs to own and run, month by month: pure arithmetic, checked by hand in tests.

- Power: a box draws its idle power plus the rest of its maximum in proportion to how busy it is,
  around the clock (730 hours a month); cooling multiplies that by the site's PUE.
- Upkeep: a share of the purchase price every year (repairs, spares, support contracts).
- Depreciation: the purchase spread evenly over the machine's lifetime.
- Over a horizon of H months a machine costs H months of depreciation plus H months of running
  (power and upkeep); with a lifetime equal to the horizon that is simply purchase + running.
- Break-even against a pay-as-you-go alternative (an API, a rented GPU): the first month whose
  cumulative cost (purchase paid up front, then running) is no more than the alternative's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kennel.cost.workload import HOURS_PER_MONTH
from kennel.errors import InvalidOptionError
from kennel.units import at_least_one

UPKEEP_PER_YEAR = 0.10  # of the purchase price: the usual hardware support contract is 10-20%/year
LIFETIME_YEARS = 3
HORIZON_MONTHS = 36  # the ranking's horizon: "3-year total cost"
OVERSIZED = 0.10  # under this share of its capacity busy at the peak, a setup is oversized


@dataclass(frozen=True)
class Money:
    """The currency printed, and how many of it one unit of the price book's currency buys."""

    currency: str = "USD"
    per_book_unit: float = 1.0  # exchange rate: display currency per price-book currency

    def __post_init__(self) -> None:
        if not self.per_book_unit > 0:
            raise InvalidOptionError("--fx must be above 0.", hint="For example --currency VND --fx 25400.")

    def convert(self, amount: float) -> float:
        """An amount in the price book's currency, in the printed one."""
        return amount * self.per_book_unit

    def fmt(self, amount: float, *, small: bool = False) -> str:
        """'$12,345', '$0.42' (``small`` amounts keep their cents), '313,566,000 VND'."""
        many = self.per_book_unit >= 20  # VND, JPY...: whole units are small enough
        decimals = 2 if small and not many and abs(amount) < 100 else 0
        sign = "-" if amount < 0 else ""
        text = f"{abs(amount):,.{decimals}f}"
        return f"{sign}${text}" if self.currency == "USD" else f"{sign}{text} {self.currency}"


@dataclass(frozen=True)
class Power:
    """One box's draw: with a model loaded and idle, and at full load (watts)."""

    idle_w: float
    max_w: float

    def __post_init__(self) -> None:
        if self.idle_w < 0 or self.max_w < self.idle_w:
            raise InvalidOptionError(
                f"A power figure is wrong: idle {self.idle_w:g} W, max {self.max_w:g} W.",
                hint="In the price file, idle_w must be at least 0 and no more than tdp_w.",
            )

    def draw_w(self, utilisation: float) -> float:
        u = min(max(utilisation, 0.0), 1.0)
        return self.idle_w + (self.max_w - self.idle_w) * u


@dataclass(frozen=True)
class CostParams:
    """The owner's figures: electricity in the printed currency, cooling, upkeep, lifetime."""

    kwh_price: float
    pue: float = 1.3
    upkeep_per_year: float = UPKEEP_PER_YEAR
    lifetime_months: int = LIFETIME_YEARS * 12
    horizon_months: int = HORIZON_MONTHS

    def __post_init__(self) -> None:
        if self.kwh_price < 0:
            raise InvalidOptionError("--kwh-price must be 0 or more.", hint="For example --kwh-price 0.15.")
        if not 1.0 <= self.pue <= 3.0:
            raise InvalidOptionError(
                "--pue must be between 1.0 and 3.0.", hint="1.3 for an office closet, 1.56 for a data centre."
            )
        if not 0 <= self.upkeep_per_year <= 1:
            raise InvalidOptionError("--upkeep must be between 0% and 100% a year.", hint="For example 10%.")
        if not 12 <= self.lifetime_months <= 120:
            raise InvalidOptionError(
                "--lifetime must be between 1 and 10 years.", hint="3 to 5 years is usual for servers."
            )


def energy_kwh_per_month(power: Power, utilisation: float, pue: float) -> float:
    """kWh a month at the meter: the box's draw around the clock, times the site's PUE."""
    return power.draw_w(utilisation) * HOURS_PER_MONTH / 1000 * pue


def energy_cost_per_month(power: Power, utilisation: float, params: CostParams) -> float:
    return energy_kwh_per_month(power, utilisation, params.pue) * params.kwh_price


def upkeep_per_month(purchase: float, params: CostParams) -> float:
    return purchase * params.upkeep_per_year / 12


def depreciation_per_month(purchase: float, params: CostParams) -> float:
    return purchase / params.lifetime_months


def horizon_total(purchase: float, running_per_month: float, params: CostParams) -> float:
    """Cost over the horizon: its months of depreciation and of running."""
    months = params.horizon_months
    return depreciation_per_month(purchase, params) * months + running_per_month * months


def cost_per_million(monthly_cost: float, tokens_per_month: float) -> float:
    """Monthly cost over the month's tokens (prompt + output), per million."""
    return monthly_cost / (tokens_per_month / 1e6) if tokens_per_month > 0 else math.inf


def api_cost_per_month(
    input_tokens: float, output_tokens: float, input_per_m: float, output_per_m: float
) -> float:
    return input_tokens / 1e6 * input_per_m + output_tokens / 1e6 * output_per_m


def rent_cost_per_month(per_hour: float) -> float:
    """A rented machine answers at any hour, so it is rented around the clock."""
    return per_hour * HOURS_PER_MONTH


def break_even_month(purchase: float, running_per_month: float, alternative_per_month: float) -> int | None:
    """First month m with purchase + m x running <= m x alternative; None when the alternative
    costs no more a month than running the machine does (it never pays back)."""
    saving = alternative_per_month - running_per_month
    if saving <= 0:
        return None
    # a hair over an integer is that integer: float noise must not add a month
    return at_least_one(purchase / saving)


def cumulative(purchase: float, running_per_month: float, months: int) -> list[float]:
    """Cash spent by the end of month 0 (the purchase), 1, ..., ``months``."""
    return [purchase + running_per_month * m for m in range(months + 1)]


def months_until_full(
    capacity_rps: float, peak_rps: float, growth_per_month: float, horizon: int
) -> int | None:
    """The first month whose peak, growing by ``growth_per_month``, exceeds the capacity; None if
    that does not happen within the horizon."""
    if growth_per_month <= 0:
        return None if peak_rps <= capacity_rps else 0
    for month in range(horizon + 1):
        if peak_rps * (1 + growth_per_month) ** month > capacity_rps * (1 + 1e-12):
            return month
    return None
