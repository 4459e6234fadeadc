"""The Checkups page: the trend of each model version (pass rate, p50 latency, TTFT, tokens/s) with
regressions marked and their likely cause, the last runs with their failed assertions, the alerts
sent and those not delivered, and an admin "Run now" button.

Everything read here is what `kennel checkup report` reads: ``report.report`` over
KENNEL_HOME/checkups.db (the same baselines, bands and cause matching), and alerts.db.

"Run now" is the scheduler's run, not a copy of it: ``scheduler.run_once`` (prompts over the
server's own OpenAI API on loopback, rows to results.csv and checkups.db, alert streaks and
delivery) in a worker thread, then ``metrics.record_checkup`` as ``_scheduled_checkups`` does.
The API key it sends is the signed-in admin's own: the console keeps the key a session was opened
with in the server's memory (console/session.py), so the run is authenticated, rate limited and
logged as that admin, like any other request; no extra key is minted and nothing new can be
replayed. An open console (no keys on loopback) sends none, as the API wants none.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import Response
from markupsafe import Markup

from kennel.checkup import report
from kennel.checkup.alerts import AlertState, alerts_path
from kennel.checkup.report import Regression, RunSummary
from kennel.checkup.results import connect, db_path
from kennel.checkup.runner import RunResult
from kennel.checkup.scheduler import Scheduled, run_once
from kennel.console.i18n import Gettext
from kennel.console.pages import home_of, redirect, short_time, translator
from kennel.console.render import page
from kennel.console.session import Admin, CsrfChecked, Viewer, may_see, sees_all, session_of
from kennel.console.svg import Marker, Series, line_chart
from kennel.server.metrics import CheckupOutcome
from kennel.server.settings import ServeSettings
from kennel.server.state import AppState
from kennel.settings import KennelHome

router = APIRouter()
log = logging.getLogger("kennel.console")

LAST_RUNS = 10
RECENT_ALERTS = 20
# (metric as report.py names it, chart id)
METRICS: tuple[tuple[str, str], ...] = (
    ("pass_rate", "pass-rate"),
    ("latency", "latency"),
    ("ttft", "ttft"),
    ("tokens_per_s", "tokens-per-s"),
)


# ---- view models --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chart:
    id: str  # pass-rate | latency | ttft | tokens-per-s
    title: str  # translated, shown under the chart
    svg: Markup
    points: int


@dataclass(frozen=True)
class RegressionRow:
    at: str
    version: str
    metric: str  # translated
    baseline: str
    value: str
    cause: str  # translated sentence


@dataclass(frozen=True)
class ModelTrend:
    model: str
    runs: int
    versions: tuple[str, ...]
    charts: tuple[Chart, ...]
    regressions: tuple[RegressionRow, ...]


@dataclass(frozen=True)
class FailedPrompt:
    prompt_id: str
    assertions: tuple[str, ...]
    error: str


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started_at: str
    model: str
    version: str
    suite: str
    passed: int
    total: int
    failed: tuple[FailedPrompt, ...]


@dataclass(frozen=True)
class DeliveryRow:
    channel: str
    ok: bool
    attempts: int
    error: str


@dataclass(frozen=True)
class AlertRow:
    at: str
    kind: str  # failing | recovered
    subject: str
    text: str
    deliveries: tuple[DeliveryRow, ...]  # empty: nothing was tried (no channel configured)


@dataclass(frozen=True)
class CheckupsView:
    trends: tuple[ModelTrend, ...]
    runs: tuple[RunRow, ...]
    alerts: tuple[AlertRow, ...]
    undelivered: tuple[AlertRow, ...]


@dataclass
class CheckupJobs:
    """Runs started from the console, by model; kept on ``app.state`` (one per app)."""

    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # model -> why its last run could not run

    @classmethod
    def of(cls, app: FastAPI) -> CheckupJobs:
        jobs = getattr(app.state, "console_checkups", None)
        if not isinstance(jobs, CheckupJobs):
            jobs = cls()
            app.state.console_checkups = jobs
        return jobs

    def busy(self, model: str) -> bool:
        task = self.running.get(model)
        return task is not None and not task.done()


# ---- reading (worker thread) ----------------------------------------------------------------------
def _when(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _version_label(version: str) -> str:
    """'<sha 12>@3' -> '@3'; a model outside the store has no version."""
    return "@" + version.rsplit("@", 1)[1] if "@" in version else version or "-"


def _value(metric: str, s: RunSummary) -> float | None:
    v = {
        "pass_rate": s.pass_rate * 100,  # shown in percent
        "latency": s.latency_p50_ms,
        "ttft": s.ttft_p50_ms,
        "tokens_per_s": s.tokens_per_s,
    }[metric]
    return None if v is None else float(v)


def _fmt(metric: str, v: float) -> str:
    """A value as report.py keeps it (a pass rate is 0..1), for people."""
    if metric == "pass_rate":
        return f"{v:.0%}"
    if metric == "tokens_per_s":
        return f"{v:.1f}"
    return f"{v:,.0f} ms"


def _names(_: Gettext) -> dict[str, tuple[str, str]]:
    """metric -> (title, unit), translated."""
    return {
        "pass_rate": (_("Pass rate"), "%"),
        "latency": (_("p50 latency"), "ms"),
        "ttft": (_("p50 time to first token"), "ms"),
        "tokens_per_s": (_("Tokens per second"), _("tok/s")),
    }


def _cause(g: Regression, _: Gettext) -> str:
    c = g.cause
    if c is None:
        return _("No model change was recorded before it.")
    version = c.version_after if c.version_after is not None else c.version_before
    actions = {
        "pull": _("new download"),
        "import": _("new import"),
        "create": _("profile changed"),
        "tag": _("tag moved"),
        "rollback": _("rolled back"),
    }
    text = _(
        "Since version %(version)s: %(what)s by %(who)s, %(when)s.",
        version=version,
        what=actions.get(c.action, c.action),
        who=c.actor,
        when=short_time(c.at),
    )
    return text + (" " + _("Reason: %(why)s", why=c.message) if c.message else "")


def _trend(model: str, runs: list[RunSummary], regs: list[Regression], _: Gettext) -> ModelTrend:
    mine = [r for r in runs if r.model == model]
    versions = tuple(dict.fromkeys(r.model_version for r in mine))
    names = _names(_)
    charts = []
    for metric, chart_id in METRICS:
        series = [
            Series(
                _version_label(v),
                [(_when(r.started_at), _value(metric, r)) for r in mine if r.model_version == v],
            )
            for v in versions
        ]
        markers = [
            Marker(
                _when(g.run.started_at),
                _("Regression: %(baseline)s → %(value)s. %(cause)s", **_change(g), cause=_cause(g, _)),
            )
            for g in regs
            if g.run.model == model and g.metric == metric
        ]
        title, unit = names[metric]
        svg = line_chart(
            series,
            title=f"{model}: {title}",
            y_label=unit,
            markers=markers,
            empty_label=_("No data yet"),
            y_range=(0.0, 100.0) if metric == "pass_rate" else None,
        )
        points = sum(1 for s in series for _x, y in s.points if y is not None)
        charts.append(Chart(chart_id, title, svg, points))
    rows = tuple(
        RegressionRow(
            at=short_time(g.run.started_at),
            version=_version_label(g.run.model_version),
            metric=names[g.metric][0],
            cause=_cause(g, _),
            **_change(g),
        )
        for g in reversed(regs)
        if g.run.model == model
    )
    return ModelTrend(model, len(mine), tuple(_version_label(v) for v in versions), tuple(charts), rows)


def _change(g: Regression) -> dict[str, str]:
    return {"baseline": _fmt(g.metric, g.baseline), "value": _fmt(g.metric, g.value)}


def _last_runs(conn: sqlite3.Connection, limit: int) -> tuple[RunRow, ...]:
    """The newest runs in checkups.db (schema: checkup/results.py), with their failed prompts."""
    import json

    runs = conn.execute(
        "SELECT run_id, started_at, suite, model, model_version FROM runs ORDER BY rowid DESC LIMIT ?",
        (limit,),
    ).fetchall()
    out = []
    for r in runs:
        results = conn.execute(
            "SELECT prompt_id, passed, failed_assertions, error FROM results WHERE run_id = ? ORDER BY ts",
            (r["run_id"],),
        ).fetchall()
        failed = tuple(
            FailedPrompt(x["prompt_id"], tuple(json.loads(x["failed_assertions"] or "[]")), x["error"] or "")
            for x in results
            if not x["passed"]
        )
        out.append(
            RunRow(
                run_id=r["run_id"],
                started_at=short_time(r["started_at"]),
                model=r["model"],
                version=_version_label(r["model_version"]),
                suite=r["suite"],
                passed=sum(1 for x in results if x["passed"]),
                total=len(results),
                failed=failed,
            )
        )
    return tuple(out)


def _alerts(home: KennelHome) -> tuple[tuple[AlertRow, ...], tuple[AlertRow, ...]]:
    if not alerts_path(home).is_file():  # never create alerts.db just to show it is empty
        return (), ()
    with AlertState.open(home) as state:
        recent = tuple(
            AlertRow(
                at=short_time(a.at),
                kind=a.kind,
                subject=a.subject,
                text=a.text,
                deliveries=_deliveries([(d.channel, d.ok, d.error) for d in attempts]),
            )
            for a, attempts in state.recent(RECENT_ALERTS)
        )
        undelivered = tuple(
            AlertRow(
                at=short_time(u.alert.at),
                kind=u.alert.kind,
                subject=u.alert.subject,
                text=u.alert.text,
                deliveries=(DeliveryRow(u.channel, False, u.attempts, u.error or ""),) if u.channel else (),
            )
            for u in state.undelivered()
        )
    return recent, undelivered


def _deliveries(attempts: list[tuple[str, bool, str | None]]) -> tuple[DeliveryRow, ...]:
    """One row per channel: delivered if any attempt was, with the number of attempts."""
    by_channel: dict[str, DeliveryRow] = {}
    for channel, ok, error in attempts:
        before = by_channel.get(channel)
        n = (before.attempts if before else 0) + 1
        by_channel[channel] = DeliveryRow(channel, ok or bool(before and before.ok), n, error or "")
    return tuple(by_channel.values())


def read_checkups(home: KennelHome, _: Gettext) -> CheckupsView:
    runs: list[RunSummary] = []
    regs: list[Regression] = []
    last: tuple[RunRow, ...] = ()
    if db_path(home).is_file():  # no checkup has run yet: nothing to read, nothing to create
        conn = connect(db_path(home))
        try:
            runs, regs = report.report(home, conn)
            last = _last_runs(conn, LAST_RUNS)
        finally:
            conn.close()
    models = sorted({r.model for r in runs})
    trends = tuple(_trend(m, runs, regs, _) for m in models)
    recent, undelivered = _alerts(home)
    return CheckupsView(trends, last, recent, undelivered)


# ---- running one now -----------------------------------------------------------------------------
def base_url(settings: ServeSettings) -> str:
    """This server's own API, as the scheduler reaches it (server/app.py ``_scheduled_checkups``)."""
    host = "127.0.0.1" if settings.is_loopback() or settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}/v1"


def job_for(settings: ServeSettings, model: str, api_key: str | None) -> Scheduled:
    """The model's scheduled checkup (its suite, alert channels and threshold) if it has one, so a
    run started here counts in the same failure streak; else the default suite, no channels."""
    entry = next((c for c in settings.checkups if (c.model or model) == model), None)
    if entry is None:
        return Scheduled(cron="", model=model, api_key=api_key)
    return Scheduled(
        cron=entry.cron,
        model=model,
        suite=entry.suite,
        notify=tuple(entry.notify),
        fail_threshold=entry.fail_threshold,
        api_key=api_key,
    )


async def _run_now(state: AppState, jobs: CheckupJobs, job: Scheduled, base: str, home: KennelHome) -> None:
    run: RunResult | None = None
    try:
        run = await asyncio.to_thread(run_once, job, base, home)
        jobs.errors.pop(job.model, None)
    except Exception as exc:  # a broken suite file: shown on the page, the server goes on
        log.exception("checkup of %s started from the console failed to run", job.model)
        jobs.errors[job.model] = str(exc) or type(exc).__name__
    finally:
        suite = run.info.suite if run else (job.suite.stem if job.suite else "default")
        state.metrics.record_checkup(CheckupOutcome.of(job.model, suite, run))
        jobs.running.pop(job.model, None)


def _served(request: Request) -> list[str]:
    state: AppState = request.app.state.kennel
    return list(state.pool.slots)


def _for_viewer(request: Request, view: CheckupsView) -> CheckupsView:
    """A key limited to some models sees their trends and runs only, and no alerts (they may be
    about any model), as /v1/models lists only the models a key may use."""
    if sees_all(request):
        return view
    trends = tuple(t for t in view.trends if may_see(request, t.model))
    return CheckupsView(trends, tuple(r for r in view.runs if may_see(request, r.model)), (), ())


@router.get("/checkups")
async def checkups(request: Request, user: Viewer) -> Response:
    _ = translator(request)
    view = _for_viewer(request, await asyncio.to_thread(read_checkups, home_of(request), _))
    jobs = CheckupJobs.of(request.app)
    served = [m for m in _served(request) if may_see(request, m)]
    running = [m for m in served if jobs.busy(m)]
    notice = None
    started = request.query_params.get("started")
    if started in served:  # only a model served here is named back on the page
        notice = _("Checkup of %(model)s started.", model=started)
    return page(
        request,
        "checkups.html",
        {
            "view": view,
            "served": served,
            "running": running,
            "errors": {m: e for m, e in jobs.errors.items() if may_see(request, m)},
            "notice": notice,
            "error": None,
        },
    )


@router.post("/checkups/run", dependencies=[CsrfChecked])
async def run_now(request: Request, user: Admin, model: Annotated[str, Form()] = "") -> Response:
    _ = translator(request)
    served = _served(request)
    name = model or (served[0] if served else "")
    if name not in served:
        view = await asyncio.to_thread(read_checkups, home_of(request), _)
        jobs = CheckupJobs.of(request.app)
        error = _("%(model)s is not served here.", model=name)
        context = {"view": view, "served": served, "running": [], "errors": dict(jobs.errors)}
        return page(request, "checkups.html", {**context, "notice": None, "error": error}, status_code=400)
    jobs = CheckupJobs.of(request.app)
    if not jobs.busy(name):
        state: AppState = request.app.state.kennel
        job = job_for(state.settings, name, session_of(request).secret)
        jobs.running[name] = asyncio.create_task(
            _run_now(state, jobs, job, base_url(state.settings), home_of(request))
        )
    return redirect(request, "/ui/checkups", started=name)
