"""The model catalog shipped with kennel (data/catalog.yaml), read and checked once.

Each entry carries the model's shape (its config.json fields) so `kennel fit NAME` works
offline, its licence in plain words, the languages and tasks it is good at, and where its GGUF
files live. GGUF sizes are computed with llama.cpp's quantization rules (byte-exact for the
standard mixes), not copied from a listing, so they hold even where a repo changes its files.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from gguf import LlamaFileType
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kennel.errors import ModelNotFoundError
from kennel.fit.quant import GGUF_SCHEMES, tensor_types, weights_bytes
from kennel.model.hf_config import shape_from_config
from kennel.model.shape import ModelShape

Task = Literal["chat", "reasoning", "coding", "writing", "embedding", "guard"]
TASKS: tuple[str, ...] = ("chat", "reasoning", "coding", "writing", "embedding", "guard")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
DEFAULT_GGUF_QUANTS = ("Q2_K", "Q3_K_M", "IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")


class License(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str
    commercial: Literal["yes", "conditional", "no"]
    conditions: str = Field(
        min_length=10, description="What commercial users must do or may not do, in plain words."
    )
    osi_approved: bool = False


class GGUFSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str
    stem: str
    pattern: str = "{stem}-{quant}.gguf"  # TheBloke-era repos use "{stem}.{quant}.gguf"
    lowercase: bool = False  # official Qwen repos name files in lower case
    quants: tuple[str, ...] = DEFAULT_GGUF_QUANTS

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not _REPO.match(v):
            raise ValueError(f"{v!r} is not an OWNER/REPO id")
        return v

    def file(self, quant: str) -> str:
        name = self.pattern.format(stem=self.stem, quant=quant)
        return name.lower() if self.lowercase else name


@dataclass(frozen=True)
class GGUFFile:
    quant: str
    repo: str
    file: str
    size: int  # computed weights bytes


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    family: str
    hf_repo: str
    params_b: float = Field(gt=0, description="Total parameters as published, in billions.")
    active_params_b: float | None = Field(
        default=None, gt=0, description="Parameters per token for MoE models."
    )
    released: str
    license: str
    openness: Literal["open-weights", "open-source"]
    languages: tuple[str, ...]
    tasks: tuple[Task, ...]
    gguf: GGUFSource | None = None
    config: dict[str, Any]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v) or ".." in v:
            raise ValueError(f"{v!r}: catalog names are lower-case letters, digits, dots and dashes")
        return v

    @field_validator("languages")
    @classmethod
    def _langs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for code in v:
            if not re.fullmatch(r"[a-z]{2}", code):
                raise ValueError(f"{code!r} is not an ISO 639-1 language code")
        return v

    def shape(self) -> ModelShape:
        return _shape(self.name)

    def gguf_files(self) -> list[GGUFFile]:
        if self.gguf is None:
            return []
        shape = self.shape()
        out = []
        schemes = {s.name: s for s in GGUF_SCHEMES}
        for q in self.gguf.quants:
            ftype = schemes[q].ftype
            assert ftype is not None
            size = weights_bytes(shape, tensor_types(shape, LlamaFileType(ftype)))
            out.append(GGUFFile(q, self.gguf.repo, self.gguf.file(q), size))
        return out

    @property
    def embedding_only(self) -> bool:
        return self.tasks == ("embedding",)

    @property
    def guard_only(self) -> bool:
        """A guard model (`kennel serve --guard-model`): it classifies, it does not chat."""
        return self.tasks == ("guard",)


class ClassifierEntry(BaseModel):
    """A prompt-injection classifier for the guard's second stage (`kennel serve
    --guard-classifier NAME`), run with onnxruntime on the CPU: pulled with its ONNX export when
    the repo has one, else exported from its safetensors at pull time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    hf_repo: str
    params_b: float = Field(gt=0)
    released: str
    license: str
    languages: tuple[str, ...]
    gated: bool = Field(default=False, description="The repo asks you to accept its licence (HF_TOKEN).")
    note: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return CatalogEntry._name(v)


class _Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    licenses: dict[str, License]
    models: tuple[CatalogEntry, ...]
    classifiers: tuple[ClassifierEntry, ...] = ()


@lru_cache(maxsize=1)
def _catalog() -> _Catalog:
    text = resources.files("kennel").joinpath("data/catalog.yaml").read_text()
    return _Catalog.model_validate(yaml.safe_load(text))


@lru_cache(maxsize=256)
def _shape(name: str) -> ModelShape:
    e = next(e for e in entries() if e.name == name)
    return shape_from_config(e.config, name=e.title)


def entries() -> tuple[CatalogEntry, ...]:
    return _catalog().models


def classifiers() -> tuple[ClassifierEntry, ...]:
    return _catalog().classifiers


def find_classifier(name: str) -> ClassifierEntry | None:
    key = name.strip().lower()
    return next((c for c in classifiers() if c.name == key), None)


def licenses() -> dict[str, License]:
    return _catalog().licenses


def license_of(entry: CatalogEntry) -> License:
    return licenses()[entry.license]


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
            else "See `kennel catalog`, or give a .gguf path, URL or Hugging Face repo."
        )
        raise ModelNotFoundError(f"No model called {name!r} in kennel's catalog.", hint=hint)
    return entry


def select(
    *, task: str | None = None, lang: str | None = None, commercial: bool = False
) -> list[CatalogEntry]:
    """Catalog entries for a task, strong in a language, usable commercially (with conditions)."""
    out = []
    for e in entries():
        if task and task not in e.tasks:
            continue
        if lang and lang.lower() not in e.languages:
            continue
        if commercial and license_of(e).commercial == "no":
            continue
        out.append(e)
    return out
