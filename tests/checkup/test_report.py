"""`kennel checkup report`: regressions against a rolling median (or a pinned run), matched to
the version-history event before them; schedules for cron and systemd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kennel.checkup import report as rep
from kennel.checkup import schedule as sch
from kennel.checkup.results import connect, db_path
from kennel.errors import InvalidOptionError
from kennel.settings import KennelHome
from kennel.store.add import build_profile, import_gguf
from kennel.store.profile import ProfileSpec
from kennel.store.registry import Store

T0 = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


def _run(conn, i: int, *, model: str = "tiny", latency: float = 100.0, passed: int = 1) -> str:  # type: ignore[no-untyped-def]
    run_id = f"run{i:04d}"
    at = (T0 + timedelta(days=i)).isoformat(timespec="seconds")
    conn.execute(
        "INSERT INTO runs VALUES (?, ?, 'smoke', 'http://127.0.0.1:8484', ?, '')", (run_id, at, model)
    )
    for p in range(3):
        conn.execute(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, 10, 50.0, ?, 1.0, '[]', '', '')",
            (run_id, f"p{p}", at, latency / 4, latency + p, passed),
        )
    return at


def test_rolling_baseline_flags_a_slowdown_and_names_its_cause(
    kennel_home: Path, make_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    home = KennelHome(kennel_home)
    path, _ = make_model()
    conn = connect(db_path(home))
    for i in range(6):
        _run(conn, i, latency=100 + (i % 2) * 5)  # steady, a little noise
    with Store.open(home) as store:
        import_gguf(store, path, name="tiny")
        v = store.add_version(
            "tiny",
            build_profile(
                store, "tiny", ProfileSpec.model_validate({"system": "Be terse."}), base_dir=tmp_path
            ),
            action="create",
            actor="minh",
            message="shorter system prompt",
        )
        # the change happened between run 5 and run 6: move the audit times there
        store.conn.execute(
            "UPDATE audit SET at = ?", ((T0 + timedelta(days=5, hours=12)).isoformat(timespec="seconds"),)
        )
    _run(conn, 6, latency=310)
    _run(conn, 7, latency=104, passed=0)
    conn.commit()
    runs, regs = rep.report(home, conn)
    conn.close()
    assert len(runs) == 8
    slow = [g for g in regs if g.metric == "latency"]
    assert len(slow) == 1 and slow[0].run.run_id == "run0006" and slow[0].ratio > 2.9
    text = slow[0].describe()
    assert (
        f"since version {v.version}" in text
        and "minh" in text
        and "shorter system prompt" in text
        and "×3.0" in text
    )
    broken = [g for g in regs if g.metric == "pass_rate"]
    assert (
        len(broken) == 1
        and broken[0].run.run_id == "run0007"
        and "pass rate 100% → 0%" in broken[0].describe()
    )
    assert not any(g.run.run_id < "run0006" for g in regs)  # the noisy runs are inside the band


def test_pinned_baseline_and_since(kennel_home: Path) -> None:
    home = KennelHome(kennel_home)
    conn = connect(db_path(home))
    _run(conn, 0, latency=100)
    _run(conn, 1, latency=130)
    _run(conn, 2, latency=400)
    conn.commit()
    _, regs = rep.report(home, conn, baseline_run="run0000")
    assert [g.run.run_id for g in regs if g.metric == "latency"] == [
        "run0002"
    ]  # 1.3x stays under the 1.5x bar
    with pytest.raises(InvalidOptionError):
        rep.report(home, conn, baseline_run="nope")
    since = rep.parse_since("2026-11-02")
    assert [r.run_id for r in rep.summaries(conn, since=since)] == ["run0001", "run0002"]
    conn.close()
    assert rep.parse_since("30d", now=T0) == (T0 - timedelta(days=30)).isoformat(timespec="seconds")
    with pytest.raises(InvalidOptionError):
        rep.parse_since("soon")


def test_report_cli_json_and_png(kennel_home: Path) -> None:
    home = KennelHome(kennel_home)
    conn = connect(db_path(home))
    for i in range(4):
        _run(conn, i)
    _run(conn, 4, latency=500)
    conn.commit()
    conn.close()
    png = kennel_home / "trend.png"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kennel.cli.main",
            "checkup",
            "report",
            "--since",
            "3000d",
            "--png",
            str(png),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["runs"]) == 5 and doc["regressions"][0]["run_id"] == "run0004"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_crontab_install_replace_and_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a fake `crontab` that keeps its table in a file."""
    table = tmp_path / "table"
    table.write_text("MAILTO=ops@example.org\n5 4 * * * backup.sh\n")
    fake = tmp_path / "bin" / "crontab"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-l" ]; then cat {table}; else cat > {table}; fi\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    run = [sys.executable, "-m", "kennel.cli.main", "checkup", "schedule"]
    r = subprocess.run(
        [*run, "--cron", "0 7 * * *", "--", "--target", "tiny"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*run, "--cron", "30 6 * * 1-5", "--", "--target", "tiny"], capture_output=True, text=True, timeout=60
    )
    lines = table.read_text().splitlines()
    assert lines[:2] == ["MAILTO=ops@example.org", "5 4 * * * backup.sh"] and len(lines) == 3
    assert lines[2].startswith("30 6 * * 1-5 KENNEL_HOME=") and "checkup run --target tiny" in lines[2]
    subprocess.run([*run, "--cron", "0 7 * * *", "--remove"], capture_output=True, text=True, timeout=60)
    assert table.read_text().splitlines() == ["MAILTO=ops@example.org", "5 4 * * * backup.sh"]
    bad = subprocess.run([*run, "--cron", "every day"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "cron expression" in bad.stderr


def test_systemd_units() -> None:
    service, timer = sch.systemd_units("daily", "*/15 8-18 * * 1-5", ["--target", "tiny"])
    assert "OnCalendar=Mon..Fri *-*-* 8..18:0/15:00" in timer and "Persistent=true" in timer
    assert "checkup run --target tiny" in service and "Type=oneshot" in service
    assert [t.hour for t in sch.next_runs("0 7 * * *", datetime(2026, 11, 1, 8, 0))] == [7, 7, 7]
    remote, _ = sch.systemd_units("remote", "0 7 * * *", ["--url", "http://gpu-box:8000/v1", "--key", "kn-x"])
    assert "checkup run --url http://gpu-box:8000/v1 --key kn-x" in remote  # both reach the unit


def test_tokens_per_second_jitter_on_tiny_answers_is_not_a_regression() -> None:
    from kennel.checkup.report import _flag

    # a 2-token answer timed in milliseconds: half the tok/s is 1 ms more per token, jitter
    assert _flag("tokens_per_s", 500.0, [1000.0, 990.0, 1010.0, 1000.0]) is None
    # a model that really halves: 33 ms more per token
    assert _flag("tokens_per_s", 15.0, [30.0, 29.5, 30.5, 30.0]) == 30.0
