"""Ollama's model names (``qwen2.5:7b``, ``llama3.2``, ``deepseek-r1:8b-llama-distill-q8_0``) as
entries of kennel's catalog, for Ollama clients that pull or ask for models by those names.

Ollama names a model FAMILY[:SIZE[-VARIANT][-QUANT]]; kennel's catalog names it FAMILY-SIZE, with
a hyphen before the version in some families (``llama3.2:1b`` is ``llama-3.2-1b``, ``qwen3:8b`` is
``qwen3-8b``). Names that follow no rule are listed, as are the sizes Ollama pulls for a bare
FAMILY (its ``latest`` tag).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kennel.catalog.entries import find

# Ollama library names kennel's catalog spells differently
IRREGULAR = {
    "deepseek-r1:1.5b": "deepseek-r1-distill-qwen-1.5b",
    "deepseek-r1:7b": "deepseek-r1-distill-qwen-7b",
    "deepseek-r1:8b": "deepseek-r1-distill-llama-8b",
    "deepseek-r1:14b": "deepseek-r1-distill-qwen-14b",
    "deepseek-r1:32b": "deepseek-r1-distill-qwen-32b",
    "deepseek-r1:70b": "deepseek-r1-distill-llama-70b",
    "deepseek-r1:671b": "deepseek-r1",
    "deepseek-v3:671b": "deepseek-v3",
    "phi3.5:3.8b": "phi-3.5-mini",
    "phi4:14b": "phi-4",
    "phi4-mini:3.8b": "phi-4-mini",
    "glm4:9b": "glm-4-9b",
    "bge-m3:567m": "bge-m3",
}

# what Ollama pulls for a bare FAMILY (FAMILY:latest)
DEFAULT_SIZE = {
    "llama3.1": "8b",
    "llama3.2": "3b",
    "llama3.3": "70b",
    "mistral": "7b",
    "mistral-nemo": "12b",
    "mistral-small": "24b",
    "mixtral": "8x7b",
    "qwen2.5": "7b",
    "qwen2.5-coder": "7b",
    "qwen3": "8b",
    "qwen3-embedding": "0.6b",
    "deepseek-r1": "8b",
    "deepseek-v3": "671b",
    "phi3.5": "3.8b",
    "phi4": "14b",
    "phi4-mini": "3.8b",
    "gemma2": "9b",
    "gemma3": "4b",
    "glm4": "9b",
    "tinyllama": "1.1b",
    "smollm2": "1.7b",
    "bge-m3": "567m",
}

_SIZE = re.compile(r"^(\d+(\.\d+)?[bm]|\d+x\d+b)$")
_ACTIVE = re.compile(r"^a\d+(\.\d+)?b$")
_QUANT = re.compile(r"^(i?q\d\w*|f16|bf16|fp16|f32)$", re.IGNORECASE)
_VARIANTS = {"instruct", "chat", "it"}  # the catalog's models are the instruction-tuned ones
_PREFIXES = ("registry.ollama.ai/library/", "library/")


@dataclass(frozen=True)
class OllamaName:
    catalog: str  # the catalog entry
    quant: str | None  # Q4_K_M, when the tag names one


def ollama_to_catalog(name: str) -> OllamaName | None:
    """The catalog entry an Ollama model name means, or None when it means none of them."""
    text = name.strip().lower()
    for prefix in _PREFIXES:
        text = text.removeprefix(prefix)
    family, _, tag = text.partition(":")
    parts = [p for p in tag.split("-") if p] if tag and tag != "latest" else []
    size = parts.pop(0) if parts and _SIZE.match(parts[0]) else DEFAULT_SIZE.get(family)
    if size and parts and _ACTIVE.match(parts[0]):  # a mixture of experts: qwen3:30b-a3b
        size += "-" + parts.pop(0)
    quant = parts.pop().upper() if parts and _QUANT.match(parts[-1]) else None
    if size is None or any(p not in _VARIANTS for p in parts):
        return None
    candidates = [IRREGULAR.get(f"{family}:{size}"), f"{family}-{size}", f"{_hyphenated(family)}-{size}"]
    for candidate in candidates:
        if candidate and find(candidate) is not None:
            return OllamaName(candidate, quant)
    return None


def _hyphenated(family: str) -> str:
    """llama3.2 -> llama-3.2, gemma3 -> gemma-3: a hyphen where the letters meet the version."""
    return re.sub(r"^([a-z]+)(\d)", r"\1-\2", family)
