"""Checkups as the server runs them: suites on cron expressions against its own API, recorded
like `kennel checkup run` and alerting after N consecutive failed runs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croniter import croniter

from kennel.checkup.results import connect, db_path, default_csv, record
from kennel.checkup.runner import RunResult, Target, run_suite, store_model_version
from kennel.checkup.suite import Suite, load_default_suite, load_suite
from kennel.settings import KennelHome

if TYPE_CHECKING:
    from kennel.checkup.channels import Channel

log = logging.getLogger("kennel.checkup")


def failure_text(run: RunResult, subject: str) -> str:
    failed = run.failures
    if not failed:
        return f"{subject}: all {len(run.results)} prompts passed (run {run.info.run_id})."
    lines = [
        f"{subject}: {len(failed)} of {len(run.results)} prompts failed (run {run.info.run_id}"
        f"{', model version ' + run.info.model_version if run.info.model_version else ''})."
    ]
    lines += [f"- {r.prompt_id}: {r.summary()}" for r in failed[:10]]
    if len(failed) > 10:
        lines.append(f"- … and {len(failed) - 10} more")
    return "\n".join(lines)


def alert_after_run(
    run: RunResult, suite: Suite, channels: list[Channel], threshold: int, home: KennelHome
) -> dict[str, Any]:
    """Count this run in the persistent failure streak; deliver an alert when one starts or ends.
    Channels appear by their label only: their URLs are secrets."""
    from kennel.checkup.alerts import AlertState, deliver

    subject = f"checkup {suite.name} on {run.info.model}"
    with AlertState.open(home) as state:
        alert = state.observe(subject, not run.passed, threshold=threshold, text=failure_text(run, subject))
        delivered = deliver(alert, channels, state=state) if alert is not None and channels else []
        # a regression (slower, or passing less, than this model's baseline) alerts on its own
        flagged = regression_text(run, home)
        reg = state.observe(
            f"regression on {run.info.model}",
            flagged is not None,
            threshold=1,
            text=flagged or f"{run.info.model} is back within its baseline.",
        )
        if reg is not None and channels:
            delivered += deliver(reg, channels, state=state)
    return {
        "subject": subject,
        "alert": None if alert is None else dataclasses.asdict(alert),
        "deliveries": [
            {"channel": d.channel.label, "ok": d.ok, "attempts": d.attempts, "error": d.error}
            for d in delivered
        ],
    }


def regression_text(run: RunResult, home: KennelHome) -> str | None:
    """Why this run is a regression against the model's recent runs, or None."""
    from kennel.checkup import report

    conn = connect(db_path(home))
    try:
        _, regs = report.report(home, conn, model=run.info.model)
    finally:
        conn.close()
    mine = [g.describe() for g in regs if g.run.run_id == run.info.run_id]
    return "; ".join(mine) if mine else None


@dataclass(frozen=True)
class Scheduled:
    """One suite on one schedule, as `kennel serve` runs it."""

    cron: str
    model: str
    suite: Path | None = None
    notify: tuple[str, ...] = ()
    fail_threshold: int = 3
    api_key: str | None = field(default=None, repr=False)  # a secret: never in a log line or trace


def run_once(job: Scheduled, base_url: str, home: KennelHome) -> RunResult:
    """One scheduled run, blocking: prompts, CSV + SQLite, alert state and delivery."""
    from kennel.checkup.channels import parse_channel

    suite = load_suite(job.suite) if job.suite else load_default_suite()
    target = Target(base_url, job.model, job.api_key, store_model_version(home, job.model))
    csv_file, db_file = default_csv(home), db_path(home)
    run = run_suite(
        suite, target, on_result=lambda info, r: record(info, [r], csv_path=csv_file, db_file=db_file)
    )
    alert_after_run(run, suite, [parse_channel(c) for c in job.notify], job.fail_threshold, home)
    return run


async def run_forever(
    job: Scheduled,
    base_url: str,
    home: KennelHome,
    on_run: Callable[[Scheduled, RunResult | None], None] | None = None,
) -> None:
    """Sleep until each cron time, then run (in a thread: the runner is blocking HTTP).
    ``on_run`` hears of every run, with None for one that could not run (the server's metrics)."""
    times = croniter(job.cron, datetime.now())
    while True:
        nxt = times.get_next(datetime)
        await asyncio.sleep(max(0.0, (nxt - datetime.now()).total_seconds()))
        run: RunResult | None = None
        try:
            run = await asyncio.to_thread(run_once, job, base_url, home)
            log.info(
                "checkup on %s: %s", job.model, "passed" if run.passed else f"{len(run.failures)} failed"
            )
        except Exception:  # a broken suite file must not stop the server or the next runs
            log.exception("scheduled checkup on %s failed to run", job.model)
        if on_run is not None:
            on_run(job, run)
