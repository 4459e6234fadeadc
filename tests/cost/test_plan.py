"""Boxes, utilisation and money for a setup under a load, by hand; ranking and the pick."""

from __future__ import annotations

import math
from datetime import date

import pytest

from kennel.cost.capacity import Capacity, from_curve
from kennel.cost.money import CostParams, Money, Power
from kennel.cost.plan import cost_option, plan
from kennel.cost.prices import ApiPrice
from kennel.cost.setups import Setup
from kennel.cost.workload import SECONDS_PER_MONTH, Targets, Workload
from kennel.fit.throughput import Throughput
from kennel.hardware.whatif import what_if

TARGETS = Targets(ttft_p95_s=2.0, min_tok_s=15.0)
HW = what_if(cpu_cores=4)


def capacity(rps: float) -> Capacity:
    """A box serving one request at a time that completes ``rps`` of them a second (its prompt
    takes 0.01 s; 100 tokens at whatever step rate makes up the rest)."""
    out = 100
    step = out / (1 / rps - 0.01)
    one = Throughput(1, 10_000, out, prefill_tok_s=1e6, step_per_s=step, calibrated=False)
    cap = from_curve([one], TARGETS, quant="Q4_K_M")
    assert cap.rps == pytest.approx(rps)
    return cap


def setup(name: str, price: float, idle: float = 50.0, top: float = 250.0) -> Setup:
    return Setup(name=name, kind="buy", hardware=HW, price=price, power=Power(idle, top))


def load(requests_per_day: float) -> Workload:
    return Workload(requests_per_day=requests_per_day, prompt_tokens=100, output_tokens=100)


def test_one_option_by_hand() -> None:
    w = load(28_800)  # 1 request/s over 8 busy hours, 3/s at the peak
    params = CostParams(kwh_price=0.20, pue=1.5, upkeep_per_year=0.12, lifetime_months=36)
    o = cost_option(setup("box", 1000.0), capacity(2.0), w, params, Money())
    assert o.boxes == 2  # 3/s over 2/s a box
    assert o.peak_utilisation == pytest.approx(0.75)  # 3 / (2 x 2)
    month_rps = 28_800 * 22 / SECONDS_PER_MONTH
    assert o.average_utilisation == pytest.approx(month_rps / 4)
    draw = 50 + 200 * month_rps / 4  # watts a box
    assert o.energy == pytest.approx(2 * draw * 730 / 1000 * 1.5 * 0.20)
    assert o.purchase == 2000 and o.upkeep == pytest.approx(20.0)  # 2000 x 12% / 12
    assert o.depreciation == pytest.approx(2000 / 36)
    assert o.total == pytest.approx(2000 + 36 * (o.energy + 20.0))
    tokens = 28_800 * 22 * 200
    assert o.per_million == pytest.approx((o.energy + 20.0 + 2000 / 36) / (tokens / 1e6))


def test_renting_and_currency() -> None:
    w = load(28_800)
    rent = Setup(name="cloud", kind="rent", hardware=HW, per_hour=1.0)
    o = cost_option(rent, capacity(2.0), w, CostParams(kwh_price=0.2), Money("VND", 25_000))
    assert o.boxes == 2 and o.purchase == 0 and o.energy == 0
    assert o.rent == pytest.approx(2 * 730 * 25_000)  # two instances around the clock
    assert o.total == pytest.approx(36 * o.rent)


def test_the_pick_is_the_cheapest_that_meets_the_targets() -> None:
    w = load(2_880)  # 0.3/s at the peak
    slow_cheap = Setup(name="slow", kind="buy", hardware=HW, price=100.0, power=Power(10, 20))
    too_slow = from_curve(
        [Throughput(1, 100, 100, prefill_tok_s=1000.0, step_per_s=5.0, calibrated=False)],
        TARGETS,
        quant="Q4_K_M",
    )
    bought = [
        (slow_cheap, too_slow),
        (setup("big", 9000.0), capacity(50.0)),
        (setup("small", 1500.0), capacity(1.0)),
    ]
    rented = [(Setup(name="cloud", kind="rent", hardware=HW, per_hour=0.5), capacity(1.0))]
    apis = [
        ApiPrice(
            name="cheap", input_per_m=0.1, output_per_m=0.4, source="https://x.test", as_of=date(2025, 1, 1)
        ),
        ApiPrice(
            name="dear", input_per_m=3.0, output_per_m=15.0, source="https://x.test", as_of=date(2025, 1, 1)
        ),
    ]
    r = plan(bought, rented, apis, w, TARGETS, CostParams(kwh_price=0.15), Money())
    assert r.pick is not None and r.pick.setup.name == "small"
    assert [o.setup.name for o in r.ranked] == ["small", "big"]
    assert [o.setup.name for o in r.failing] == ["slow"]
    big = r.ranked[1]
    assert big.oversized and not r.pick.oversized  # 0.3/s of 50/s: under 10% busy
    assert [a.api.name for a in r.apis] == ["cheap", "dear"]
    rent = r.rent
    assert rent is not None and rent.running == pytest.approx(0.5 * 730)
    pick = r.pick
    # 1,500 up front, then it saves (rent - running) a month over renting
    assert pick.break_even_with("cloud") == math.ceil(1500.0 / (rent.running - pick.running))
    cheap = r.apis[0].monthly  # 2,880 x 22 requests x 100 tokens in and out: 0.32 a month
    assert cheap == pytest.approx(2_880 * 22 * 100 * (0.1 + 0.4) / 1e6)
    assert cheap < pick.running and pick.break_even_with("cheap") is None
    assert "small" in r.reason and "meets" in r.reason


def test_growth_says_when_the_pick_runs_out() -> None:
    w = load(2_880)  # 0.3/s at the peak
    bought = [(setup("small", 1500.0), capacity(1.0)), (setup("big", 9000.0), capacity(50.0))]
    r = plan(bought, [], [], w, TARGETS, CostParams(kwh_price=0.15), Money(), growth=0.2)
    g = r.growth
    assert g is not None
    # 0.3 x 1.2^m > 1.0 first at m = 7 (1.2^6 = 2.99, 1.2^7 = 3.58)
    assert g.runs_out == 7 and g.boxes_then == 2
    # with a second box: 0.3 x 1.2^m > 2.0 first at m = 11 (1.2^10 = 6.19, 1.2^11 = 7.43)
    assert g.lasts_with_one_more == 11
    assert g.later_month == 19 and g.later_pick is not None
    # a year after that: 0.3 x 1.2^19 = 9.6/s needs ten small boxes (15,000), one big one (9,000)
    assert g.later_pick.setup.name == "big"
