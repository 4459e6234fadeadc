"""What a served model is, read from its file once: size, family, parameters, quantization, chat
template and metadata. Ollama's clients show these (/api/tags, /api/show, /api/ps) and pick
features by them (a template that takes tools)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kennel.catalog.resolve import split_names
from kennel.errors import KennelError
from kennel.model.gguf_header import ArraySummary
from kennel.model.gguf_shape import file_type_name
from kennel.server.pool import ModelSpec
from kennel.store.add import check_gguf


@dataclass(frozen=True)
class ModelFacts:
    size: int  # bytes on disk
    digest: str  # sha256 hex: the store blob, or the path's (a file served by path)
    modified_at: float  # Unix time
    format: str  # gguf | safetensors
    family: str  # the architecture (llama, qwen2, ...)
    parameters: int
    quantization: str  # Q4_K_M, F16, ...
    template: str  # the chat template the model is served with
    info: dict[str, Any] = field(default_factory=dict)  # metadata, without long arrays

    @property
    def parameter_size(self) -> str:
        """Ollama's style: 7.6B, 494.0M."""
        n = self.parameters
        return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": self.format,
            "family": self.family,
            "families": [self.family] if self.family else None,
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }


def read_facts(spec: ModelSpec) -> ModelFacts:
    """Blocking (reads the file's header): run it off the event loop."""
    path = spec.plan.model
    digest = spec.digests[0] if spec.digests else hashlib.sha256(str(path).encode()).hexdigest()
    template = spec.plan.chat_template or ""
    if path.is_dir():  # a transformers folder for vLLM
        files = [f for f in path.rglob("*") if f.is_file()]
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        return ModelFacts(
            size=sum(f.stat().st_size for f in files),
            digest=digest,
            modified_at=max((f.stat().st_mtime for f in files), default=0.0),
            format="safetensors",
            family=str(config.get("model_type", "")),
            parameters=0,
            quantization=str(config.get("torch_dtype", "")),
            template=template,
            info={k: v for k, v in config.items() if isinstance(v, str | int | float | bool)},
        )
    try:
        header = check_gguf(path)
    except KennelError:  # served, so it was readable: gone since; tell what is known
        return ModelFacts(0, digest, 0.0, "gguf", "", 0, "", template)
    shards = [path.with_name(n) for n in split_names(path.name)]
    tensors = list(header.tensors)
    for shard in shards[1:]:  # a split model's other shards hold the rest of its tensors
        if shard.exists():
            tensors += check_gguf(shard).tensors
    meta = header.metadata
    return ModelFacts(
        size=sum(p.stat().st_size for p in shards if p.exists()),
        digest=digest,
        modified_at=path.stat().st_mtime,
        format="gguf",
        family=header.architecture,
        parameters=sum(t.n_elements for t in tensors),
        quantization=file_type_name(header),
        template=template or str(meta.get("tokenizer.chat_template", "")),
        # the vocabulary and merges are long arrays; Ollama leaves them out too
        info={k: v for k, v in meta.items() if not isinstance(v, ArraySummary | list | bytes)},
    )
