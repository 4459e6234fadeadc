from __future__ import annotations

from pathlib import Path

import pytest

from tests.guard.onnxkit import write_classifier


@pytest.fixture(scope="session")
def onnx_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight BERT classifier exported to ONNX, with its tokenizer (once a session)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    return write_classifier(tmp_path_factory.mktemp("classifier") / "clf")
