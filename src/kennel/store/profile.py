"""A deployable model: base GGUF blob + optional LoRA adapter + chat template + system prompt +
default sampling + context size, declared in YAML (like an Ollama Modelfile).

Two shapes of the same idea:

* ``ProfileSpec`` is what a user writes (``kennel create NAME -f profile.yaml``): ``from`` names a
  store model (NAME, NAME:TAG, NAME@VERSION), a blob (sha256:HEX) or a .gguf path; ``adapter`` a
  path or a blob. Fields left out are inherited from the ``from`` version.
* ``Profile`` is what a version stores: blobs by digest only, written as canonical YAML so two
  versions compare line by line (``kennel diff``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kennel.errors import InvalidOptionError, validation_text

SystemPolicy = Literal["prepend", "replace", "forbid"]


class SamplingFields(BaseModel):
    """Sampling knobs with OpenAI's (and llama.cpp's) names and ranges, shared by profiles and
    API requests; None means "not set here"."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0, le=5)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None


class Sampling(SamplingFields):
    """Default sampling for requests that do not set their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(default=None, ge=1)
    stop: tuple[str, ...] | None = None


ModelFormat = Literal["gguf", "transformers"]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: tuple[str, ...] = Field(
        min_length=1, description="sha256 of the GGUF, one per shard, in order; or of each file of a folder."
    )
    base_file: str = Field(
        description="The GGUF's file name (first shard), or the folder's name, for people."
    )
    format: ModelFormat = Field(
        default="gguf", description="gguf (llama.cpp), or transformers: a folder of safetensors for vLLM."
    )
    files: tuple[str, ...] = Field(
        default=(), description="For a transformers folder: each base blob's path in the folder, in order."
    )
    adapter: str | None = Field(default=None, description="sha256 of a LoRA adapter GGUF.")
    adapter_scale: float = Field(default=1.0, gt=0, le=4)
    template: str | None = Field(default=None, description="Chat template (Jinja) replacing the GGUF's.")
    system: str | None = None
    system_policy: SystemPolicy = Field(
        default="prepend",
        description="A client's own system message: after the profile's (prepend), instead of it "
        "(replace), or refused (forbid).",
    )
    parameters: Sampling = Sampling()
    context: int | None = Field(default=None, ge=64, le=1 << 22)

    @model_validator(mode="after")
    def _folder_files(self) -> Profile:
        if self.format == "transformers" and len(self.files) != len(self.base):
            raise ValueError("a transformers profile names one file per base blob")
        if self.format == "gguf" and self.files:
            raise ValueError("files are for transformers folders only")
        for name in self.files:  # paths inside the folder kennel links: nothing may point out of it
            parts = name.split("/")
            if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"{name!r} is not a plain path inside a model folder")
        if len(set(self.files)) != len(self.files):
            raise ValueError("a file is named twice")
        return self

    def to_yaml(self) -> str:
        doc = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        doc["base"], doc["base_file"] = list(self.base), self.base_file
        doc["parameters"] = self.parameters.model_dump(mode="json", exclude_none=True)
        if not doc["parameters"]:
            del doc["parameters"]
        return yaml.safe_dump(doc, sort_keys=True, allow_unicode=True, width=100)

    @classmethod
    def from_yaml(cls, text: str) -> Profile:
        return cls.model_validate(yaml.safe_load(text))

    def blobs(self) -> list[tuple[str, str, int]]:
        """(digest, role, position) for every blob this profile needs."""
        out = [(d, "base", i) for i, d in enumerate(self.base)]
        if self.adapter:
            out.append((self.adapter, "adapter", 0))
        return out


class ProfileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str | None = Field(default=None, alias="from")
    adapter: str | None = None
    adapter_scale: float | None = Field(default=None, gt=0, le=4)
    template: str | None = None
    system: str | None = None
    system_policy: SystemPolicy | None = None
    parameters: Sampling | None = None
    context: int | None = Field(default=None, ge=64, le=1 << 22)

    @classmethod
    def load(cls, path: Path) -> ProfileSpec:
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise InvalidOptionError(f"Cannot read {path}: {exc.strerror}.") from exc
        except yaml.YAMLError as exc:
            raise InvalidOptionError(f"{path} is not valid YAML: {exc}.") from exc
        try:
            return cls.model_validate(doc or {})
        except ValidationError as exc:
            problems = "; ".join(validation_text(e) for e in exc.errors())
            raise InvalidOptionError(
                f"{path} is not a kennel profile: {problems}.",
                hint=(
                    "Fields: from, adapter, adapter_scale, template, system, system_policy, "
                    "parameters, context."
                ),
            ) from exc

    def overrides(self) -> dict[str, Any]:
        """The fields this spec sets, to lay over the parent profile."""
        out = self.model_dump(exclude_none=True, exclude={"from_", "adapter"})
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out


def diff_profiles(a: Profile | None, b: Profile, *, label_a: str, label_b: str) -> str:
    """Unified diff of the canonical YAML of two profiles (empty when equal)."""
    before = a.to_yaml().splitlines(keepends=True) if a else []
    return "".join(difflib.unified_diff(before, b.to_yaml().splitlines(keepends=True), label_a, label_b))
