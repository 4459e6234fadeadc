"""Power, cooling, upkeep, depreciation, cost per million tokens and break-even, by hand."""

from __future__ import annotations

import pytest

from kennel.cost.money import (
    CostParams,
    Money,
    Power,
    api_cost_per_month,
    break_even_month,
    cost_per_million,
    cumulative,
    depreciation_per_month,
    energy_cost_per_month,
    energy_kwh_per_month,
    horizon_total,
    months_until_full,
    rent_cost_per_month,
    upkeep_per_month,
)
from kennel.errors import InvalidOptionError


def test_power_is_idle_plus_the_busy_share_of_the_rest() -> None:
    p = Power(idle_w=100, max_w=500)
    assert p.draw_w(0) == 100 and p.draw_w(1) == 500
    assert p.draw_w(0.25) == 200  # 100 + 400 x 0.25
    assert p.draw_w(3.0) == 500 and p.draw_w(-1) == 100  # clamped
    with pytest.raises(InvalidOptionError):
        Power(idle_w=600, max_w=500)


def test_energy_and_cooling() -> None:
    p = Power(idle_w=100, max_w=500)
    # 200 W x 730 h = 146 kWh at the plug; a PUE of 1.5 makes it 219 kWh at the meter
    assert energy_kwh_per_month(p, 0.25, 1.0) == pytest.approx(146.0)
    assert energy_kwh_per_month(p, 0.25, 1.5) == pytest.approx(219.0)
    params = CostParams(kwh_price=0.20, pue=1.5)
    assert energy_cost_per_month(p, 0.25, params) == pytest.approx(43.80)  # 219 x 0.20


def test_upkeep_depreciation_and_the_three_year_total() -> None:
    params = CostParams(kwh_price=0.1, upkeep_per_year=0.12, lifetime_months=36)
    assert upkeep_per_month(3600, params) == pytest.approx(36.0)  # 3600 x 12% / 12
    assert depreciation_per_month(3600, params) == pytest.approx(100.0)  # 3600 / 36
    # lifetime = horizon: the whole purchase plus 36 months of running
    assert horizon_total(3600, 50, params) == pytest.approx(3600 + 36 * 50)
    # a five-year life: only 36/60 of the purchase falls in the three years
    five = CostParams(kwh_price=0.1, lifetime_months=60)
    assert horizon_total(3600, 50, five) == pytest.approx(3600 * 36 / 60 + 36 * 50)


def test_cost_per_million_tokens_and_api_and_rent() -> None:
    assert cost_per_million(150.0, 30e6) == pytest.approx(5.0)
    # 20M in at $0.40 + 5M out at $1.60 = 8 + 8
    assert api_cost_per_month(20e6, 5e6, 0.40, 1.60) == pytest.approx(16.0)
    assert rent_cost_per_month(0.50) == pytest.approx(365.0)  # around the clock: 730 h


def test_break_even_month() -> None:
    # 3000 up front, 50 a month to run, against 300 a month: 3000 / 250 = 12 months
    assert break_even_month(3000, 50, 300) == 12
    assert cumulative(3000, 50, 12)[12] == pytest.approx(12 * 300)
    assert break_even_month(3000, 50, 290) == 13  # 3000 / 240 = 12.5: month 13
    assert break_even_month(3000, 300, 300) is None  # saves nothing a month: never
    assert break_even_month(0, 10, 20) == 1  # owned already: from the first month
    assert cumulative(100, 10, 3) == [100, 110, 120, 130]


def test_months_until_a_growing_load_fills_the_capacity() -> None:
    # 1 request/s at 20%/month against 2 requests/s: 1.2^3 = 1.728, 1.2^4 = 2.07 -> month 4
    assert months_until_full(2.0, 1.0, 0.2, 36) == 4
    assert months_until_full(2.0, 1.0, 0.0, 36) is None
    assert months_until_full(1000.0, 1.0, 0.01, 36) is None  # not within three years


def test_money_in_other_currencies() -> None:
    usd = Money()
    assert usd.fmt(12345.4) == "$12,345" and usd.fmt(0.423, small=True) == "$0.42"
    vnd = Money("VND", 25400)
    assert vnd.convert(2.5) == pytest.approx(63500)
    assert vnd.fmt(vnd.convert(2.5), small=True) == "63,500 VND"
    with pytest.raises(InvalidOptionError):
        Money("VND", 0)
    with pytest.raises(InvalidOptionError):
        CostParams(kwh_price=0.1, pue=0.9)
