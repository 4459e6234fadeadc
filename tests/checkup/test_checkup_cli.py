"""`kennel checkup run` in a subprocess, as cron or a deployment pipeline runs it, against a
kennel server started by the test: exit 0 when all pass, 1 when one fails, 2 on usage errors."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kennel.checkup.results import CSV_COLUMNS
from kennel.settings import KennelHome
from tests.checkup.fakeserver import Script, scripted_server, suite_yaml
from tests.cli.test_cli import kennel
from tests.loopback import webhook_receiver
from tests.server.serverkit import free_port

pytestmark = pytest.mark.timeout(300)

SUITE = suite_yaml(
    "{id: capital, prompt: 'What is the capital of France?', assert: [{type: icontains, value: paris},"
    " {type: max-latency-ms, value: 5000}]}",
    "{id: sum, prompt: 'What is 2 + 2?', assert: [{type: regex, value: '\\b4\\b'}]}",
    name="smoke",
)


@pytest.fixture
def script() -> Script:
    return Script(answers={"2 + 2": "4"})


@pytest.fixture
def server(script: Script, tmp_path: Path) -> Iterator[str]:
    with scripted_server(script, KennelHome(tmp_path / "server-home")) as url:
        yield url


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "smoke.yaml"
    path.write_text(SUITE)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


def test_all_pass_exits_0_and_records(server: str, suite: Path, tmp_path: Path, kennel_home: Path) -> None:
    out = tmp_path / "r.csv"
    r = kennel("checkup", "run", "--url", server, "--model", "fake", "--suite", str(suite), "--csv", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "capital" in r.stdout and "2/2 passed" in r.stdout and "ttft" in r.stdout
    rows = _rows(out)
    assert [(x["prompt_id"], x["passed"], x["model"], x["target"]) for x in rows] == [
        ("capital", "true", "fake", server + "/v1"),
        ("sum", "true", "fake", server + "/v1"),
    ]
    assert len({x["run_id"] for x in rows}) == 1 and all(float(x["latency_ms"]) > 0 for x in rows)
    with sqlite3.connect(kennel_home / "checkups.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM results WHERE passed = 1").fetchone()[0] == 2


def test_a_failure_exits_1_with_the_reason(
    server: str, script: Script, suite: Path, kennel_home: Path
) -> None:
    script.default = "Lyon"
    r = kennel(
        "checkup", "run", "--url", server + "/v1", "--suite", str(suite)
    )  # the model found by /v1/models
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1/2 passed" in r.stdout and "icontains 'paris'" in r.stdout
    rows = _rows(kennel_home / "checkups" / "results.csv")  # the default place
    assert [(x["prompt_id"], x["passed"], x["failed_assertions"]) for x in rows] == [
        ("capital", "false", "icontains 'paris'"),
        ("sum", "true", ""),
    ]


def test_json_output_and_target_through_kennel_url(server: str, suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    r = kennel(
        "checkup",
        "run",
        "--target",
        "fake",
        "--suite",
        str(suite),
        "--csv",
        str(out),
        "--json",
        env={"KENNEL_URL": server},
    )
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    assert doc["schema"] == "kennel.checkup.run/v1" and doc["passed"] is True and doc["alerts"] is None
    assert (doc["prompts"], doc["prompts_passed"], doc["run"]["model"], doc["run"]["suite"]) == (
        2,
        2,
        "fake",
        "smoke",
    )
    assert doc["run"]["model_version"] == ""  # not a store model
    assert [x["answer"] for x in doc["results"]] == ["Paris", "4"] and doc["csv"] == str(out)
    assert len(_rows(out)) == 2


def test_an_unreachable_server_is_a_failed_run(suite: Path, tmp_path: Path) -> None:
    """Recorded, as an outage must be for the alerts, but said plainly, and without a latency
    (0 ms to a refused connection would pull the report's p50 down)."""
    out = tmp_path / "r.csv"
    dead = f"http://127.0.0.1:{free_port()}"
    r = kennel("checkup", "run", "--url", dead, "--model", "m", "--suite", str(suite), "--csv", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"Nothing answered at {dead}" in " ".join(r.stderr.split())
    rows = _rows(out)
    assert len(rows) == 2 and all(
        x["passed"] == "false" and x["error"].startswith("cannot connect") and x["latency_ms"] == ""
        for x in rows
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:9", "--target", "m"], "Give either --target MODEL"),
        ([], "Give either --target MODEL"),
        (["--target", "m", "--model", "x"], "--model goes with --url"),
        (["--url", "localhost:8000"], "is not an http(s) URL"),
        (["--url", "http://127.0.0.1:9", "--suite", "missing.yaml"], "Cannot read the suite"),
        (["--url", "http://127.0.0.1:9", "--fail-threshold", "0"], "Invalid value"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    r = kennel("checkup", "run", *args)
    assert r.returncode == 2 and message in r.stderr, r.stdout + r.stderr


def test_a_bad_suite_exits_2_before_any_request(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(suite_yaml("{id: a, prompt: hi, assert: [{type: containz, value: x}]}"))
    r = kennel("checkup", "run", "--url", "http://127.0.0.1:9", "--model", "m", "--suite", str(bad))
    assert r.returncode == 2 and "unknown assertion type 'containz'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 2  # one error line, one hint


def test_consecutive_failures_alert_once_the_threshold_is_reached(
    server: str, script: Script, suite: Path, tmp_path: Path
) -> None:

    script.default = "Lyon"
    args = (
        "checkup",
        "run",
        "--url",
        server,
        "--suite",
        str(suite),
        "--csv",
        str(tmp_path / "r.csv"),
        "--json",
        "--fail-threshold",
        "2",
    )
    first, second = kennel(*args), kennel(*args)
    assert (first.returncode, second.returncode) == (1, 1), first.stderr + second.stderr
    a1, a2 = json.loads(first.stdout)["alerts"], json.loads(second.stdout)["alerts"]
    assert a1["subject"] == a2["subject"] == "checkup smoke on fake"
    assert a1["alert"] is None and a2["alert"] is not None and a2["deliveries"] == []


def test_notify_delivers_when_failing_starts_and_when_it_recovers(
    server: str, script: Script, suite: Path, tmp_path: Path
) -> None:

    with webhook_receiver() as (hook, received):
        channel = f"webhook:{hook}/SECRET-TOKEN-123"
        args = (
            "checkup",
            "run",
            "--url",
            server,
            "--suite",
            str(suite),
            "--csv",
            str(tmp_path / "r.csv"),
            "--notify",
            channel,
        )
        script.default = "Lyon"
        failing = kennel(*args, "--json")
        again = kennel(*args, "--json")
        script.default = "Paris"
        recovered = kennel(*args)
    assert (failing.returncode, again.returncode, recovered.returncode) == (1, 1, 0)
    doc = json.loads(failing.stdout)["alerts"]
    assert doc["alert"]["kind"] == "failing" and doc["deliveries"] == [
        {"channel": f"webhook:{hook}/…", "ok": True, "attempts": 1, "error": None}
    ]
    assert json.loads(again.stdout)["alerts"]["alert"] is None  # once when it starts, not on every run
    assert "SECRET-TOKEN" not in failing.stdout + failing.stderr + recovered.stdout + recovered.stderr
    assert "Alert (recovered)" in recovered.stderr
    assert [(m["kind"], m["subject"]) for m in received] == [
        ("failing", "checkup smoke on fake"),
        ("recovered", "checkup smoke on fake"),
    ]
    assert (
        "1 of 2 prompts failed" in received[0]["text"]
        and "- capital: icontains 'paris'" in received[0]["text"]
    )


def test_a_bad_channel_is_a_usage_error_before_the_run(tmp_path: Path) -> None:

    out = tmp_path / "r.csv"
    r = kennel(
        "checkup",
        "run",
        "--url",
        "http://127.0.0.1:9",
        "--model",
        "m",
        "--csv",
        str(out),
        "--notify",
        "pager:https://example.invalid/x",
    )
    assert r.returncode == 2 and "Not an alert channel" in r.stderr and not out.exists()


def test_a_keyed_server_without_a_key_is_a_usage_error_and_records_nothing(tmp_path: Path) -> None:
    from kennel.server.keys import KeyStore

    home = KennelHome(tmp_path / "keyed-home")
    with KeyStore.open(home) as keys:
        _, secret = keys.create("checkups")
    with scripted_server(Script(), home) as url:
        csv_file = tmp_path / "r.csv"
        r = kennel("checkup", "run", "--url", url, "--model", "fake", "--csv", str(csv_file))
        assert r.returncode == 2 and "HTTP 401" in r.stderr and "--key" in r.stderr, r.stderr
        assert not csv_file.exists() or csv_file.read_text().count("\n") <= 1  # no rows
        ok = kennel(
            "checkup", "run", "--url", url, "--model", "fake", "--csv", str(csv_file), "--key", secret
        )
        assert ok.returncode in (0, 1) and csv_file.read_text().count("\n") > 1
