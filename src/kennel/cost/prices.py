"""The price book: data/prices.yaml (or the user's `--prices FILE`), checked row by row.

Every row must say where its figure was published (``source``, a URL) and when (``as_of``): a
price nobody can trace is worse than none, so a file with such a row is refused, not half-read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kennel.errors import InvalidOptionError

Form = Literal["consumer", "pcie", "dc-pcie", "sxm", "oam"]


class Row(BaseModel):
    """What every row carries: a name, where the figure comes from and when it was current."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    source: str
    as_of: dt.date
    note: str = ""

    @field_validator("source")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("source must be the URL the figure was published at")
        return v


class GpuPrice(Row):
    price: float = Field(gt=0)
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(ge=0)
    form: Form
    boxes: tuple[int, ...] = (1, 2, 4, 8)


class Chassis(Row):
    max_gpus: int = Field(ge=1)
    forms: tuple[Form, ...]
    price: float = Field(ge=0)
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(ge=0)
    cpu_cores: int = Field(ge=1)
    ram_gb: float = Field(gt=0)
    ram_bandwidth_gbs: float = Field(gt=0)


class System(Row):
    """A whole machine: with its own accelerator (``gpu``, a unified-memory entry of the spec
    table), or CPU-only (``cpu_cores`` and ``ram_bandwidth_gbs``)."""

    aliases: tuple[str, ...] = ()
    gpu: str | None = None
    cpu_cores: int | None = Field(default=None, ge=1)
    ram_gb: float = Field(gt=0)
    ram_bandwidth_gbs: float | None = Field(default=None, gt=0)
    price: float = Field(gt=0)
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(ge=0)


class Rental(Row):
    gpu: str
    gpus: int = Field(ge=1)
    per_hour: float = Field(gt=0)  # the whole instance


class ApiPrice(Row):
    input_per_m: float = Field(ge=0)
    output_per_m: float = Field(ge=0)


class Tariff(Row):
    currency: str = Field(min_length=3, max_length=3)
    per_kwh: float = Field(gt=0)


class Site(Row):
    pue: float = Field(ge=1.0, le=3.0)


class PriceBook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(min_length=3, max_length=3)
    gpus: tuple[GpuPrice, ...]
    chassis: tuple[Chassis, ...]
    systems: tuple[System, ...]
    rentals: tuple[Rental, ...]
    apis: tuple[ApiPrice, ...]
    tariffs: tuple[Tariff, ...]
    sites: tuple[Site, ...]

    def sections(self) -> dict[str, Sequence[Row]]:
        return {
            "gpus": self.gpus,
            "chassis": self.chassis,
            "systems": self.systems,
            "rentals": self.rentals,
            "apis": self.apis,
            "tariffs": self.tariffs,
            "sites": self.sites,
        }

    def site(self, name: str) -> Site:
        found = next((s for s in self.sites if s.name == name), None)
        if found is None:
            raise InvalidOptionError(
                f"No site {name!r} in the price file.",
                hint=f"Use one of {', '.join(s.name for s in self.sites)}, or give --pue.",
            )
        return found

    def tariff(self, currency: str) -> Tariff | None:
        """The first tariff priced in ``currency``, else the first in the book's own currency."""
        return next((t for t in self.tariffs if t.currency == currency), None) or next(
            (t for t in self.tariffs if t.currency == self.currency), None
        )


@dataclass(frozen=True)
class LoadedPrices:
    book: PriceBook
    origin: str  # "built-in" or the path the user gave


def load_prices(path: Path | None = None) -> LoadedPrices:
    """The built-in price book, or the user's file in the same format."""
    if path is None:
        text = resources.files("kennel").joinpath("data/prices.yaml").read_text()
        return LoadedPrices(_parse(text, "kennel's built-in prices"), "built-in")
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidOptionError(
            f"Cannot read price file {path}: {exc.strerror}.",
            hint="Copy src/kennel/data/prices.yaml, edit it, and pass it with --prices.",
        ) from exc
    return LoadedPrices(_parse(text, str(path)), str(path))


def _parse(text: str, where: str) -> PriceBook:
    try:
        return PriceBook.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise InvalidOptionError(
            f"{where} is not YAML ({exc}).", hint="Start from a copy of src/kennel/data/prices.yaml."
        ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InvalidOptionError(
            f"{where}: {loc}: {first['msg']} ({exc.error_count()} problem(s) in all).",
            hint="Every row needs its figures, a source URL and an as_of date (YYYY-MM-DD); "
            "see the comments at the top of src/kennel/data/prices.yaml.",
        ) from exc


@dataclass(frozen=True)
class SectionAge:
    section: str
    rows: int
    oldest: dt.date
    newest: dt.date
    days_old: int  # of the oldest row


def prices_age(book: PriceBook, today: dt.date) -> tuple[SectionAge, ...]:
    """How old each section's figures are: the oldest row is the one to re-check first."""
    out = []
    for name, rows in book.sections().items():
        if not rows:
            continue
        dates = [r.as_of for r in rows]
        out.append(SectionAge(name, len(rows), min(dates), max(dates), (today - min(dates)).days))
    return tuple(out)
