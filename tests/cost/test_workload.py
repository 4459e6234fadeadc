"""The load in a team's words, and how the peak follows from it."""

from __future__ import annotations

import pytest

from kennel.cost.inputs import parse_share, parse_tokens, workload_from
from kennel.cost.workload import Targets, Workload
from kennel.errors import InvalidOptionError


def test_a_forty_person_office() -> None:
    w = Workload.team(users=40, requests_per_user_day=30, prompt_tokens=800, output_tokens=300)
    assert w.requests_per_day == 1200
    assert w.requests_per_month == 1200 * 22
    assert w.input_tokens_per_month == 1200 * 22 * 800  # 21.12M
    assert w.output_tokens_per_month == 1200 * 22 * 300  # 7.92M
    assert w.busy_rps == pytest.approx(1200 / (8 * 3600))  # 0.0417/s
    assert w.peak_rps == pytest.approx(0.125)  # three times that
    assert w.month_rps == pytest.approx(1200 * 22 / (730 * 3600))
    # Little's law at the targets: 0.125/s x (2 s + 300 tokens / 15 tok/s) = 2.75 in flight
    assert w.peak_in_flight(Targets(2.0, 15.0)) == pytest.approx(2.75)
    text = "\n".join(w.lines(Targets(2.0, 15.0)))
    assert "40 users x 30 requests" in text and "2.8 -> 3 requests at once" in text


def test_tokens_a_month_become_requests() -> None:
    w = Workload.monthly_tokens(input_tokens=30e6, output_tokens=10e6, output_per_request=250)
    assert w.requests_per_month == pytest.approx(40_000)  # 10M / 250
    assert w.prompt_tokens == 750  # 30M / 40,000
    assert w.input_tokens_per_month == pytest.approx(30e6)
    assert w.scaled(2).requests_per_month == pytest.approx(80_000)


def test_inputs_as_people_type_them() -> None:
    assert parse_share("--upkeep", "10%") == pytest.approx(0.10)
    assert parse_share("--upkeep", "0.1") == pytest.approx(0.10)
    assert parse_share("--upkeep", "10") == pytest.approx(0.10)
    assert parse_share("--growth", "20%/month") == pytest.approx(0.20)
    assert parse_tokens("30M") == 30e6 and parse_tokens("1.5B") == 1.5e9 and parse_tokens("800k") == 8e5
    for bad in ("x", "-5%"):
        with pytest.raises(InvalidOptionError):
            parse_share("--upkeep", bad)
    with pytest.raises(InvalidOptionError, match="IN,OUT"):
        parse_tokens("lots")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"users": None, "tokens_per_month": None},
        {"users": 4, "tokens_per_month": "1M,1M"},
        {"users": None, "tokens_per_month": "1M"},
        {"users": 4, "tokens_per_month": None, "hours": 30},
        {"users": 4, "tokens_per_month": None, "peak_factor": 0.5},
    ],
)
def test_a_load_that_cannot_be_planned_says_why(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "requests_per_user_day": 20,
        "prompt_tokens": 800,
        "output_tokens": 300,
        "hours": 8,
        "days": 22,
        "peak_factor": 3,
        **kwargs,
    }
    with pytest.raises(InvalidOptionError) as err:
        workload_from(**args)  # type: ignore[arg-type]
    assert err.value.hint
