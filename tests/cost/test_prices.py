"""Every price has a source and a date; a file with a row without them is refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from kennel.cost.prices import load_prices, prices_age
from kennel.cost.setups import candidates, named, rentals
from kennel.errors import InvalidOptionError
from kennel.hardware.specs import lookup

BUILT_IN = Path(__file__).resolve().parents[2] / "src" / "kennel" / "data" / "prices.yaml"


def test_every_built_in_row_has_a_source_url_and_a_date() -> None:
    raw = yaml.safe_load(BUILT_IN.read_text())
    rows = [(section, row) for section, value in raw.items() if isinstance(value, list) for row in value]
    assert len(rows) > 50
    for section, row in rows:
        where = f"{section}: {row.get('name')}"
        assert str(row.get("source", "")).startswith("https://"), where
        assert isinstance(row.get("as_of"), dt.date), where  # YAML reads YYYY-MM-DD as a date
        assert row["as_of"] <= dt.date.today(), where
    book = load_prices().book  # and the loader accepts every row
    assert book.currency == "USD"


@pytest.mark.parametrize("drop", ["source", "as_of"])
def test_a_row_without_source_or_date_is_refused(tmp_path: Path, drop: str) -> None:
    raw = yaml.safe_load(BUILT_IN.read_text())
    del raw["apis"][2][drop]
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InvalidOptionError) as err:
        load_prices(path)
    assert f"apis.2.{drop}" in err.value.message and "source URL" in (err.value.hint or "")


def test_a_source_must_be_a_url(tmp_path: Path) -> None:
    raw = yaml.safe_load(BUILT_IN.read_text())
    raw["gpus"][0]["source"] = "my cousin"
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InvalidOptionError, match="URL"):
        load_prices(path)


def test_prices_name_hardware_the_speed_model_knows() -> None:
    book = load_prices().book
    for g in book.gpus:
        assert lookup(g.name).exact and lookup(g.name).spec.name == g.name, g.name
    for s in book.systems:
        assert s.gpu is None or lookup(s.gpu).spec.name == s.gpu, s.name
        assert s.gpu is not None or s.cpu_cores, s.name
    for r in book.rentals:
        assert lookup(r.gpu).spec.name == r.gpu, r.name
    # every GPU is offered at least at one box size, every required family is there
    setups = candidates(book)
    names = {s.name for s in setups}
    for gpu in book.gpus:
        assert any(s.gpu == gpu.name for s in setups), gpu.name
    for family in ("Mac Studio", "Jetson", "MI300X", "Gaudi", "EPYC", "DGX Spark"):
        assert any(family in n for n in names), family
    assert len(rentals(book)) == len(book.rentals)


def test_age_of_the_prices() -> None:
    book = load_prices().book
    ages = {a.section: a for a in prices_age(book, dt.date(2026, 1, 1))}
    assert set(ages) == {"gpus", "chassis", "systems", "rentals", "apis", "tariffs", "sites"}
    apis = ages["apis"]
    assert apis.rows == len(book.apis)
    assert apis.oldest == min(a.as_of for a in book.apis)
    assert apis.days_old == (dt.date(2026, 1, 1) - apis.oldest).days


def test_named_setups() -> None:
    book = load_prices().book
    two = named(book, "2x RTX 4090")
    gpu = next(g for g in book.gpus if g.name == "RTX 4090")
    chassis = next(c for c in book.chassis if c.name == two.detail)
    assert two.gpu_count == 2 and two.price == chassis.price + 2 * gpu.price
    assert two.power.max_w == chassis.tdp_w + 2 * gpu.tdp_w
    assert len(two.hardware.gpus) == 2
    assert named(book, "Mac Studio M2 Ultra 192G").price == 5599
    assert named(book, "1 x L40S").detail == "2-GPU server"  # passive cards go in servers
    assert named(book, "RunPod L40S").kind == "rent"
    with pytest.raises(InvalidOptionError, match="Did you mean"):
        named(book, "Mac Studio M2 Ultra 129G")
    with pytest.raises(InvalidOptionError, match="no chassis"):
        named(book, "16x RTX 4090")
