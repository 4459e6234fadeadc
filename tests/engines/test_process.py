"""Supervised engine processes: a start that never becomes healthy, a process killed mid-answer
(restarted, alert told once), kennel killed with kill -9 (no engine left behind)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from kennel.engines.base import Answer, LoadPlan, Message, Request, Sampling
from kennel.engines.llama_server import LlamaServerEngine, llama_server_args
from kennel.engines.remote import ProcessEngine
from kennel.errors import EngineError, ModelLoadError
from tests.conftest import ModelFactory

pytestmark = pytest.mark.timeout(300)

# a stand-in engine: says a line, then answers /health with 200 (or never, with "never")
FAKE = textwrap.dedent(
    """
    import http.server, subprocess, sys
    print("fake engine starting on", sys.argv[1], flush=True)
    if len(sys.argv) > 3:  # a child of its own, as vLLM's server starts its engine core
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[3]])
    if sys.argv[2] == "never":
        print("fake engine: stuck loading weights", flush=True)
        import time; time.sleep(600)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


class FakeEngine(ProcessEngine):
    kind = "fake"

    def __init__(self, mode: str, log_dir: Path | None = None, marker: str = "") -> None:
        super().__init__(LoadPlan(model=Path("/nonexistent")), name="fake:1", log_dir=log_dir)
        self.mode = mode
        self.marker = marker  # on the command line of the engine's own child, to find it

    def command(self, port: int, api_key: str) -> tuple[list[str], dict[str, str] | None]:
        extra = [self.marker] if self.marker else []
        return [sys.executable, "-c", FAKE, str(port), self.mode, *extra], None


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a killed child of ours stays a zombie until reaped; that is gone too
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return True
        time.sleep(0.1)
    return False


def test_a_process_that_never_becomes_healthy_is_stopped_with_its_last_lines() -> None:
    engine = FakeEngine("never")
    engine.ready_timeout = 2.0

    async def go() -> int | None:
        with pytest.raises(ModelLoadError, match="not ready within 2 s") as err:
            await engine.load()
        assert "stuck loading weights" in err.value.message
        return engine._process.pid if engine._process else None

    pid = asyncio.run(go())
    assert pid is not None and _gone(pid)


def test_unload_stops_the_process_and_what_it_started(tmp_path: Path) -> None:
    engine = FakeEngine("ok", log_dir=tmp_path / "logs")

    async def go() -> int:
        await engine.load()
        assert engine.healthy() and engine.memory() is not None
        pid = engine.pid
        assert pid is not None
        await engine.unload()
        return pid

    assert _gone(asyncio.run(go()))
    # the engine's whole log is kept apart from kennel's, under a file-safe name
    assert "fake engine starting" in (tmp_path / "logs" / "engine-fake_1.log").read_text()


PARENT = textwrap.dedent(
    """
    import asyncio, sys
    sys.path[:0] = [{root!r}]
    from tests.engines.test_process import FakeEngine
    async def main():
        engine = FakeEngine("ok", marker={marker!r})
        await engine.load()
        print(engine.pid, flush=True)
        await asyncio.sleep(600)
    asyncio.run(main())
    """
)


def _with_marker(marker: str) -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if marker in (p.info["cmdline"] or []):
            found.append(p.pid)
    return found


def test_kill_9_of_kennel_leaves_no_engine_behind() -> None:
    """Nor what the engine started: the engine's own child (as vLLM's engine core) goes too."""
    root = str(Path(__file__).resolve().parents[2])
    marker = f"kennel-test-grandchild-{os.getpid()}-{time.monotonic_ns()}"
    with subprocess.Popen(
        [sys.executable, "-c", PARENT.format(root=root, marker=marker)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            os.kill(child, 0)  # running
            deadline = time.monotonic() + 10
            while not _with_marker(marker) and time.monotonic() < deadline:
                time.sleep(0.1)
            grandchildren = _with_marker(marker)
            assert grandchildren
            parent.send_signal(signal.SIGKILL)
            parent.wait(timeout=10)
            assert _gone(child) and all(_gone(g) for g in grandchildren)
        finally:
            parent.kill()


def test_llama_server_flags_follow_the_plan(tmp_path: Path) -> None:
    plan = LoadPlan(model=tmp_path / "m.gguf", context=1024, parallel=4, threads=3, kv_cache_type="q8_0")
    args = llama_server_args(plan, port=9)
    pairs = dict(zip(args, [*args[1:], ""], strict=True))
    # a cache of 1024 tokens for each of the 4 sequences, as kennel's own engine runs them
    assert pairs["-c"] == "4096" and pairs["-np"] == "4" and "-no-kvu" in args and "-kvu" not in args
    unified = llama_server_args(replace(plan, kv_unified=True), port=9)
    assert "-kvu" in unified and unified[unified.index("--kv-unified-per-slot") + 1] == "1024"
    assert pairs["-t"] == "3" and pairs["-ctk"] == "q8_0" and pairs["--host"] == "127.0.0.1"
    assert "--no-context-shift" in args and "--metrics" in args and "--api-key" not in args
    # the key travels in the environment: a command line is readable by every local user
    engine = LlamaServerEngine(plan, name="m")
    argv, env = engine.command(9, "secret-key")
    assert "secret-key" not in argv and env is not None and env["LLAMA_API_KEY"] == "secret-key"
    # llama.cpp's debug lines (which may quote requests) and their continuations are dropped
    assert engine.drop_line("0.00.100.000 D slot params: {prompt: 'x'}") and engine.drop_line("more")
    assert not engine.drop_line("0.00.100.001 I load_tensors: CPU model buffer size = 1.00 MiB")


@pytest.mark.llama
def test_a_killed_llama_server_fails_its_request_alerts_once_and_comes_back(make_model: ModelFactory) -> None:
    path, _ = make_model(n_vocab=512)
    engine = LlamaServerEngine(LoadPlan(model=path, context=512, parallel=2, threads=2), name="tiny")
    told: list[str] = []
    engine.on_failure(told.append)
    endless = Request(
        sampling=Sampling(temperature=0.0, max_tokens=400), messages=(Message("user", "count"),)
    )
    short = Request(sampling=Sampling(temperature=0.0, max_tokens=4), messages=(Message("user", "hi"),))

    async def go() -> Answer:
        await engine.load()
        try:
            stream = engine.generate(endless, "long")
            await stream.__anext__()
            assert engine.pid is not None
            os.kill(engine.pid, signal.SIGKILL)
            with pytest.raises(EngineError, match="stopped answering"):
                async for _ in stream:
                    pass
            deadline = time.monotonic() + 120
            while not (engine.restarts and engine.healthy()) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            answer = Answer()
            async for d in engine.generate(short, "after"):
                answer.add(d)
            return answer
        finally:
            await engine.unload()

    answer = asyncio.run(go())
    assert answer.finish_reason in ("stop", "length") and answer.completion_tokens >= 1
    assert len(told) == 1 and "exited" in told[0] and engine.restarts == 1
