"""The checkup history: CSV rows with exactly the agreed columns (header once, appended, never
rewritten) and the same rows in SQLite, both from one call."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kennel.checkup.assertions import Response, parse_assertion, score
from kennel.checkup.results import CSV_COLUMNS, append_csv, connect, db_path, default_csv, record
from kennel.checkup.runner import PromptResult, RunInfo
from kennel.errors import InvalidOptionError, KennelError
from kennel.settings import KennelHome

COLUMNS = [
    "ts",
    "run_id",
    "target",
    "model",
    "model_version",
    "prompt_id",
    "ttft_ms",
    "latency_ms",
    "output_tokens",
    "tokens_per_s",
    "passed",
    "failed_assertions",
    "error",
]
INFO = RunInfo(
    run_id="20260501T120000Z-abcdef",
    started_at="2026-05-01T12:00:00+00:00",
    suite="smoke",
    target="http://127.0.0.1:8484/v1",
    model="qwen:prod",
    model_version="0123456789ab@3",
)


def _result(prompt_id: str, response: Response, *asserts: tuple[str, object]) -> PromptResult:
    checks = [parse_assertion(t, v) for t, v in asserts]
    return PromptResult(prompt_id, "2026-05-01T12:00:01+00:00", response, score(checks, response))


GOOD = _result(
    "capital",
    Response(text="Paris", ttft_ms=12.345, latency_ms=250.06, output_tokens=3, tokens_per_s=8.0),
    ("icontains", "paris"),
)
SLOW = _result(
    "slow",
    Response(text="Lyon", ttft_ms=5.0, latency_ms=6000.0, output_tokens=1, tokens_per_s=0.17),
    ("icontains", "paris"),
    ("max-latency-ms", 5000),
)
DOWN = _result(
    "down",
    Response(latency_ms=1.5, error="cannot connect to\nhttp://127.0.0.1:9/v1: refused"),
    ("icontains", "paris"),
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_and_sqlite_rows(tmp_path: Path) -> None:
    csv_path, db_file = tmp_path / "out" / "results.csv", tmp_path / "checkups.db"
    record(INFO, [GOOD, SLOW], csv_path=csv_path, db_file=db_file)
    record(INFO, [DOWN], csv_path=csv_path, db_file=db_file)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and list(CSV_COLUMNS) == COLUMNS
    assert (
        sum(line.startswith("ts,") for line in lines) == 1 and len(lines) == 4
    )  # header once, no blank lines
    good, slow, down = _rows(csv_path)
    assert good == {
        "ts": "2026-05-01T12:00:01+00:00",
        "run_id": INFO.run_id,
        "target": INFO.target,
        "model": "qwen:prod",
        "model_version": "0123456789ab@3",
        "prompt_id": "capital",
        "ttft_ms": "12.3",
        "latency_ms": "250.1",
        "output_tokens": "3",
        "tokens_per_s": "8.00",
        "passed": "true",
        "failed_assertions": "",
        "error": "",
    }
    assert (slow["passed"], slow["failed_assertions"]) == (
        "false",
        "icontains 'paris'; max-latency-ms 5000: latency 6000 ms",
    )
    assert down["passed"] == "false" and down["error"] == "cannot connect to http://127.0.0.1:9/v1: refused"
    assert (down["ttft_ms"], down["output_tokens"], down["tokens_per_s"]) == ("", "", "")

    conn = connect(db_file)
    try:
        assert [r[0] for r in conn.execute("SELECT name FROM migrations")] == ["001_runs"]
        runs = [dict(r) for r in conn.execute("SELECT * FROM runs")]
        assert runs == [
            {
                "run_id": INFO.run_id,
                "started_at": INFO.started_at,
                "suite": "smoke",
                "target": INFO.target,
                "model": "qwen:prod",
                "model_version": "0123456789ab@3",
            }
        ]
        rows = {r["prompt_id"]: dict(r) for r in conn.execute("SELECT * FROM results")}
    finally:
        conn.close()
    assert set(rows) == {"capital", "slow", "down"}
    assert (
        rows["capital"]["passed"] == 1
        and rows["capital"]["answer"] == "Paris"
        and rows["capital"]["ttft_ms"] == 12.345
    )
    assert json.loads(rows["slow"]["failed_assertions"]) == list(SLOW.failed_assertions)
    assert rows["slow"]["score"] == 0.0 and rows["down"]["error"].startswith("cannot connect")


def test_header_only_once_across_runs_and_foreign_files_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    append_csv(path, [])
    assert path.read_text() == ",".join(COLUMNS) + "\n"
    append_csv(path, [])
    record(INFO, [GOOD], csv_path=path, db_file=tmp_path / "c.db")
    assert path.read_text().count("ts,run_id") == 1 and len(_rows(path)) == 1
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidOptionError, match="not a kennel checkup results file"):
        record(INFO, [GOOD], csv_path=foreign, db_file=tmp_path / "c.db")
    assert foreign.read_text() == "a,b\n1,2\n"


def test_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KennelError, match="Cannot write the checkup results"):
        append_csv(blocker / "results.csv", [])


def test_default_places(kennel_home: Path) -> None:
    home = KennelHome.from_env()
    assert default_csv(home) == kennel_home / "checkups" / "results.csv"
    assert db_path(home) == kennel_home / "checkups.db"
