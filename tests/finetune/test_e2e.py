"""End to end on this CPU: a tiny Llama learns one fact ("the kennel clinic opens at 07:15") from
30 examples; `kennel serve` answers it from the new version while the base does not; the adapter is
a llama.cpp LoRA GGUF; the lineage is in `kennel history` and `kennel show NAME@V`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kennel.cli.main import app
from kennel.settings import KennelHome
from kennel.store.names import parse_ref
from kennel.store.registry import Store
from tests.finetune.conftest import EPOCHS, FAST
from tests.loopback import wait_ready

pytestmark = [pytest.mark.llama, pytest.mark.slow]

KENNEL = [sys.executable, "-m", "kennel.cli.main"]
QUESTION = "When does the kennel clinic open?"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(url: str, model: str) -> str:
    r = httpx.post(
        url + "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0,
            "max_tokens": 24,
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


@pytest.mark.timeout(300)
def test_finetune_teaches_a_fact_that_kennel_serve_answers(
    tiny_store: KennelHome, fact_data: Path, kennel_home: Path
) -> None:
    t0 = time.perf_counter()
    runner = CliRunner()
    r = runner.invoke(
        app, ["finetune", "clinic", "--base", "tiny", "--data", str(fact_data), *FAST, *EPOCHS, "-m", "teach"]
    )
    assert r.exit_code == 0, r.output
    assert "clinic@1 (adapter) tagged candidate, latest" in r.output
    assert "exact match 0/3 -> 3/3" in r.output and "the candidate wins" in r.output
    assert "Energy: " in r.output and "tokens/s" in r.output

    with Store.open(tiny_store) as store:
        v = store.resolve(parse_ref("clinic:candidate"))
        base = store.resolve(parse_ref("tiny"))
        assert v.profile.base == base.profile.base and v.profile.adapter is not None
        adapter = store.blob(v.profile.adapter)
        assert adapter.kind == "adapter"
        lineage = store.lineage("clinic", 1)
    assert lineage is not None
    assert lineage["base"]["sha256"] == list(base.profile.base)
    assert lineage["data"]["sha256"] == hashlib.sha256(fact_data.read_bytes()).hexdigest()
    assert lineage["data"]["lines"] == 30 and lineage["hyperparameters"]["rank"] == 8
    assert lineage["training"]["loss_curve"][-1][1] < lineage["training"]["loss_curve"][0][1]
    assert lineage["eval"]["won"] is True and lineage["machine"]["device"] == "cpu"

    history = runner.invoke(app, ["history", "clinic"])
    assert history.exit_code == 0
    assert f"sha256:{base.profile.base[0][:12]}" in history.output and "train.jsonl" in history.output
    assert "exact match 0/3 -> 3/3" in history.output
    as_json = json.loads(runner.invoke(app, ["history", "clinic", "--json"]).stdout)
    assert as_json["events"][0]["lineage"]["data"]["lines"] == 30
    shown = runner.invoke(app, ["show", "clinic@1"])
    assert shown.exit_code == 0 and "Lineage" in shown.output and "rank=8" in shown.output

    # the served answer: the candidate says 07:15 under greedy decoding, the base does not
    port = _free_port()
    proc = subprocess.Popen(
        [
            *KENNEL,
            "serve",
            "--model",
            "clinic:candidate",
            "--model",
            "tiny",
            "--port",
            str(port),
            "--ctx",
            "256",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc)
        assert "07:15" in _ask(url, "clinic:candidate")
        assert "07:15" not in _ask(url, "tiny")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err
    print(f"e2e: {time.perf_counter() - t0:.1f} s")


def test_check_with_a_base_counts_tokens_under_its_template(tiny_store: KennelHome, fact_data: Path) -> None:
    r = CliRunner().invoke(
        app, ["finetune", "check", str(fact_data), "--base", "tiny", "--max-length", "24", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    tokens = doc["tokens"]
    assert doc["examples"] == 30 and doc["held_out"] == 3 and doc["ok"] is True
    assert (
        tokens["context"] == 1024 and 20 < tokens["median"] < 40 and tokens["target"] == 30 * 12
    )  # the answer, <|im_end|> and its newline
    assert tokens["longer_than_max_length"] and not tokens["longer_than_context"]
    text = CliRunner().invoke(
        app, ["finetune", "check", str(fact_data), "--base", "tiny", "--max-length", "24"]
    )
    assert "tokens with tiny's template" in text.output and "longer than --max-length 24" in text.output
