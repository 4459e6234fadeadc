"""Properties that must hold for any load and any prices: more load, dearer prices or hungrier
hardware never make anything cheaper, and a setup that misses the latency targets is never the
pick."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from kennel.cost.capacity import from_curve, meets
from kennel.cost.money import CostParams, Money, Power
from kennel.cost.plan import cost_option, plan
from kennel.cost.setups import Setup
from kennel.cost.workload import Targets, Workload
from kennel.fit.throughput import Throughput
from kennel.hardware.whatif import what_if

HW = what_if(cpu_cores=4)
rates = st.floats(min_value=1.0, max_value=100.0)
curves = st.lists(
    st.tuples(st.floats(min_value=1.0, max_value=200.0), st.floats(min_value=50.0, max_value=20_000.0)),
    min_size=1,
    max_size=6,
)


def curve_of(points: list[tuple[float, float]], prompt: int, output: int) -> list[Throughput]:
    """A throughput curve: step rates that fall as the batch grows, as the speed model's do."""
    steps = sorted((s for s, _ in points), reverse=True)
    prefill = points[0][1]
    return [Throughput(n, prompt, output, prefill, step, False) for n, step in enumerate(steps, 1)]


workloads = st.builds(
    Workload,
    requests_per_day=st.floats(min_value=1.0, max_value=1e6),
    prompt_tokens=st.integers(min_value=1, max_value=4000),
    output_tokens=st.integers(min_value=1, max_value=2000),
    busy_hours=st.floats(min_value=1.0, max_value=24.0),
    peak_factor=st.floats(min_value=1.0, max_value=10.0),
)
params = st.builds(
    CostParams,
    kwh_price=st.floats(min_value=0.0, max_value=1.0),
    pue=st.floats(min_value=1.0, max_value=3.0),
    upkeep_per_year=st.floats(min_value=0.0, max_value=0.5),
    lifetime_months=st.integers(min_value=12, max_value=120),
)
targets = st.builds(
    Targets,
    ttft_p95_s=st.floats(min_value=0.2, max_value=10.0),
    min_tok_s=st.floats(min_value=1.0, max_value=50.0),
)


def box(price: float, idle: float, top: float) -> Setup:
    return Setup(name="box", kind="buy", hardware=HW, price=price, power=Power(idle, idle + top))


@settings(max_examples=200, deadline=None, database=None)
@given(
    w=workloads,
    p=params,
    t=targets,
    points=curves,
    more=st.floats(min_value=1.0, max_value=50.0),
    price=st.floats(min_value=0.0, max_value=1e5),
    idle=st.floats(min_value=0.0, max_value=2000.0),
    top=st.floats(min_value=0.0, max_value=5000.0),
)
def test_cost_never_falls_when_the_load_rises(
    w: Workload,
    p: CostParams,
    t: Targets,
    points: list[tuple[float, float]],
    more: float,
    price: float,
    idle: float,
    top: float,
) -> None:
    cap = from_curve(curve_of(points, w.prompt_tokens, w.output_tokens), t, quant="Q4_K_M")
    s = box(price, idle, top)
    now = cost_option(s, cap, w, p, Money())
    later = cost_option(s, cap, w.scaled(more), p, Money())
    assert later.total >= now.total * (1 - 1e-9)
    assert later.monthly >= now.monthly * (1 - 1e-9)
    assert later.boxes >= now.boxes


@settings(max_examples=200, deadline=None, database=None)
@given(
    w=workloads,
    p=params,
    t=targets,
    points=curves,
    price=st.floats(min_value=0.0, max_value=1e5),
    idle=st.floats(min_value=0.0, max_value=2000.0),
    top=st.floats(min_value=0.0, max_value=5000.0),
    up=st.floats(min_value=1.0, max_value=10.0),
    which=st.sampled_from(["price", "idle", "top", "kwh", "pue", "upkeep"]),
)
def test_cost_never_falls_when_a_price_or_the_power_rises(
    w: Workload,
    p: CostParams,
    t: Targets,
    points: list[tuple[float, float]],
    price: float,
    idle: float,
    top: float,
    up: float,
    which: str,
) -> None:
    cap = from_curve(curve_of(points, w.prompt_tokens, w.output_tokens), t, quant="Q4_K_M")
    base = cost_option(box(price, idle, top), cap, w, p, Money())
    s2, p2 = box(price, idle, top), p
    if which == "price":
        s2 = box(price * up, idle, top)
    elif which == "idle":
        s2 = box(price, idle * up, top)
    elif which == "top":
        s2 = box(price, idle, top * up)
    elif which == "kwh":
        p2 = replace(p, kwh_price=p.kwh_price * up)
    elif which == "pue":
        p2 = replace(p, pue=min(3.0, p.pue * up))
    else:
        p2 = replace(p, upkeep_per_year=min(1.0, p.upkeep_per_year * up))
    dearer = cost_option(s2, cap, w, p2, Money())
    assert dearer.total >= base.total * (1 - 1e-9)
    assert dearer.per_million >= base.per_million * (1 - 1e-9)


@settings(max_examples=200, deadline=None, database=None)
@given(
    w=workloads,
    p=params,
    t=targets,
    boxes=st.lists(
        st.tuples(curves, st.floats(min_value=0.0, max_value=1e5), st.floats(min_value=0.0, max_value=500.0)),
        min_size=1,
        max_size=6,
    ),
    more=st.floats(min_value=1.0, max_value=20.0),
)
def test_the_pick_meets_the_targets_and_costs_more_under_more_load(
    w: Workload,
    p: CostParams,
    t: Targets,
    boxes: list[tuple[list[tuple[float, float]], float, float]],
    more: float,
) -> None:
    bought = []
    for i, (points, price, watts) in enumerate(boxes):
        curve = curve_of(points, w.prompt_tokens, w.output_tokens)
        setup = replace(box(price, watts / 10, watts), name=f"box {i}")
        bought.append((setup, from_curve(curve, t, quant="Q4_K_M")))
    report = plan(bought, [], [], w, t, p, Money())
    pick = report.pick
    if pick is None:
        assert all(not c.meets for _, c in bought)
        return
    # the pick meets the targets at the batch it is sized for, with every smaller batch
    cap = pick.capacity
    assert pick.meets and cap.best is not None and meets(cap.best, t)
    assert all(meets(tp, t) for tp in cap.curve[: cap.parallel])
    assert all(o.total >= pick.total * (1 - 1e-9) for o in report.ranked)
    assert all(o.setup.name != pick.setup.name for o in report.failing)
    later = plan(bought, [], [], w.scaled(more), t, p, Money()).pick
    assert later is not None and later.total >= pick.total * (1 - 1e-9)
