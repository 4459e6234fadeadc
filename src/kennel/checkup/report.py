"""`kennel checkup report`: trends per model version, regressions, and what changed before them.

Each run is summarised (pass rate, p50 latency, p50 time to first token, median tokens/s). A run
is a regression when a metric leaves the band of its baseline: a pinned run, or the rolling
median of the previous runs of the same model with a MAD band (robust to one odd run; small
on-prem machines have noisy timings, so the band is relative as well as statistical). Every
flagged run is matched to the store's version-history event that preceded it, so the report
says what most likely caused it.
"""

from __future__ import annotations

import sqlite3
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kennel.errors import InvalidOptionError, NotInStoreError
from kennel.settings import KennelHome
from kennel.store.names import parse_ref
from kennel.store.registry import AuditEntry, Store

WINDOW = 10  # previous runs forming a rolling baseline
MIN_BASELINE = 3  # runs needed before anything is flagged
MAD_K = 3.0  # band half-width in MADs
MIN_RATIO = 1.5  # and at least this relative change for timing metrics
MIN_DELTA_MS = 50.0  # and at least this absolute change: a few ms of jitter is not a regression
# tokens/s: at least this much more time per token (a 2-token answer timed in ms is all jitter)
MIN_DELTA_TOKEN_MS = 5.0


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    started_at: str
    suite: str
    model: str
    model_version: str
    prompts: int
    pass_rate: float
    latency_p50_ms: float | None
    ttft_p50_ms: float | None
    tokens_per_s: float | None


@dataclass(frozen=True)
class Regression:
    run: RunSummary
    metric: str  # latency | ttft | tokens_per_s | pass_rate
    value: float
    baseline: float
    cause: AuditEntry | None

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    def describe(self) -> str:
        names = {
            "latency": "p50 latency",
            "ttft": "p50 time to first token",
            "tokens_per_s": "tokens/s",
            "pass_rate": "pass rate",
        }
        if self.metric == "pass_rate":
            change = f"{names[self.metric]} {self.baseline:.0%} → {self.value:.0%}"
        else:
            change = (
                f"{names[self.metric]} ×{self.ratio:.1f}"
                if self.ratio >= 1
                else f"{names[self.metric]} ×{self.ratio:.2f}"
            )
        where = f"{self.run.model} run {self.run.run_id[:8]} ({self.run.started_at[:16]})"
        if self.cause is None:
            return f"{change} on {where}; no model change recorded before it"
        c = self.cause
        what = {
            "pull": "new download",
            "import": "new import",
            "create": "profile changed",
            "tag": "tag moved",
            "rollback": "rolled back",
        }.get(c.action, c.action)
        version = c.version_after if c.version_after is not None else c.version_before
        why = f", '{c.message}'" if c.message else ""
        return f"{change} since version {version}: {what} by {c.actor}, {c.at[:10]}{why} ({where})"


def parse_since(text: str | None, now: datetime | None = None) -> str | None:
    """'30d', '12h', '2w' or an ISO date → the ISO time to report from."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return (now - timedelta(seconds=int(text[:-1]) * units[text[-1]])).isoformat(timespec="seconds")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).isoformat(timespec="seconds")
    except ValueError as exc:
        raise InvalidOptionError(f"--since {text!r} is not like 30d, 12h, 2w or 2026-11-01.") from exc


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summaries(
    conn: sqlite3.Connection, *, since: str | None = None, model: str | None = None
) -> list[RunSummary]:
    where, args = ["1 = 1"], []
    if since:
        where.append("r.started_at >= ?")
        args.append(since)
    if model:
        where.append("r.model = ?")
        args.append(model)
    rows = conn.execute(
        f"SELECT r.*, x.passed, x.latency_ms, x.ttft_ms, x.tokens_per_s FROM runs r JOIN results x "
        f"ON x.run_id = r.run_id WHERE {' AND '.join(where)} "
        f"ORDER BY r.rowid, x.prompt_id",  # runs in the order they ran
        args,
    ).fetchall()
    by_run: dict[str, list[sqlite3.Row]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    out = []
    for run_id, rs in by_run.items():
        head = rs[0]
        out.append(
            RunSummary(
                run_id=run_id,
                started_at=head["started_at"],
                suite=head["suite"],
                model=head["model"],
                model_version=head["model_version"],
                prompts=len(rs),
                pass_rate=sum(r["passed"] for r in rs) / len(rs),
                latency_p50_ms=_median([r["latency_ms"] for r in rs if r["latency_ms"] is not None]),
                ttft_p50_ms=_median([r["ttft_ms"] for r in rs if r["ttft_ms"] is not None]),
                tokens_per_s=_median([r["tokens_per_s"] for r in rs if r["tokens_per_s"]]),
            )
        )
    return out


def _metric(s: RunSummary, metric: str) -> float | None:
    return {
        "latency": s.latency_p50_ms,
        "ttft": s.ttft_p50_ms,
        "tokens_per_s": s.tokens_per_s,
        "pass_rate": s.pass_rate,
    }[metric]


def _flag(metric: str, value: float, history: list[float]) -> float | None:
    """The baseline ``value`` departs from, or None when it stays within the band."""
    base = statistics.median(history)
    mad = statistics.median(abs(x - base) for x in history)
    if metric == "pass_rate":
        return base if value < base - max(0.2, MAD_K * mad) else None
    if metric == "tokens_per_s":
        per_token_ms = 1000.0 / value - 1000.0 / base if value > 0 and base > 0 else float("inf")
        slower = (
            value < base - MAD_K * mad and value * MIN_RATIO < base and per_token_ms >= MIN_DELTA_TOKEN_MS
        )
        return base if slower else None
    slower = value > base + MAD_K * mad and value > base * MIN_RATIO and value - base >= MIN_DELTA_MS
    return base if slower else None


def regressions(
    runs: list[RunSummary], *, baseline_run: str | None = None
) -> list[tuple[RunSummary, str, float, float]]:
    """(run, metric, value, baseline) for each metric of each run outside its baseline's band."""
    pinned = next((r for r in runs if r.run_id.startswith(baseline_run)), None) if baseline_run else None
    if baseline_run and pinned is None:
        raise InvalidOptionError(f"No run {baseline_run!r} in the report's period.", hint="Widen --since.")
    out = []
    for i, run in enumerate(runs):
        earlier = [r for r in runs[:i] if r.model == run.model][-WINDOW:]
        for metric in ("pass_rate", "latency", "ttft", "tokens_per_s"):
            value = _metric(run, metric)
            if value is None or run is pinned:
                continue
            if pinned is not None:
                base_value = _metric(pinned, metric)
                history = (
                    [base_value] * MIN_BASELINE
                    if base_value is not None and pinned.model == run.model
                    else []
                )
            else:
                history = [v for r in earlier if (v := _metric(r, metric)) is not None]
            if len(history) < MIN_BASELINE:
                continue
            base = _flag(metric, value, history)
            if base is not None:
                out.append((run, metric, value, base))
    return out


def find_cause(home: KennelHome, run: RunSummary, previous: RunSummary | None) -> AuditEntry | None:
    """The last change to the model's versions or tags between the previous run and this one."""
    try:
        ref = parse_ref(run.model)
        with Store.open(home) as store:
            events = store.history(ref.name)
    except (NotInStoreError, InvalidOptionError, ValueError):
        return None
    start = previous.started_at if previous else ""
    changes = [
        e
        for e in events
        if start <= e.at <= run.started_at and e.action in ("pull", "import", "create", "tag", "rollback")
    ]
    return changes[-1] if changes else None


def report(
    home: KennelHome,
    conn: sqlite3.Connection,
    *,
    since: str | None = None,
    model: str | None = None,
    baseline_run: str | None = None,
) -> tuple[list[RunSummary], list[Regression]]:
    runs = summaries(conn, since=since, model=model)
    found = []
    for run, metric, value, base in regressions(runs, baseline_run=baseline_run):
        earlier = [r for r in runs if r.model == run.model and r.started_at < run.started_at]
        found.append(
            Regression(run, metric, value, base, find_cause(home, run, earlier[-1] if earlier else None))
        )
    return runs, found


def chart(runs: list[RunSummary], regs: list[Regression], path: Path) -> None:
    """Latency, tokens/s and pass rate over time, one line per model; regressions marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    panels = (("latency", "p50 latency (ms)"), ("tokens_per_s", "tokens/s"), ("pass_rate", "pass rate"))
    for model in sorted({r.model for r in runs}):
        mine = [r for r in runs if r.model == model]
        times = [datetime.fromisoformat(r.started_at) for r in mine]
        for ax, (metric, label) in zip(axes, panels, strict=True):
            ax.plot(times, [_metric(r, metric) for r in mine], marker="o", label=model)
            ax.set_ylabel(label)
    for reg in regs:
        ax = axes[[m for m, _ in panels].index(reg.metric)] if reg.metric != "ttft" else axes[0]
        ax.axvline(datetime.fromisoformat(reg.run.started_at), color="red", alpha=0.4)
    axes[0].legend(loc="upper left", fontsize="small")
    axes[0].set_title("kennel checkups (red: regression)")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
