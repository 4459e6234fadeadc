"""`kennel run` as a user meets it: a prompt answered (streamed or as JSON), a chat over piped
stdin, a store model's profile applied, and one clear line for what cannot be run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import _bad, kennel
from tests.conftest import ModelFactory

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]

SYSTEM = "You are a terse assistant. Answer in one short sentence and never apologise."


def _run_json(*args: str) -> dict[str, Any]:
    r = kennel("run", *args, "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    assert doc["schema"] == "kennel.run/v1" and isinstance(doc["text"], str)
    assert doc["prompt_tokens"] > 0 and doc["seconds"] > 0 and doc["tokens_per_s"] >= 0
    return doc


def test_run_a_gguf_file(make_model: ModelFactory) -> None:
    path, _ = make_model()
    doc = _run_json(str(path), "hello", "--max-tokens", "8", "--seed", "1")
    assert doc["completion_tokens"] == 8 or (doc["completion_tokens"] < 8 and doc["finish_reason"] == "stop")
    # streamed: the same answer (same seed) on stdout as it comes, the speed on stderr
    r = kennel("run", str(path), "hello", "--max-tokens", "8", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == doc["text"] + ("" if doc["text"].endswith("\n") else "\n")
    assert f"{doc['completion_tokens']} tokens" in r.stderr and "tok/s" in r.stderr


def test_run_a_store_model_with_its_profile(make_model: ModelFactory, tmp_path: Path) -> None:
    path, _ = make_model()
    assert kennel("import", str(path), "--name", "tiny").returncode == 0
    profile = tmp_path / "profile.yaml"
    profile.write_text(f"from: tiny\nsystem: {SYSTEM}\nparameters:\n  max_tokens: 3\n  temperature: 0\n")
    created = kennel("create", "brief", "-f", str(profile))
    assert created.returncode == 0, created.stderr
    plain = _run_json("tiny", "hello", "--max-tokens", "8", "--seed", "1")
    brief = _run_json("brief", "hello", "--seed", "1")
    # the profile's system prompt is in the prompt, its max_tokens caps the answer
    assert brief["prompt_tokens"] >= plain["prompt_tokens"] + len(SYSTEM) // 2
    assert brief["completion_tokens"] == 3 or brief["finish_reason"] == "stop"
    assert brief["completion_tokens"] <= 3


def test_chat_over_piped_stdin(make_model: ModelFactory) -> None:
    path, _ = make_model()
    r = subprocess.run(
        [sys.executable, "-m", "kennel.cli.main", "run", str(path), "--max-tokens", "8", "--seed", "1"],
        input="hi\n/system be brief\nhello\n/reset\n/quit\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr
    speeds = [line for line in r.stderr.splitlines() if "tok/s" in line]
    assert len(speeds) == 2, r.stderr
    assert all("first token" in s for s in speeds)
    assert "System prompt set." in r.stderr and "History cleared." in r.stderr
    # the second turn's prompt holds the system prompt and the first exchange
    used = [int(m.group(1)) for s in speeds if (m := re.search(r"context (\d+)/", s))]
    assert len(used) == 2 and used[1] > used[0] + len("be brief")


def test_what_cannot_be_run(make_model: ModelFactory) -> None:
    path, _ = make_model()
    assert "nosuch" in _bad("run", "nosuch", "hi")
    assert "--json needs a PROMPT" in _bad("run", str(path), "--json")
    err = _bad("run", str(path), "word " * 200, "--ctx", "64")
    assert "context of 256 tokens" in err and "1451" in err  # llama.cpp pads a context to 256
