"""Fixtures for the fine-tuning tests: one tiny Llama (transformers folder and GGUF from the same
tensors) per session, and a store holding its GGUF as `tiny`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kennel.settings import KennelHome
from kennel.store.add import import_gguf
from kennel.store.registry import Store
from tests.finetune.tinymodel import TinyModel, fact_lines, write_jsonl


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from tests.finetune.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_store(tiny: TinyModel, kennel_home: Path) -> Iterator[KennelHome]:
    """KENNEL_HOME with the tiny GGUF imported as `tiny`."""
    home = KennelHome(kennel_home)
    with Store.open(home) as store:
        import_gguf(store, tiny.gguf, name="tiny")
    yield home


@pytest.fixture
def fact_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", fact_lines(30))


# flags that teach the tiny model in a few seconds: a high rate, no dropout, four examples a step,
# and one thread (two would fight whatever else runs on a two-core machine, and lose badly)
FAST = (
    *("--rank", "8", "--alpha", "16", "--dropout", "0", "--lr", "1e-2"),
    *("--batch-size", "4", "--grad-accum", "1", "--threads", "1"),
)
EPOCHS = ("--epochs", "8")
