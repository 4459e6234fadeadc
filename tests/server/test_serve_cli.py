"""`kennel serve` as a user starts it: settings from flags, KENNEL_* and a YAML file agree;
refusing to expose a keyless server; the openai client and `kennel ps` against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import ollama
import openai
import pytest

from kennel.errors import InvalidOptionError
from kennel.server.settings import load_settings
from kennel.settings import KennelHome
from tests.loopback import wait_ready
from tests.server.serverkit import free_port, spec_for

KENNEL = [sys.executable, "-m", "kennel.cli.main"]


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        "port: 9001\nmax_queue: 3\nmodels:\n  - {model: qwen2.5-0.5b, pinned: true, keep_alive: -1}\n"
    )
    s = load_settings(cfg)
    assert s.port == 9001 and s.max_queue == 3 and s.models[0].pinned and s.host == "127.0.0.1"
    monkeypatch.setenv("KENNEL_PORT", "9002")
    assert load_settings(cfg).port == 9002  # environment over the file
    assert load_settings(cfg, port=9003).port == 9003  # flags over both
    monkeypatch.delenv("KENNEL_PORT")
    cfg.write_text("port: 70000\n")
    with pytest.raises(InvalidOptionError, match="port"):
        load_settings(cfg)
    monkeypatch.setenv("KENNEL_PORT", "abc")  # a bad variable is named as it was set
    with pytest.raises(InvalidOptionError, match="Invalid environment variable: KENNEL_PORT='abc': "):
        load_settings(None)
    monkeypatch.delenv("KENNEL_PORT")
    cfg.write_text("colour: blue\n")
    with pytest.raises(InvalidOptionError, match="colour"):
        load_settings(cfg)


def test_ollama_port_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("ollama_port: 11434\n")
    assert load_settings(cfg).ollama_port == 11434 and load_settings(None).ollama_port is None
    monkeypatch.setenv("KENNEL_OLLAMA_PORT", "11500")
    assert (
        load_settings(cfg).ollama_port == 11500 and load_settings(cfg, ollama_port=11600).ollama_port == 11600
    )


def test_the_ollama_port_must_be_another_port(make_model) -> None:  # type: ignore[no-untyped-def]
    path, _ = make_model()
    port = free_port()
    r = subprocess.run(
        [*KENNEL, "serve", "--model", str(path), "--port", str(port), "--ollama-port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "is the server's own port" in r.stderr and "Traceback" not in r.stderr


def test_refuses_network_bind_without_keys(make_model) -> None:  # type: ignore[no-untyped-def]
    path, _ = make_model()
    for host in ("0.0.0.0", "", "::"):  # "" binds every interface, like the other two
        r = subprocess.run(
            [*KENNEL, "serve", "--model", str(path), "--host", host],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and "without API keys" in r.stderr and "kennel keys create" in r.stderr
    r = subprocess.run([*KENNEL, "serve"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Nothing to serve" in r.stderr


@pytest.mark.llama
@pytest.mark.timeout(180)
def test_serve_imported_model_end_to_end(make_model, kennel_home: Path) -> None:  # type: ignore[no-untyped-def]
    """From `kennel import` to a working private API used by the openai client."""
    path, _ = make_model()
    assert (
        subprocess.run(
            [*KENNEL, "import", str(path), "--name", "tiny"], capture_output=True, timeout=60
        ).returncode
        == 0
    )
    port, ollama_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *KENNEL,
            "serve",
            "--model",
            "tiny",
            "--port",
            str(port),
            "--ctx",
            "256",
            "--ollama-port",
            str(ollama_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, seconds=60, proc=proc)
        rm = subprocess.run([*KENNEL, "rm", "tiny"], capture_output=True, text=True, timeout=60)
        assert rm.returncode == 2 and "kennel serve" in rm.stderr  # served, though not loaded yet
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as c:
            r = c.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        assert r.usage is not None and r.usage.completion_tokens <= 4
        with ollama.Client(host=f"http://127.0.0.1:{ollama_port}") as o:  # the same server on a second port
            said = o.chat(
                model="tiny", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2}
            )
            listed = [m.model for m in o.list().models]
        assert said.done and listed == ["tiny"]
        ps = subprocess.run(
            [*KENNEL, "ps", "--url", url, "--json"], capture_output=True, text=True, timeout=60
        )
        doc = json.loads(ps.stdout)
        assert doc["models"][0]["model"] == "tiny" and doc["models"][0]["state"] == "ready"
        # the address as people write it: KENNEL_URL (the checkups' /v1 form), no scheme
        bare = {**os.environ, "KENNEL_URL": url.removeprefix("http://") + "/v1/"}
        ps = subprocess.run([*KENNEL, "ps"], capture_output=True, text=True, timeout=60, env=bare)
        assert ps.returncode == 0 and "tiny" in ps.stdout, ps.stderr
        rm = subprocess.run([*KENNEL, "rm", "tiny"], capture_output=True, text=True, timeout=60)
        assert rm.returncode == 2 and "kennel serve" in rm.stderr  # and now loaded
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert b"hi" not in err  # prompt text is never logged by default
    assert b'"status": 200' in err and b'"completion_tokens"' in err


def test_loopback_is_what_the_host_resolves_to() -> None:
    def loop(host: str) -> bool:
        return load_settings(None, host=host).is_loopback()

    assert loop("127.0.0.1") and loop("::1") and loop("localhost") and loop("127.3.4.5")
    assert not loop("") and not loop("0.0.0.0") and not loop("::") and not loop("no-such-host.invalid")


def test_a_port_in_use_is_refused_before_anything_loads(make_model) -> None:  # type: ignore[no-untyped-def]
    path, _ = make_model()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        r = subprocess.run(
            [*KENNEL, "serve", "--model", str(path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2 and f"Port {port}" in r.stderr and "already in use" in r.stderr
    assert f"--port {port + 1}" in r.stderr and "Traceback" not in r.stderr
    assert "Ollama" not in r.stderr  # not Ollama's port: no guess that Ollama holds it
    assert "kennel serve on" not in r.stderr and time.monotonic() - t0 < 30  # before the banner and any load


def test_scheduled_checkups_are_checked_at_start(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, _ = make_model()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        f"models: [{{model: {path}}}]\ncheckups:\n  - {{cron: 'at seven', notify: ['webhook:http://127.0.0.1:9/x']}}\n"
    )
    r = subprocess.run([*KENNEL, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cron expression" in r.stderr
    cfg.write_text(
        f"models: [{{model: {path}}}]\ncheckups:\n  - {{cron: '0 7 * * *', notify: ['pager:123']}}\n"
    )
    r = subprocess.run([*KENNEL, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "slack:" in r.stderr


def test_a_context_past_the_trained_one_is_warned_about(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kennel.cli.serve import _context_warnings

    path, _ = make_model()  # trained on 4096 tokens
    home = KennelHome(tmp_path / "h")
    within, past = spec_for(path, home, name="a", ctx=4096), spec_for(path, home, name="b", ctx=8192)
    assert (within.ctx_train, past.ctx_train) == (4096, 4096)
    (said,) = _context_warnings([within, past])
    assert said.startswith("b: ctx 8192 is beyond the 4096 tokens the model was trained on")
