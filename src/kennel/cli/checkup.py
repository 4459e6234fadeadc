"""`kennel checkup run`: golden prompts against a served model, recorded, with an exit code a
deployment can gate on (0 all passed, 1 a prompt failed, 2 a usage error) and alerts after N
consecutive failed runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from kennel.checkup.results import append_csv, db_path, default_csv, record
from kennel.checkup.runner import (
    DEFAULT_TIMEOUT,
    PromptResult,
    RunInfo,
    RunResult,
    Target,
    local_target,
    run_suite,
    unreachable,
    url_target,
)
from kennel.checkup.scheduler import alert_after_run
from kennel.checkup.suite import load_default_suite, load_suite
from kennel.cli.help_format import KennelCommand, KennelGroup
from kennel.cli.output import console, err_console, print_json
from kennel.errors import InvalidOptionError
from kennel.settings import KennelHome

if TYPE_CHECKING:
    from kennel.checkup.channels import Channel

checkup_app = typer.Typer(
    cls=KennelGroup,
    name="checkup",
    help="Golden-prompt checkups: run a suite of prompts with assertions against a served model.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _target(
    target: str | None, url: str | None, model: str | None, key: str | None, home: KennelHome
) -> Target:
    if target is not None and url is None:
        if model is not None:
            raise InvalidOptionError(
                "--model goes with --url; with --target the model is the target.",
                hint="kennel checkup run --target NAME[:TAG|@VERSION]",
            )
        return local_target(target, home=home, api_key=key)
    if url is not None and target is None:
        return url_target(url, model=model, api_key=key)
    raise InvalidOptionError(
        "Give either --target MODEL (the local kennel server) or --url URL (any OpenAI-compatible endpoint).",
        hint=(
            "For example: kennel checkup run --target qwen2.5-7b, or --url http://host:8000/v1 --model NAME."
        ),
    )


def _channels(notify: Sequence[str]) -> list[Channel]:
    """Parse --notify before the run, so a bad channel is a usage error, not a lost alert."""
    if not notify:
        return []
    from kennel.checkup.channels import parse_channel  # imported only when alerts are asked for

    return [parse_channel(text) for text in notify]


def _print_alert(alerts: dict[str, Any]) -> None:
    alert, sent = alerts["alert"], alerts["deliveries"]
    if alert is None:
        return
    err = err_console()
    err.print(f"[bold]Alert[/] ({alert['kind']}): {escape(alerts['subject'])}")
    if not sent:
        err.print("[dim]No --notify channel: the alert is kept in KENNEL_HOME/alerts.db as undelivered.[/]")
    for d in sent:
        mark = "[green]sent[/]" if d["ok"] else f"[red]not delivered[/] ({escape(str(d['error']))})"
        err.print(f"  {escape(d['channel'])}: {mark}")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} ms"


def _table(run: RunResult) -> Table:
    t = Table(header_style="bold", box=None, pad_edge=False)
    for col in ("prompt", "passed", "ttft", "latency", "tok/s", "failed assertions"):
        t.add_column(col, justify="right" if col in ("ttft", "latency", "tok/s") else "left")
    for r in run.results:
        resp = r.response
        why = escape(f"error: {r.error}" if r.error else "; ".join(r.failed_assertions))
        t.add_row(
            r.prompt_id,
            "[green]yes[/]" if r.passed else "[red]no[/]",
            _ms(resp.ttft_ms),
            _ms(resp.latency_ms),
            "-" if resp.tokens_per_s is None else f"{resp.tokens_per_s:.1f}",
            why,
        )
    return t


def _result_dict(r: PromptResult) -> dict[str, Any]:
    resp = r.response
    return {
        "prompt_id": r.prompt_id,
        "ts": r.ts,
        "passed": r.passed,
        "score": r.score.ratio,
        "ttft_ms": resp.ttft_ms,
        "latency_ms": resp.latency_ms,
        "output_tokens": resp.output_tokens,
        "tokens_per_s": resp.tokens_per_s,
        "failed_assertions": list(r.failed_assertions),
        "error": resp.error,
        "answer": resp.text,
    }


@checkup_app.command("run", cls=KennelCommand)
def run_cmd(
    suite_file: Path | None = typer.Option(
        None, "--suite", help="A suite YAML (default: kennel's five questions in English and Vietnamese)."
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="A model on the local kennel server (KENNEL_URL; default: port 8484 on this machine).",
    ),
    url: str | None = typer.Option(
        None, "--url", help="Any OpenAI-compatible endpoint, e.g. http://host:8000/v1."
    ),
    model: str | None = typer.Option(
        None, "--model", help="With --url: the model (default: the one it serves)."
    ),
    key: str | None = typer.Option(
        None, "--key", envvar="KENNEL_API_KEY", help="API key sent as a Bearer token (or KENNEL_API_KEY)."
    ),
    csv_path: Path | None = typer.Option(
        None,
        "--csv",
        help="Append rows to this CSV (default: results.csv in the checkups folder of KENNEL_HOME).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    notify: list[str] = typer.Option(
        [],
        "--notify",
        help=(
            "Alert channel, repeatable: slack:URL, webhook:URL or email:SMTP-URL "
            "(the command help shows one)."
        ),
    ),
    fail_threshold: int | None = typer.Option(
        None, "--fail-threshold", min=1, help="Alert after this many consecutive failed runs (default 1)."
    ),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds one prompt may take."),
    warmup: bool = typer.Option(
        True, "--warmup/--no-warmup", help="Send one unmeasured token first, so a model load is not timed."
    ),
) -> None:
    """Run a golden-prompt suite, print a table, append the results to CSV and SQLite.

    Exit code 0 when every prompt passed, 1 when one failed (to gate a deployment), 2 on a usage error.

    An e-mail alert channel: --notify 'email:smtp://mail.example.vn:587?to=it@example.vn&from=kennel@example.vn'
    """
    home = KennelHome.from_env()
    suite = load_suite(suite_file) if suite_file is not None else load_default_suite()
    tgt = _target(target, url, model, key, home)
    channels = _channels(notify)
    csv_file = csv_path or default_csv(home)
    db_file = db_path(home)
    append_csv(csv_file, [])  # a file kennel cannot write or did not write is refused before the run

    def recorded(info: RunInfo, result: PromptResult) -> None:
        record(info, [result], csv_path=csv_file, db_file=db_file)
        if not json_out:
            mark = "[green]✓[/]" if result.passed else "[red]✗[/]"
            why = f"  {escape(result.summary())}" if not result.passed else ""
            err_console().print(f"{mark} {result.prompt_id}{why}")

    if not json_out:
        err_console().print(
            f"Checkup [bold]{escape(suite.name)}[/] ({len(suite.prompts)} prompts) on "
            f"[bold]{escape(tgt.model or '?')}[/] at {escape(tgt.label)}"
            f"{' (' + tgt.model_version + ')' if tgt.model_version else ''}"
        )
    run = run_suite(suite, tgt, timeout=timeout, warmup=warmup, on_result=recorded)
    alerts = (
        alert_after_run(run, suite, channels, fail_threshold or 1, home)
        if notify or fail_threshold is not None
        else None
    )
    passed = sum(r.passed for r in run.results)
    if json_out:
        print_json(
            "checkup.run",
            {
                "run": dataclasses.asdict(run.info),
                "passed": run.passed,
                "prompts": len(run.results),
                "prompts_passed": passed,
                "csv": str(csv_file),
                "db": str(db_file),
                "results": [_result_dict(r) for r in run.results],
                "alerts": alerts,
            },
        )
    else:
        out = console()
        out.print(_table(run))
        colour = "green" if run.passed else "red"
        out.print(
            f"[{colour}]{passed}/{len(run.results)} passed[/] · run {run.info.run_id} · "
            f"{escape(str(csv_file))}"
        )
        if unreachable(run):
            err_console().print(
                f"Nothing answered at {escape(tgt.label)}. Start the server (`kennel serve`) or give "
                "--url; this run is recorded as failed, as an outage would be."
            )
        if alerts is not None:
            _print_alert(alerts)
    if not run.passed:
        raise typer.Exit(1)


@checkup_app.command("report", cls=KennelCommand)
def report_cmd(
    since: str | None = typer.Option("30d", "--since", help="Period: 30d, 12h, 2w or a date (2026-11-01)."),
    model: str | None = typer.Option(None, "--model", help="Only this model."),
    baseline: str | None = typer.Option(
        None, "--baseline", help="Compare with this pinned run id (default: rolling median)."
    ),
    png: Path | None = typer.Option(
        None, "--png", help="Also draw latency, tokens/s and pass rate over time to this PNG."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Trends per model version, regressions against a baseline with what changed before them,
    and alerts that could not be delivered."""
    from kennel.checkup import report as rep
    from kennel.checkup.alerts import AlertState
    from kennel.checkup.results import connect

    home = KennelHome.from_env()
    conn = connect(db_path(home))
    try:
        runs, regs = rep.report(home, conn, since=rep.parse_since(since), model=model, baseline_run=baseline)
    finally:
        conn.close()
    with AlertState.open(home) as state:
        lost = state.undelivered(rep.parse_since(since))
    if png is not None:
        rep.chart(runs, regs, png)
    if json_out:
        print_json(
            "checkup.report",
            {
                "runs": [dataclasses.asdict(r) for r in runs],
                "regressions": [
                    {
                        "run_id": g.run.run_id,
                        "model": g.run.model,
                        "metric": g.metric,
                        "value": g.value,
                        "baseline": g.baseline,
                        "message": g.describe(),
                    }
                    for g in regs
                ],
                "undelivered_alerts": [
                    {
                        "subject": u.alert.subject,
                        "kind": u.alert.kind,
                        "at": u.alert.at,
                        "channel": u.channel,
                        "error": u.error,
                    }
                    for u in lost
                ],
                "png": str(png) if png else None,
            },
        )
        return
    out = console()
    t = Table(header_style="bold", box=None, pad_edge=False)
    for col in ("started", "model", "version", "prompts", "pass", "p50 latency", "p50 TTFT", "tok/s"):
        t.add_column(col, justify="right" if col not in ("started", "model", "version") else "left")
    for r in runs:
        t.add_row(
            r.started_at[:16],
            escape(r.model),
            r.model_version or "-",
            str(r.prompts),
            f"{r.pass_rate:.0%}",
            _ms(r.latency_p50_ms),
            _ms(r.ttft_p50_ms),
            f"{r.tokens_per_s:.1f}" if r.tokens_per_s else "-",
        )
    out.print(t if runs else "No checkup runs in this period. Run one: kennel checkup run --target MODEL")
    for g in regs:
        out.print(f"[red]regression[/]: {escape(g.describe())}")
    for u in lost:
        out.print(
            f"[yellow]undelivered alert[/]: {u.alert.kind} {escape(u.alert.subject)} at {u.alert.at}"
            f" via {u.channel or 'no channel'}: {escape(u.error or '')}"
        )
    if png is not None:
        out.print(f"Chart: {png}")


@checkup_app.command("schedule", cls=KennelCommand)
def schedule_cmd(
    cron: str = typer.Option(..., "--cron", help='When, as cron fields, e.g. "0 7 * * *" (07:00 daily).'),
    name: str = typer.Option("default", "--name", help="Schedule name (installing again replaces it)."),
    systemd: bool = typer.Option(
        False, "--systemd", help="Print a systemd service and timer instead of using crontab."
    ),
    remove: bool = typer.Option(False, "--remove", help="Remove the crontab entry of this name."),
    args: list[str] = typer.Argument(
        None,
        help="Arguments for `kennel checkup run`, after --, e.g. -- --target qwen2.5-7b --notify slack:URL",
    ),
) -> None:
    """Run a checkup on a schedule on machines without a running `kennel serve`: a user crontab
    entry (or a systemd timer). With `kennel serve`, list suites under `checkups:` in its config."""
    from datetime import datetime

    from kennel.checkup import schedule as sch

    sch.check_cron(cron)
    run_args = list(args or [])
    if systemd:
        service, timer = sch.systemd_units(name, cron, run_args)
        console().print(
            f"# ~/.config/systemd/user/kennel-checkup-{name}.service\n{service}\n"
            f"# ~/.config/systemd/user/kennel-checkup-{name}.timer\n{timer}\n"
            f"# then: systemctl --user enable --now kennel-checkup-{name}.timer",
            markup=False,
        )
        return
    line = None if remove else sch.crontab_line(name, cron, run_args)
    sch.install_crontab(name, line)
    if line is None:
        console().print(f"Removed the crontab entry {name}.")
        return
    nxt = ", ".join(t.strftime("%Y-%m-%d %H:%M") for t in sch.next_runs(cron, datetime.now()))
    console().print(f"Installed in your crontab: {escape(line)}\nNext runs: {nxt}")
