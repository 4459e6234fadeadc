"""`kennel cost`: the smallest setup that carries a team's load, and what it really costs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.table import Table

from kennel.catalog.recommend import FIRST_GPU, recommend
from kennel.catalog.resolve import resolve
from kennel.cli import hardware_opts as ho
from kennel.cli.output import console, print_json, status
from kennel.cost import capacity as cp
from kennel.cost import measured as ms
from kennel.cost.inputs import kwh_from, money_from, parse_share, workload_from
from kennel.cost.money import LIFETIME_YEARS, OVERSIZED, UPKEEP_PER_YEAR, CostParams
from kennel.cost.plan import CostReport, Option, plan
from kennel.cost.prices import LoadedPrices, load_prices, prices_age
from kennel.cost.serialize import ages_dict, chart, report_dict
from kennel.cost.setups import candidates, named, owned, rentals
from kennel.cost.workload import WORKING_DAYS, Targets, Workload
from kennel.errors import InvalidOptionError
from kennel.fit.estimate import default_run
from kennel.fit.speed import Calibration
from kennel.hardware.probe import probe
from kennel.hardware.profile import HardwareProfile
from kennel.hardware.whatif import what_if
from kennel.model.shape import ModelShape
from kennel.settings import KennelHome
from kennel.units import parse_count, parse_duration


def cost(
    setups: list[str] = typer.Argument(
        None, help="More setups for --compare: --compare '2x RTX 4090' '1x L40S' 'Mac Studio M2 Ultra 192G'."
    ),
    model: str | None = typer.Option(
        None, "--model", help="A catalog name, .gguf path or URL, or hf.co/OWNER/REPO (as `kennel fit`)."
    ),
    task: str | None = typer.Option(
        None, "--task", help="No --model: take `kennel recommend --task`'s first."
    ),
    lang: str | None = typer.Option(
        None, "--lang", help="No --model: take `kennel recommend --lang`'s first."
    ),
    users: int | None = typer.Option(None, "--users", min=1, help="People using it."),
    requests_per_user_day: float = typer.Option(
        20.0, "--requests-per-user-day", min=0.001, help="Requests each person sends on a working day."
    ),
    prompt_tokens: int = typer.Option(800, "--prompt-tokens", min=1, help="Prompt tokens per request."),
    output_tokens: int = typer.Option(300, "--output-tokens", min=1, help="Output tokens per request."),
    tokens_per_month: str | None = typer.Option(
        None, "--tokens-per-month", help="Instead of --users: IN,OUT tokens a month, e.g. 30M,10M."
    ),
    hours: float = typer.Option(8.0, "--hours", help="Busy hours a working day, when the requests come."),
    days: float = typer.Option(WORKING_DAYS, "--days", help="Working days a month."),
    peak_factor: float = typer.Option(
        3.0, "--peak-factor", help="The busiest minutes' rate over the busy hours' average."
    ),
    ttft_p95: str = typer.Option(
        "2s", "--ttft-p95", help="Time to first token, 95th percentile, at the peak."
    ),
    min_tok_s: float = typer.Option(
        15.0, "--min-tok-s", help="Slowest tokens/s a reply may stream at the peak."
    ),
    ctx: str | None = typer.Option(
        None, "--ctx", help="Context per request (default: kennel serve's, 8192)."
    ),
    quant: str | None = typer.Option(
        None,
        "--quant",
        help="Hold one quantization for every setup (default: the best of 4+ bits that fits).",
    ),
    max_parallel: int = typer.Option(
        cp.MAX_PARALLEL, "--max-parallel", min=1, max=512, help="Most requests one server decodes together."
    ),
    measured: bool = typer.Option(
        False, "--measured", help="Add this machine with its measured speeds (`kennel fit --measure`)."
    ),
    from_url: str | None = typer.Option(
        None,
        "--from",
        help="Add the machine behind a running `kennel serve` URL, at the speeds its /metrics show.",
    ),
    from_window: str = typer.Option(
        "10s", "--from-window", help="With --from: seconds between the two reads."
    ),
    machine: Path | None = typer.Option(
        None,
        "--hardware",
        help="With --measured/--from: that machine's `kennel hw --json` (default: this one).",
    ),
    prices: Path | None = typer.Option(
        None, "--prices", help="Your price file (a copy of data/prices.yaml)."
    ),
    show_age: bool = typer.Option(False, "--prices-age", help="Say how old the prices are, and stop."),
    kwh_price: float | None = typer.Option(
        None, "--kwh-price", min=0.0, help="Electricity per kWh in --currency (default: the price file's)."
    ),
    currency: str | None = typer.Option(
        None, "--currency", help="Print money in this currency (needs --fx)."
    ),
    fx: float | None = typer.Option(
        None, "--fx", help="Units of --currency per USD, e.g. --currency VND --fx 25400."
    ),
    site: str = typer.Option(
        "closet", "--site", help="Cooling: closet (office) or datacenter, from the price file."
    ),
    pue: float | None = typer.Option(None, "--pue", help="Cooling as a PUE factor (overrides --site)."),
    upkeep: str = typer.Option(
        f"{UPKEEP_PER_YEAR:.0%}", "--upkeep", help="Upkeep a year, share of purchase."
    ),
    lifetime: int = typer.Option(LIFETIME_YEARS, "--lifetime", min=1, max=10, help="Years until replaced."),
    growth: str | None = typer.Option(
        None, "--growth", help="Load growth, e.g. 20%/month: when the pick runs out."
    ),
    compare: str | None = typer.Option(
        None, "--compare", help="Only these setups, side by side (see SETUPS)."
    ),
    top: int = typer.Option(10, "--top", min=1, help="Setups to list."),
    show_all: bool = typer.Option(False, "--all", help="Also list the setups that miss the targets."),
    png: Path | None = typer.Option(
        None, "--png", help="Draw cumulative cost over the lifetime to this PNG."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Right-size the hardware for a workload and show its full cost against cloud APIs and rented GPUs.

    Every GPU in the price file at 1, 2, 4 or 8 per box, Apple machines, Jetson, DGX Spark and
    CPU servers are sized with `kennel fit`'s speed model at N requests at once; those that meet the
    latency targets at the peak are ranked by 3-year total cost (purchase, power with cooling, upkeep)
    and compared with cloud APIs and rented GPUs. Prices are list prices with their source and date
    (--prices-age); give your own with --prices.
    """
    loaded = load_prices(prices)
    if show_age:
        _print_ages(loaded, json_out=json_out)
        return
    named_setups = ([compare] if compare else []) + list(setups or [])
    if setups and not compare:
        raise InvalidOptionError(
            f"Unexpected argument {setups[0]!r}.",
            hint="Setups to compare follow --compare: --compare 'A' 'B'.",
        )
    book = loaded.book
    targets = Targets(ttft_p95_s=_duration("--ttft-p95", ttft_p95), min_tok_s=min_tok_s)
    load = workload_from(
        users=users,
        requests_per_user_day=requests_per_user_day,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        tokens_per_month=tokens_per_month,
        hours=hours,
        days=days,
        peak_factor=peak_factor,
    )
    money = money_from(book, currency, fx)
    kwh, tariff = kwh_from(book, money, kwh_price)
    params = CostParams(
        kwh_price=kwh,
        pue=pue if pue is not None else book.site(site).pue,
        upkeep_per_year=parse_share("--upkeep", upkeep),
        lifetime_months=lifetime * 12,
    )
    rate = parse_share("--growth", growth) if growth else None
    home = KennelHome.from_env()
    with status("Reading the model…", enabled=not json_out):
        shape, ref, chosen_by = _model(model, task, lang)
    run = default_run(shape, ctx=parse_count(ctx) if ctx else None).validated(shape)

    def size(hw: HardwareProfile, w: Workload, t: Targets, cal: Calibration | None) -> cp.Capacity:
        return cp.size_box(
            shape,
            hw,
            run,
            prompt_tokens=w.prompt_tokens,
            output_tokens=w.output_tokens,
            targets=t,
            calibration=cal,
            quant=quant,
            max_parallel=max_parallel,
        )

    buy = [named(book, n) for n in named_setups] if named_setups else list(candidates(book))
    cals: dict[str, Calibration] = {}
    notes: list[str] = []
    if machine is not None and not (measured or from_url):
        raise InvalidOptionError(
            "--hardware names the machine --measured or --from measured.",
            hint="Add --measured (its `kennel fit --measure` speeds) or --from URL (its server's).",
        )
    if measured or from_url:
        hw = ho.load_profile(machine) if machine else probe(home)
        if from_url:
            window = _duration("--from-window", from_window)
            with status(f"Reading {from_url}/metrics twice, {window:g} s apart…", enabled=not json_out):
                got = ms.from_server(from_url, model=ref, window_s=window, hw=hw, load=load, size=size)
        else:
            got = ms.saved(home, hw, ref)
        notes.append(f"measured: {got.line}")
        mine = owned(book, hw)
        cals = ms.calibrations(mine, buy, got.calibration)
        buy.insert(0, mine)
    with status(f"Sizing {len(buy)} setups…", enabled=not json_out):
        sized = [(s, size(s.hardware, load, targets, cals.get(s.name))) for s in buy]
        rented = [(s, size(s.hardware, load, targets, None)) for s in rentals(book)]
    report = plan(sized, rented, book.apis, load, targets, params, money, growth=rate)
    if png is not None:
        chart(report, png)
    if json_out:
        doc = report_dict(report)
        doc["model"] = {"name": shape.name, "ref": ref, "chosen_by": chosen_by}
        doc["prices"] = loaded.origin
        doc["electricity"] = tariff
        doc["notes"] = notes
        if png is not None:
            doc["png"] = str(png)
        print_json("cost", doc)
        return
    _render(
        report,
        shape,
        chosen_by,
        loaded,
        site if pue is None else None,
        tariff,
        notes,
        top=top,
        show_all=show_all,
        compared=bool(named_setups),
    )
    if png is not None:
        console().print(f"Chart: {png}")


# ---- inputs -----------------------------------------------------------------------------------------


def _duration(flag: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidOptionError(
            f"{flag} {text!r} is not a duration.", hint="Write it like 2s or 1.5."
        ) from exc


def _model(model: str | None, task: str | None, lang: str | None) -> tuple[ModelShape, str, str]:
    """The model's shape, how to name it again (`kennel fit NAME`, a server's model), who chose it."""
    if model is not None:
        return resolve(model).shape, model, "--model"
    if task is None and lang is None:
        raise InvalidOptionError(
            "Which model? Give --model, or --task/--lang to let `kennel recommend` choose.",
            hint="For example --model qwen2.5-7b, or --task chat --lang vi.",
        )
    picks = recommend(what_if(gpu=FIRST_GPU), task=task, lang=lang, top=1, with_upgrade=False).picks
    if not picks:
        raise InvalidOptionError(
            "`kennel recommend` found no catalog model for that task and language.", hint="Give --model."
        )
    flags = " ".join(f"--{k} {v}" for k, v in (("task", task), ("lang", lang)) if v)
    first = picks[0].entry
    return first.shape(), first.name, f"`kennel recommend {flags} --gpu '{FIRST_GPU}'` picks {first.name}"


# ---- output -----------------------------------------------------------------------------------------


def _print_ages(loaded: LoadedPrices, *, json_out: bool) -> None:
    ages = prices_age(loaded.book, dt.date.today())
    if json_out:
        print_json("cost-prices", ages_dict(loaded.origin, ages))
        return
    t = Table(title=f"Prices: {loaded.origin} (list prices to verify)")
    for col in ("section", "rows", "oldest", "newest", "oldest is"):
        t.add_column(col, justify="right" if col in ("rows", "oldest is") else "left")
    for a in ages:
        t.add_row(
            a.section, str(a.rows), a.oldest.isoformat(), a.newest.isoformat(), f"{a.days_old} days old"
        )
    console().print(t)
    console().print(
        "Every row names its source URL; check the oldest first, and override with --prices FILE."
    )


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 else f"{x:.1%}"


def _month(m: int | None, life: int) -> str:
    """A break-even month; one past the machine's life is as good as never, and says so."""
    if m is None:
        return "never"
    return f"month {m}" if m <= life else f"month {m} (> life)"


def _row(o: Option, r: CostReport, api: str | None, rent: str | None) -> list[str]:
    fmt, life = r.money.fmt, r.params.lifetime_months
    c = o.capacity
    busy = f"{_pct(o.peak_utilisation)} / {_pct(o.average_utilisation)}"
    if o.oversized:
        busy += " [yellow]oversized[/]"
    seq = f"{c.sequences}" + (f" ({c.replicas}x{c.parallel})" if c.replicas > 1 else "")
    return [
        o.setup.label,
        c.quant or "-",
        str(o.boxes),
        seq,
        fmt(o.purchase),
        fmt(o.running),
        fmt(o.total),
        fmt(o.per_million, small=True),
        busy,
        _month(o.break_even_with(api), life) if api else "-",
        _month(o.break_even_with(rent), life) if rent else "-",
    ]


def _render(
    r: CostReport,
    shape: ModelShape,
    chosen_by: str,
    loaded: LoadedPrices,
    site: str | None,
    tariff: str,
    notes: Sequence[str],
    *,
    top: int,
    show_all: bool,
    compared: bool,
) -> None:
    c = console()
    fmt, p = r.money.fmt, r.params
    who = f" ({chosen_by})" if chosen_by != "--model" else ""
    c.print(f"[bold]{shape.name}[/]{who}")
    for line in r.workload.lines(r.targets):
        c.print(f"  {line}")
    c.print(f"  targets at the peak: {r.targets.describe()}")
    cooling = f"PUE {p.pue:g}" + (f" ({site})" if site else "")
    c.print(
        f"  money in {r.money.currency}: electricity {fmt(p.kwh_price, small=True)}/kWh ({tariff}), "
        f"{cooling}, upkeep {p.upkeep_per_year:.0%} a year, lifetime {p.lifetime_months // 12} years"
    )
    c.print(f"  prices: {loaded.origin}, list prices to verify (`kennel cost --prices-age` says how old)")
    for line in notes:
        c.print(f"  {line}")
    api = r.cheapest_api.api.name if r.cheapest_api else None
    rent = r.rent.setup.name if r.rent else None
    shown = list(r.ranked if not compared else r.options)[: top if not compared else None]
    t = Table(
        title=f"Setups that meet the targets, by {p.horizon_months // 12}-year total"
        if not compared
        else "Compared"
    )
    years = p.horizon_months // 12
    heads = ("setup", "quant", "boxes", "at once", "purchase", "run/month", f"{years}-yr total", "per 1M tok")
    for h in (*heads, "busy peak/avg", "b-e API", "b-e rent"):
        t.add_column(h, justify="left" if h in ("setup", "quant") else "right", no_wrap=h == "setup")
    for o in shown:
        row = _row(o, r, api, rent)
        if not o.meets:
            row[8] = "[red]misses[/]"
        t.add_row(*row)
    c.print(t)
    c.print(
        "  at once: requests decoded together within the targets (replicas x each); run/month: power with "
        "cooling, and upkeep;\n  busy: share of capacity used at the peak / over the month; b-e: break-even "
        f"against the cheapest API ({api or 'none'}) and renting ({rent or 'none'})"
    )
    c.print(f"[bold]Pick:[/] {r.reason}")
    if r.pick is not None:
        pk = r.pick
        c.print(
            f"  {pk.boxes} x {fmt(pk.purchase / pk.boxes)}; a month: power and cooling "
            f"{fmt(pk.energy, small=True)}, "
            f"upkeep {fmt(pk.upkeep, small=True)}, depreciation {fmt(pk.depreciation, small=True)} = "
            f"{fmt(pk.monthly, small=True)} ({fmt(pk.per_million, small=True)} per million tokens)"
        )
        for a in r.apis:
            c.print(
                f"  vs {a.api.name}: {fmt(a.monthly, small=True)} a month "
                f"({fmt(a.per_million, small=True)}/1M); "
                f"break-even {_month(pk.break_even_with(a.api.name), p.lifetime_months)}"
            )
    if r.rent is not None:
        ro = r.rent
        be = _month(r.pick.break_even_with(ro.setup.name), p.lifetime_months) if r.pick else "-"
        c.print(
            f"  vs renting {ro.boxes} x {ro.setup.name} around the clock: {fmt(ro.running)} a month; "
            f"break-even {be}"
        )
    oversized = [o for o in r.ranked if o.oversized]
    if oversized and not compared:
        c.print(
            f"Oversized (under {OVERSIZED:.0%} busy at the peak): {len(oversized)} of the {len(r.ranked)} "
            "setups that meet the targets; they would idle."
        )
    if r.growth is not None and r.pick is not None:
        _render_growth(r)
    failing = r.failing
    if failing and not compared:
        if show_all:
            c.print(f"Missing the targets ({len(failing)}):")
            for o in failing:
                c.print(f"  {o.setup.label}: {o.capacity.reason or 'no fit'}")
        else:
            c.print(f"{len(failing)} setups miss the targets or do not fit (--all lists them).")


def _boxes(n: int, o: Option) -> str:
    return f"{n} box{'es' if n != 1 else ''} of {o.setup.label}"


def _render_growth(r: CostReport) -> None:
    g, pk = r.growth, r.pick
    assert g is not None and pk is not None
    c = console()
    h = r.params.horizon_months
    if g.runs_out is None:
        c.print(
            f"[bold]Growth[/] {g.rate:.0%}/month: {_boxes(pk.boxes, pk)} carries the load past month {h}."
        )
        return
    one_more = (
        f"one more box lasts until month {g.lasts_with_one_more}"
        if g.lasts_with_one_more is not None
        else f"one more box lasts past month {h}"
    )
    c.print(
        f"[bold]Growth[/] {g.rate:.0%}/month: the peak outgrows {_boxes(pk.boxes, pk)} in month {g.runs_out} "
        f"({g.boxes_then} needed then); {one_more}."
    )
    if g.later_pick is not None:
        lp = g.later_pick
        c.print(
            f"  For month {g.later_month}'s load ({g.later_factor:.1f}x today's) the cheapest is "
            f"{_boxes(lp.boxes, lp)} ({r.money.fmt(lp.total)} over {h // 12} years at that load)."
        )
