"""From capacities and prices to the answer: how many boxes each setup needs, what it costs over
three years, which one to buy, and how that compares with cloud APIs and rented GPUs.

Ranking: only setups that meet the latency targets at the peak are ranked, cheapest 3-year total
first; the pick is the first of them. Setups that miss the targets are listed apart and are never
the pick, however cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from kennel.cost.capacity import Capacity
from kennel.cost.money import (
    OVERSIZED,
    CostParams,
    Money,
    api_cost_per_month,
    break_even_month,
    cost_per_million,
    depreciation_per_month,
    energy_cost_per_month,
    horizon_total,
    months_until_full,
    rent_cost_per_month,
    upkeep_per_month,
)
from kennel.cost.prices import ApiPrice
from kennel.cost.setups import Setup
from kennel.cost.workload import Targets, Workload
from kennel.units import at_least_one


@dataclass(frozen=True)
class Option:
    """One setup costed for one load. Money is in the printed currency."""

    setup: Setup
    capacity: Capacity
    boxes: int
    peak_utilisation: float  # of the boxes' capacity within the targets, at the peak
    average_utilisation: float  # over the whole month
    purchase: float  # all boxes
    energy: float  # a month, cooling included
    upkeep: float  # a month
    rent: float  # a month (rented setups)
    depreciation: float  # a month
    total: float  # over the horizon
    per_million: float  # all-in monthly cost per million tokens (prompt + output)
    break_even: tuple[tuple[str, int | None], ...] = ()  # (API or rental, month) for bought setups

    @property
    def meets(self) -> bool:
        return self.capacity.meets

    @property
    def running(self) -> float:
        """What it costs a month beyond the purchase: power, cooling, upkeep, rent."""
        return self.energy + self.upkeep + self.rent

    @property
    def monthly(self) -> float:
        """All-in monthly cost: running plus depreciation."""
        return self.running + self.depreciation

    @property
    def oversized(self) -> bool:
        return self.meets and self.peak_utilisation < OVERSIZED

    def break_even_with(self, name: str) -> int | None:
        return dict(self.break_even).get(name)


@dataclass(frozen=True)
class ApiCost:
    api: ApiPrice
    monthly: float  # printed currency
    per_million: float


@dataclass(frozen=True)
class Growth:
    """The pick under a load growing by ``rate`` a month."""

    rate: float
    runs_out: int | None  # the month its peak exceeds the pick's capacity; None: not in the horizon
    boxes_then: int  # boxes needed that month
    lasts_with_one_more: int | None  # the month one more box runs out too
    later_month: int  # a year after it runs out (at most the horizon)
    later_pick: Option | None  # the cheapest setup for that month's load
    later_factor: float  # that load, as a multiple of today's


@dataclass(frozen=True)
class CostReport:
    workload: Workload
    targets: Targets
    params: CostParams
    money: Money
    options: tuple[Option, ...]  # bought and owned setups: meeting the targets first, by total
    rentals: tuple[Option, ...]  # rented setups, the same order
    apis: tuple[ApiCost, ...]  # cheapest first
    pick: Option | None
    reason: str
    growth: Growth | None = None

    @property
    def ranked(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.meets)

    @property
    def failing(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if not o.meets)

    @property
    def rent(self) -> Option | None:
        """The cheapest rental that meets the targets."""
        return next((o for o in self.rentals if o.meets), None)

    @property
    def cheapest_api(self) -> ApiCost | None:
        return self.apis[0] if self.apis else None


def cost_option(
    setup: Setup, capacity: Capacity, workload: Workload, params: CostParams, money: Money
) -> Option:
    """Boxes for the peak, utilisation, and money for one setup under one load."""
    if capacity.meets:
        # a hair over an integer is that integer: 2.0000001 boxes of float noise is still 2
        boxes = at_least_one(workload.peak_rps / capacity.rps)
        capacity_rps = boxes * capacity.rps
        peak_u = workload.peak_rps / capacity_rps
        avg_u = workload.month_rps / capacity_rps
    else:
        boxes, peak_u, avg_u = 1, 0.0, 0.0  # not meaningful: the setup cannot serve the load
    purchase = money.convert(setup.price) * boxes
    energy = boxes * energy_cost_per_month(setup.power, avg_u, params) if setup.kind != "rent" else 0.0
    upkeep = upkeep_per_month(purchase, params)
    rent = boxes * rent_cost_per_month(money.convert(setup.per_hour)) if setup.kind == "rent" else 0.0
    depreciation = depreciation_per_month(purchase, params)
    running = energy + upkeep + rent
    return Option(
        setup=setup,
        capacity=capacity,
        boxes=boxes,
        peak_utilisation=peak_u,
        average_utilisation=avg_u,
        purchase=purchase,
        energy=energy,
        upkeep=upkeep,
        rent=rent,
        depreciation=depreciation,
        total=horizon_total(purchase, running, params),
        per_million=cost_per_million(running + depreciation, workload.tokens_per_month),
    )


def rank(options: Sequence[Option]) -> tuple[Option, ...]:
    """Those meeting the targets, cheapest over the horizon first (then the smaller purchase);
    then the rest, nearest to fitting first."""
    ok = sorted((o for o in options if o.meets), key=lambda o: (o.total, o.purchase, o.setup.label))
    bad = sorted((o for o in options if not o.meets), key=lambda o: (o.capacity.quant is None, o.total))
    return (*ok, *bad)


def api_costs(apis: Sequence[ApiPrice], workload: Workload, money: Money) -> tuple[ApiCost, ...]:
    out = []
    for a in apis:
        monthly = money.convert(
            api_cost_per_month(
                workload.input_tokens_per_month,
                workload.output_tokens_per_month,
                a.input_per_m,
                a.output_per_m,
            )
        )
        out.append(ApiCost(a, monthly, cost_per_million(monthly, workload.tokens_per_month)))
    return tuple(sorted(out, key=lambda c: c.monthly))


def with_break_even(option: Option, apis: Sequence[ApiCost], rent: Option | None) -> Option:
    if option.setup.kind == "rent":
        return option
    pairs = [(a.api.name, break_even_month(option.purchase, option.running, a.monthly)) for a in apis]
    if rent is not None:
        pairs.append((rent.setup.name, break_even_month(option.purchase, option.running, rent.running)))
    return replace(option, break_even=tuple(pairs))


def pick_reason(pick: Option | None, targets: Targets, money: Money, months: int) -> str:
    if pick is None:
        return (
            f"No setup meets {targets.describe()} at the peak; relax the targets, pick a "
            "smaller model, or see the setups that come closest (--all)."
        )
    cap = pick.capacity
    boxes = f"{pick.boxes} boxes" if pick.boxes > 1 else "one box"
    return (
        f"{pick.setup.label}, the cheapest {months // 12}-year total ({money.fmt(pick.total)}) that meets "
        f"the targets at the peak: {boxes} at {cap.quant}, {pick.peak_utilisation:.0%} busy then"
        + (" (oversized, but nothing cheaper here meets the targets)" if pick.oversized else "")
        + "."
    )


def plan(
    bought: Sequence[tuple[Setup, Capacity]],
    rented: Sequence[tuple[Setup, Capacity]],
    apis: Sequence[ApiPrice],
    workload: Workload,
    targets: Targets,
    params: CostParams,
    money: Money,
    *,
    growth: float | None = None,
) -> CostReport:
    """Cost every setup for ``workload`` and choose; capacities are computed once, outside."""
    api = api_costs(apis, workload, money)
    rentals = rank([cost_option(s, c, workload, params, money) for s, c in rented])
    rent = next((o for o in rentals if o.meets), None)
    options = rank(
        [with_break_even(cost_option(s, c, workload, params, money), api, rent) for s, c in bought]
    )
    pick = next((o for o in options if o.meets), None)
    report = CostReport(
        workload=workload,
        targets=targets,
        params=params,
        money=money,
        options=options,
        rentals=rentals,
        apis=api,
        pick=pick,
        reason=pick_reason(pick, targets, money, params.horizon_months),
    )
    if growth is not None and pick is not None:
        report = replace(report, growth=grow(report, bought, growth))
    return report


def grow(report: CostReport, bought: Sequence[tuple[Setup, Capacity]], rate: float) -> Growth:
    """When the pick runs out under a growing load, and what would carry the load at the horizon."""
    pick = report.pick
    assert pick is not None  # plan() calls this only with a pick
    horizon = report.params.horizon_months
    peak = report.workload.peak_rps
    per_box = pick.capacity.rps
    runs_out = months_until_full(pick.boxes * per_box, peak, rate, horizon)
    boxes_then = pick.boxes
    one_more: int | None = None
    if runs_out is not None:
        boxes_then = at_least_one(peak * (1 + rate) ** runs_out / per_box)
        one_more = months_until_full((pick.boxes + 1) * per_box, peak, rate, horizon)
    # what to plan for next: the load a year after the pick runs out (or at the horizon's end)
    month = min(runs_out + 12, horizon) if runs_out is not None else horizon
    factor = (1 + rate) ** month
    later = report.workload.scaled(factor)
    later_options = rank(
        [cost_option(s, c, later, report.params, report.money) for s, c in bought if c.meets]
    )
    return Growth(
        rate=rate,
        runs_out=runs_out,
        boxes_then=boxes_then,
        lasts_with_one_more=one_more,
        later_month=month,
        later_pick=later_options[0] if later_options else None,
        later_factor=factor,
    )
