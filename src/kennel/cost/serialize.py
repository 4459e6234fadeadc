"""The cost report as JSON for scripts (kennel.cost/v1), and its chart as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kennel.cost.capacity import Capacity, stream_tok_s, ttft_p95
from kennel.cost.money import cumulative
from kennel.cost.plan import CostReport, Growth, Option
from kennel.cost.prices import SectionAge
from kennel.cost.workload import Targets, Workload


def _r(x: float, digits: int = 4) -> float:
    return round(x, digits)


def capacity_dict(c: Capacity) -> dict[str, Any]:
    def at(tp: Any) -> dict[str, Any] | None:
        if tp is None:
            return None
        return {
            "parallel": tp.parallel,
            "prefill_tok_s": _r(tp.prefill_tok_s, 2),
            "decode_step_per_s": _r(tp.step_per_s, 3),
            "aggregate_tok_s": _r(tp.aggregate_tok_s, 2),
            "decode_tok_s_per_request": _r(tp.per_request_tok_s, 2),
            "stream_tok_s": _r(stream_tok_s(tp), 2),
            "compute_bound": tp.compute_bound,
            "ttft_p95_s": _r(ttft_p95(tp), 3),
            "requests_per_s": _r(tp.rps, 4),
            "calibrated": tp.calibrated,
        }

    return {
        "quant": c.quant,
        "replicas": c.replicas,
        "gpus_per_replica": c.gpus_per_replica,
        "max_parallel": c.max_parallel,
        "parallel": c.parallel,
        "meets_targets": c.meets,
        "requests_per_s": _r(c.rps),
        "one_request": at(c.single),
        "at_capacity": at(c.best) if c.meets else None,
        "reason": c.reason,
    }


def option_dict(o: Option) -> dict[str, Any]:
    s = o.setup
    return {
        "setup": s.name,
        "detail": s.detail,
        "kind": s.kind,
        "gpu": s.gpu,
        "gpu_count": s.gpu_count,
        "hardware": s.hardware.describe(),
        "capacity": capacity_dict(o.capacity),
        "boxes": o.boxes,
        "peak_utilisation": _r(o.peak_utilisation),
        "average_utilisation": _r(o.average_utilisation),
        "oversized": o.oversized,
        "idle_w": s.power.idle_w,
        "max_w": s.power.max_w,
        "purchase": _r(o.purchase, 2),
        "monthly": {
            "energy": _r(o.energy, 2),
            "upkeep": _r(o.upkeep, 2),
            "rent": _r(o.rent, 2),
            "running": _r(o.running, 2),
            "depreciation": _r(o.depreciation, 2),
            "all_in": _r(o.monthly, 2),
        },
        "total": _r(o.total, 2),
        "per_million_tokens": _r(o.per_million, 4),
        "break_even_month": {name: month for name, month in o.break_even},
    }


def workload_dict(w: Workload, t: Targets) -> dict[str, Any]:
    return {
        "users": w.users,
        "requests_per_user_day": w.requests_per_user_day,
        "requests_per_day": _r(w.requests_per_day, 2),
        "prompt_tokens": w.prompt_tokens,
        "output_tokens": w.output_tokens,
        "busy_hours": w.busy_hours,
        "days_per_month": w.days_per_month,
        "peak_factor": w.peak_factor,
        "input_tokens_per_month": round(w.input_tokens_per_month),
        "output_tokens_per_month": round(w.output_tokens_per_month),
        "busy_requests_per_s": _r(w.busy_rps, 5),
        "peak_requests_per_s": _r(w.peak_rps, 5),
        "month_requests_per_s": _r(w.month_rps, 6),
        "peak_in_flight": _r(w.peak_in_flight(t), 3),
        "targets": {"ttft_p95_s": t.ttft_p95_s, "min_tok_s": t.min_tok_s},
    }


def growth_dict(g: Growth) -> dict[str, Any]:
    return {
        "rate_per_month": g.rate,
        "runs_out_month": g.runs_out,
        "boxes_then": g.boxes_then,
        "one_more_box_lasts_to_month": g.lasts_with_one_more,
        "later_month": g.later_month,
        "later_load_factor": _r(g.later_factor, 3),
        "later_pick": option_dict(g.later_pick) if g.later_pick else None,
    }


def report_dict(r: CostReport) -> dict[str, Any]:
    p = r.params
    return {
        "currency": r.money.currency,
        "fx_per_price_unit": r.money.per_book_unit,
        "params": {
            "kwh_price": p.kwh_price,
            "pue": p.pue,
            "upkeep_per_year": p.upkeep_per_year,
            "lifetime_months": p.lifetime_months,
            "horizon_months": p.horizon_months,
        },
        "workload": workload_dict(r.workload, r.targets),
        "pick": option_dict(r.pick) if r.pick else None,
        "reason": r.reason,
        "options": [option_dict(o) for o in r.ranked],
        "failing": [option_dict(o) for o in r.failing],
        "oversized": [o.setup.name for o in r.ranked if o.oversized],
        "apis": [
            {
                "name": a.api.name,
                "monthly": _r(a.monthly, 2),
                "per_million_tokens": _r(a.per_million, 4),
                "source": a.api.source,
                "as_of": a.api.as_of.isoformat(),
            }
            for a in r.apis
        ],
        "rentals": [option_dict(o) for o in r.rentals],
        "rent": r.rent.setup.name if r.rent else None,
        "growth": growth_dict(r.growth) if r.growth else None,
    }


def ages_dict(origin: str, ages: tuple[SectionAge, ...]) -> dict[str, Any]:
    return {
        "prices": origin,
        "sections": [
            {
                "section": a.section,
                "rows": a.rows,
                "oldest": a.oldest.isoformat(),
                "newest": a.newest.isoformat(),
                "days_old": a.days_old,
            }
            for a in ages
        ],
    }


def chart(r: CostReport, path: Path) -> None:
    """Cumulative cost over the pick's lifetime: the pick, the cheapest API, the cheapest rental."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    months = r.params.lifetime_months
    xs = list(range(months + 1))
    fig, ax = plt.subplots(figsize=(9, 5))
    if r.pick is not None:
        ax.plot(xs, cumulative(r.pick.purchase, r.pick.running, months), label=f"buy: {r.pick.setup.label}")
    if r.cheapest_api is not None:
        ax.plot(xs, cumulative(0, r.cheapest_api.monthly, months), label=f"API: {r.cheapest_api.api.name}")
    if r.rent is not None:
        ax.plot(
            xs, cumulative(0, r.rent.running, months), label=f"rent: {r.rent.setup.label} x{r.rent.boxes}"
        )
    ax.set_xlabel("month")
    ax.set_ylabel(f"cumulative cost ({r.money.currency})")
    ax.set_title("kennel cost: what each way has cost by each month")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
