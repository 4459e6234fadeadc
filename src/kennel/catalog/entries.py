"""The model catalog shipped with kennel (data/catalog.yaml), read and checked once."""

from __future__ import annotations

import difflib
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from kennel.errors import ModelNotFoundError
from kennel.model.hf_config import shape_from_config
from kennel.model.shape import ModelShape


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    hf_repo: str
    config: dict[str, Any]

    def shape(self) -> ModelShape:
        return shape_from_config(self.config, name=self.title)


class _Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: tuple[CatalogEntry, ...]


@lru_cache(maxsize=1)
def entries() -> tuple[CatalogEntry, ...]:
    text = resources.files("kennel").joinpath("data/catalog.yaml").read_text()
    return _Catalog.model_validate(yaml.safe_load(text)).models


def find(name: str) -> CatalogEntry | None:
    key = name.strip().lower()
    return next((e for e in entries() if e.name == key), None)


def get(name: str) -> CatalogEntry:
    entry = find(name)
    if entry is None:
        close = difflib.get_close_matches(name.lower(), [e.name for e in entries()], n=3, cutoff=0.5)
        hint = (
            f"Did you mean {', '.join(close)}?"
            if close
            else "Give a .gguf path, an https URL or a Hugging Face repo id."
        )
        raise ModelNotFoundError(f"No model called {name!r} in kennel's catalog.", hint=hint)
    return entry
