"""What is particular to the in-process llama.cpp engine: its load log (memory figures, the
reason a load failed, a quiet terminal), and several models in one process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kennel.engines.base import LoadPlan, Message, Request, Sampling
from kennel.engines.llamacpp import LlamaCppEngine
from kennel.engines.llamacpp_log import LOG_NAME, LoadLog
from kennel.errors import ModelLoadError
from tests.conftest import ModelFactory

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]


def _plan(path: Path, **kw: object) -> LoadPlan:
    return LoadPlan(model=path, context=512, parallel=2, threads=2, **kw)  # type: ignore[arg-type]


def test_the_load_log_gives_memory_and_stays_on_disk(make_model: ModelFactory, tmp_path: Path) -> None:
    path, _ = make_model(n_vocab=512)
    log = LoadLog(tmp_path / "logs")

    async def go() -> None:
        engine = LlamaCppEngine(_plan(path), name="m", load_log=log)
        await engine.load()
        try:
            held = engine.memory()
            assert held is not None and held.ram > path.stat().st_size // 2
        finally:
            await engine.unload()

    asyncio.run(go())
    text = (tmp_path / "logs" / LOG_NAME).read_text()
    assert "model buffer size" in text and "KV buffer size" in text


def test_a_failed_load_says_what_llama_cpp_said(make_model: ModelFactory, tmp_path: Path) -> None:
    path, _ = make_model(n_vocab=512)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # tensor data cut short

    async def go() -> None:
        engine = LlamaCppEngine(_plan(broken), name="broken", load_log=LoadLog(tmp_path / "logs"))
        with pytest.raises(ModelLoadError, match=r"could not load broken \(broken.gguf\): .*\S"):
            await engine.load()
        await engine.unload()

    asyncio.run(go())


def test_unloading_one_model_while_another_streams(make_model: ModelFactory) -> None:
    """Every loaded model is a llama.cpp server core in this process; one going away must not
    disturb another's running stream, and a model loads again afterwards."""
    first, _ = make_model(n_vocab=512)
    second, _ = make_model(n_vocab=600)
    log = LoadLog()

    async def go() -> None:
        a = LlamaCppEngine(_plan(first), name="a", load_log=log)
        b = LlamaCppEngine(_plan(second), name="b", load_log=log)
        await a.load()
        await b.load()
        request = Request(sampling=Sampling(max_tokens=120, seed=1), messages=(Message("user", "go"),))
        pieces = []
        async for d in a.generate(request, "long"):
            pieces.append(d)
            if len(pieces) == 5:
                await b.unload()
        assert pieces[-1].finish_reason == "length" and pieces[-1].completion_tokens == 120
        again = LlamaCppEngine(_plan(second), name="b2", load_log=log)
        await again.load()
        out = [
            d async for d in again.generate(Request(sampling=Sampling(max_tokens=5), prompt="hi"), "after")
        ]
        assert out[-1].completion_tokens == 5
        await a.unload()
        await again.unload()

    asyncio.run(go())
