"""`kennel cost` end to end: the worked example, comparisons, currencies, measured speeds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kennel.cli.main import app
from kennel.cost.prices import load_prices
from kennel.errors import InvalidOptionError, KennelError
from kennel.fit import calibration
from kennel.hardware.whatif import what_if
from kennel.settings import KennelHome
from tests.cost.test_observed import serve, server_metrics
from tests.loopback import Quiet, serving

OFFICE = ("--model", "qwen2.5-7b", "--users", "40", "--requests-per-user-day", "30")
COMPARE = ("--compare", "2x RTX 4090", "1x L40S", "Mac Studio M2 Ultra 192G")


def cost(*args: str) -> str:
    r = CliRunner().invoke(app, ["cost", *args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r.stdout


def cost_json(*args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cost(*args, "--json"))
    assert doc["schema"] == "kennel.cost/v1"
    return doc


def refused(*args: str) -> KennelError:
    r = CliRunner().invoke(app, ["cost", *args])
    assert isinstance(r.exception, KennelError), (r.output, r.exception)
    assert r.exception.hint
    return r.exception


def test_the_forty_person_office() -> None:
    doc = cost_json(*OFFICE, "--growth", "20%/month")
    w = doc["workload"]
    assert w["requests_per_day"] == 1200 and w["peak_requests_per_s"] == pytest.approx(0.125)
    assert w["input_tokens_per_month"] == 1200 * 22 * 800
    ranked = doc["options"]
    totals = [o["total"] for o in ranked]
    assert totals == sorted(totals) and all(o["capacity"]["meets_targets"] for o in ranked)
    assert not any(o["capacity"]["meets_targets"] for o in doc["failing"])
    pick = doc["pick"]
    assert pick["setup"] == ranked[0]["setup"]
    one = pick["capacity"]["at_capacity"]
    assert one["ttft_p95_s"] <= 2.0 and one["stream_tok_s"] >= 15.0
    assert pick["boxes"] * pick["capacity"]["requests_per_s"] >= 0.125
    assert pick["peak_utilisation"] == pytest.approx(
        0.125 / (pick["boxes"] * pick["capacity"]["requests_per_s"]), rel=1e-3
    )
    names = {a["name"] for a in doc["apis"]}
    assert set(pick["break_even_month"]) == names | {doc["rent"]}
    assert doc["oversized"] == [o["setup"] for o in ranked if o["peak_utilisation"] < 0.10]
    # CPU-only servers cannot prefill an 800-token prompt within 2 s at this size
    assert any("EPYC" in o["setup"] for o in doc["failing"])
    assert doc["growth"]["runs_out_month"] is not None
    assert all(a["source"].startswith("https://") for a in doc["apis"])


def test_the_table_for_people(tmp_path: Path) -> None:
    png = tmp_path / "cost.png"
    out = cost(*OFFICE, "--top", "3", "--png", str(png), "--all")
    assert "Setups that meet the targets, by 3-year total" in out and "Pick:" in out
    assert "in flight at the peak (Little's law)" in out and "b-e API" in out
    assert "Missing the targets" in out and "first token takes" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_named_setups_side_by_side() -> None:
    doc = cost_json(*OFFICE, *COMPARE)
    names = {o["setup"] for o in doc["options"] + doc["failing"]}
    assert names == {"2x RTX 4090", "1x L40S", "Mac Studio M2 Ultra 192G"}
    two = next(o for o in doc["options"] if o["setup"] == "2x RTX 4090")
    assert two["capacity"]["replicas"] == 2  # a 7B fits one card: a server on each
    out = cost(*OFFICE, *COMPARE, "--growth", "20%/month")
    assert "Compared" in out and "2x RTX 4090" in out and "Mac Studio M2 Ultra 192G" in out
    assert "Growth 20%/month: the peak outgrows 1 box of" in out and "one more box lasts" in out


def test_currency_and_electricity() -> None:
    err = refused(*OFFICE, *COMPARE, "--currency", "VND")
    assert "--fx" in (err.hint or "")
    book = load_prices().book
    doc = cost_json(*OFFICE, "--compare", "1x RTX 4090", "--currency", "VND", "--fx", "25400")
    assert doc["currency"] == "VND" and doc["params"]["kwh_price"] == 2870  # EVN's tariff, in VND
    gpu = next(g for g in book.gpus if g.name == "RTX 4090")
    chassis = next(c for c in book.chassis if c.name == "workstation")
    assert doc["options"][0]["purchase"] == pytest.approx((gpu.price + chassis.price) * 25400)
    usd = cost_json(*OFFICE, "--compare", "1x RTX 4090", "--kwh-price", "0.30", "--pue", "1.56")
    assert usd["params"] == {
        "kwh_price": 0.30,
        "pue": 1.56,
        "upkeep_per_year": 0.10,
        "lifetime_months": 36,
        "horizon_months": 36,
    }


def test_prices_age() -> None:
    doc = json.loads(cost("--prices-age", "--json"))
    assert doc["schema"] == "kennel.cost-prices/v1" and doc["prices"] == "built-in"
    assert {s["section"] for s in doc["sections"]} >= {"gpus", "apis", "rentals", "tariffs"}
    assert "days old" in cost("--prices-age")


def test_bad_requests_are_refused_with_a_hint() -> None:
    assert "load" in refused("--model", "qwen2.5-7b").message
    assert "--compare" in (refused(*OFFICE, "2x RTX 4090").hint or "")
    assert "Did you mean" in (refused(*OFFICE, "--compare", "3x RTX 4900").hint or "")
    assert isinstance(refused(*OFFICE, "--ttft-p95", "soon"), InvalidOptionError)
    assert "Which model" in refused("--users", "4").message
    assert "--measured" in (refused(*OFFICE, "--hardware", "node.json").hint or "")


def test_measured_speeds_join_as_this_machine(tmp_path: Path, kennel_home: Path) -> None:
    node = replace(what_if(gpu="RTX 4090", cpu_cores=8), source="probed")
    profile = tmp_path / "node.json"
    profile.write_text(json.dumps(node.to_dict()))
    args = (*OFFICE, "--compare", "1x RTX 4090", "--hardware", str(profile), "--measured")
    assert "no measured speeds" in refused(*args).message
    calibration.record(
        KennelHome(kennel_home), node, "cuda", quant="Q8_0", decode_ratio=0.5, prefill_ratio=0.5
    )
    doc = cost_json(*args)
    mine = next(o for o in doc["options"] + doc["failing"] if o["setup"] == "this machine")
    bought = next(o for o in doc["options"] + doc["failing"] if o["setup"] == "1x RTX 4090")
    assert mine["kind"] == "owned" and mine["purchase"] == 0
    # the same GPU to buy takes the measured ratio too: both run at half the model's speed
    for o in (mine, bought):
        assert o["capacity"]["one_request"]["calibrated"]
    plain = cost_json(*OFFICE, "--compare", "1x RTX 4090")["options"][0]["capacity"]["one_request"]
    got = bought["capacity"]["one_request"]
    assert got["decode_step_per_s"] == pytest.approx(plain["decode_step_per_s"] * 0.5, rel=1e-3)
    assert any("measured" in n for n in doc["notes"])


@contextmanager
def metrics_server() -> Iterator[str]:
    """A loopback /metrics that shows 30 more requests on every read after the first."""
    m = server_metrics(parallel=8)
    reads: list[str] = []

    class Handler(Quiet):
        def do_GET(self) -> None:
            if reads:
                serve(m, 30, prompt=800, output=101, ttft=0.5, queue=0.0, itl=0.04)
            reads.append(self.path)
            self.reply(200, m.render(), "text/plain")

    with serving(Handler) as url:
        yield url
    assert reads == ["/metrics", "/metrics"]


def test_from_a_running_server(tmp_path: Path) -> None:
    profile = tmp_path / "node.json"
    profile.write_text(json.dumps(what_if(gpu="RTX 4090", cpu_cores=8).to_dict()))
    with metrics_server() as url:
        doc = cost_json(
            *OFFICE,
            "--compare",
            "1x L40S",
            "--hardware",
            str(profile),
            "--from",
            url,
            "--from-window",
            "0.2s",
        )
    mine = next(o for o in doc["options"] + doc["failing"] if o["setup"] == "this machine")
    assert mine["capacity"]["one_request"]["calibrated"]
    note = next(n for n in doc["notes"] if n.startswith("measured"))
    assert "decode 25.0 tok/s per request" in note and "prefill 1600 tok/s" in note
    other = next(o for o in doc["options"] + doc["failing"] if o["setup"] == "1x L40S")
    assert not other["capacity"]["one_request"]["calibrated"]  # another GPU keeps the model


@pytest.mark.slow
def test_recommend_chooses_the_model() -> None:
    doc = cost_json("--task", "chat", "--lang", "vi", "--users", "10", "--compare", "1x RTX 4090")
    assert "kennel recommend --task chat --lang vi" in doc["model"]["chosen_by"]
