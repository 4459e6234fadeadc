"""The acceptance path of checkups: a scheduled checkup against a served model writes its CSV;
a planted regression (a slowed model) gives exactly one alert after the configured number of
failed runs, and one recovery message, to a loopback webhook receiver."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kennel.checkup.results import CSV_COLUMNS, default_csv
from kennel.checkup.scheduler import Scheduled, run_once
from kennel.settings import KennelHome
from tests.checkup.fakeserver import Script, scripted_server
from tests.loopback import webhook_receiver

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with webhook_receiver() as r:
        yield r


def test_planted_slowdown_alerts_once_then_recovers(
    kennel_home: Path, tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    hook, got = receiver
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: smoke\nprompts:\n  - id: capital\n    prompt: What is the capital of France?\n"
        "    assert:\n      - {type: icontains, value: paris}\n      - {type: max-latency-ms, value: 300}\n"
    )
    home = KennelHome(kennel_home)
    script = Script(default="Paris is the capital.")
    with scripted_server(script, home) as url:
        job = Scheduled(
            cron="0 7 * * *", model="fake", suite=suite, notify=(f"webhook:{hook}",), fail_threshold=3
        )
        outcomes = []
        for slow in (False, True, True, True, True, False, False):
            script.first_delay = 0.5 if slow else 0.0  # the planted regression
            outcomes.append(run_once(job, url + "/v1", home).passed)
    assert outcomes == [True, False, False, False, False, True, True]
    checkup = [a for a in got if a["subject"] == "checkup smoke on fake"]
    assert [a["kind"] for a in checkup] == ["failing", "recovered"]  # exactly one alert and one recovery
    assert (
        got[0]["subject"] == "checkup smoke on fake"
        and got[0]["failures"] == 3
        and "latency" in got[0]["text"]
    )
    with default_csv(home).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and tuple(rows[0]) == CSV_COLUMNS
    assert [r["passed"] for r in rows] == ["true", "false", "false", "false", "false", "true", "true"]
    assert all(r["model"] == "fake" and r["prompt_id"] == "capital" for r in rows)


def test_a_regression_alerts_even_when_every_assertion_passes(
    kennel_home: Path, tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    hook, got = receiver
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: smoke\nprompts:\n  - id: capital\n    prompt: capital?\n    assert:\n"
        "      - {type: icontains, value: paris}\n"
    )
    home = KennelHome(kennel_home)
    script = Script(default="Paris.")
    with scripted_server(script, home) as url:
        job = Scheduled(
            cron="0 7 * * *", model="fake", suite=suite, notify=(f"webhook:{hook}",), fail_threshold=3
        )
        for slow in (False, False, False, True, False):
            script.first_delay = 0.6 if slow else 0.0
            assert run_once(job, url + "/v1", home).passed
    assert [(a["kind"], a["subject"]) for a in got] == [
        ("failing", "regression on fake"),
        ("recovered", "regression on fake"),
    ]
    assert "p50 latency ×" in got[0]["text"]
