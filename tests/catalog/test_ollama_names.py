"""Ollama's library names as kennel's catalog entries: sizes, quantizations, the families whose
names differ, the size a bare name means, and names that mean none of them."""

from __future__ import annotations

import pytest

from kennel.catalog.entries import find
from kennel.catalog.ollama_names import DEFAULT_SIZE, IRREGULAR, OllamaName, ollama_to_catalog


@pytest.mark.parametrize(
    ("name", "entry", "quant"),
    [
        ("qwen2.5:7b", "qwen2.5-7b", None),
        ("llama3.2:1b", "llama-3.2-1b", None),
        ("llama3.2", "llama-3.2-3b", None),  # Ollama's latest for the family
        ("llama3.2:latest", "llama-3.2-3b", None),
        ("llama3.2:1b-instruct-q8_0", "llama-3.2-1b", "Q8_0"),
        ("registry.ollama.ai/library/qwen3:8b-q4_K_M", "qwen3-8b", "Q4_K_M"),
        ("gemma3:4b", "gemma-3-4b", None),
        ("qwen3:30b-a3b", "qwen3-30b-a3b", None),
        ("deepseek-r1:7b", "deepseek-r1-distill-qwen-7b", None),
        ("deepseek-r1:8b", "deepseek-r1-distill-llama-8b", None),
        ("phi4", "phi-4", None),
        ("Mixtral:8x7B", "mixtral-8x7b", None),
    ],
)
def test_names_that_mean_a_catalog_entry(name: str, entry: str, quant: str | None) -> None:
    assert ollama_to_catalog(name) == OllamaName(entry, quant)


@pytest.mark.parametrize("name", ["nope:7b", "llama3.2:1b-text-q4_0", "qwen2.5:999b", "unknownfamily", ""])
def test_names_that_mean_none(name: str) -> None:
    assert ollama_to_catalog(name) is None


def test_the_tables_name_real_entries() -> None:
    """A catalog entry renamed must not leave an Ollama name pointing at nothing."""
    assert all(find(entry) is not None for entry in IRREGULAR.values())
    assert all(ollama_to_catalog(family) is not None for family in DEFAULT_SIZE), [
        f for f in DEFAULT_SIZE if ollama_to_catalog(f) is None
    ]
