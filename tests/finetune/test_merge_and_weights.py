"""--merge: the adapter folded into the base GGUF and quantized back answers as the adapter does;
--suite and --promote-if-better; --weights: training on the transformers weights pulled from the
hub, and the refusal of weights that belong to another model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kennel.cli.main import app
from kennel.errors import AdapterMismatchError
from kennel.finetune.data import Turn
from kennel.finetune.evaluate import EvalCase, evaluate
from kennel.finetune.merge import merged_model
from kennel.hardware.whatif import what_if
from kennel.model.gguf_header import read_header
from kennel.model.sources import FileSource
from kennel.server.models import model_spec
from kennel.settings import KennelHome
from kennel.store.names import parse_ref
from kennel.store.registry import Store
from tests.finetune.conftest import EPOCHS, FAST
from tests.finetune.tinymodel import ANSWER, QUESTIONS, TinyModel, make_tiny_model
from tests.hubserver import HubState, Repo, hub_server

pytestmark = [pytest.mark.llama, pytest.mark.slow]

SUITE = """
name: clinic
prompts:
  - id: opening
    prompt: When does the kennel clinic open?
    max_tokens: 24
    assert: [{type: contains, value: "07:15"}]
"""


def _answers(home: KennelHome, ref: str, questions: list[str]) -> tuple[str, ...]:
    spec = model_spec(ref, home=home, hw=what_if(ram=16 * 2**30, cpu_cores=2), parallel=1, threads=1, ctx=256)
    cases = [EvalCase(i, (Turn("user", q),), ANSWER, 24) for i, q in enumerate(questions)]
    return evaluate(spec, cases, suite=None, loss=None).answers


@pytest.mark.timeout(300)
def test_merge_answers_as_the_adapter_does(tiny_store: KennelHome, fact_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--base", "tiny", "--data", str(fact_data), *FAST, *EPOCHS]
    adapter = runner.invoke(app, ["finetune", "clinic", *common])
    assert adapter.exit_code == 0, adapter.output
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    merged = runner.invoke(
        app, ["finetune", "merged", *common, "--merge", "--suite", str(suite), "--promote-if-better"]
    )
    assert merged.exit_code == 0, merged.output
    assert "merged@1 (merged model) tagged candidate, latest, prod" in merged.output
    assert "suite 0/1 -> 1/1" in merged.output

    with Store.open(tiny_store) as store:
        base = store.resolve(parse_ref("tiny"))
        m = store.resolve(parse_ref("merged:prod"))
        lineage = store.lineage("merged", 1)
        a = store.resolve(parse_ref("clinic:candidate"))
        assert a.profile.adapter is not None
        adapter_path = store.blobs.path(a.profile.adapter)
        merged_path = store.blobs.path(m.profile.base[0])
    assert m.profile.adapter is None and m.profile.base != base.profile.base
    assert lineage is not None and lineage["kind"] == "merged" and lineage["quant"] == "F32"
    assert lineage["eval"]["candidate"]["suite_passed"] == 1
    assert read_header(FileSource(merged_path)).metadata["general.file_type"] == 0  # the base's F32

    questions = [*QUESTIONS[:6], "Hi! What time does the kennel clinic open?"]
    from_adapter = _answers(tiny_store, "clinic:candidate", questions)
    assert from_adapter == _answers(tiny_store, "merged:candidate", questions)
    assert all("07:15" in a for a in from_adapter)

    # to another quantization: the merged weights in Q8_0, the rest as llama-quantize chooses
    q8 = merged_model(
        read_header_path(tiny_store), adapter_path, tmp_path / "q8.gguf", quant="Q8_0", threads=1
    )
    header = read_header(FileSource(q8))
    types = {t.name: t.type_name for t in header.tensors}
    assert header.metadata["general.file_type"] == 7 and types["blk.0.attn_q.weight"] == "Q8_0"


def read_header_path(home: KennelHome) -> Path:
    with Store.open(home) as store:
        return store.blobs.path(store.resolve(parse_ref("tiny")).profile.base[0])


@pytest.fixture
def hub(
    monkeypatch: pytest.MonkeyPatch, tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The tiny model's transformers folder on a loopback hub, and a smaller model's beside it."""
    small = make_tiny_model(tmp_path_factory.mktemp("small"), hidden=32)

    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    state = HubState(
        repos={"acme/tiny": Repo(files=files(tiny.folder)), "acme/small": Repo(files=files(small.folder))}
    )
    with hub_server(state) as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield


@pytest.mark.timeout(300)
def test_training_on_pulled_transformers_weights(tiny_store: KennelHome, fact_data: Path, hub: None) -> None:
    runner = CliRunner()
    for repo, name in (("acme/tiny", "tiny-hf"), ("acme/small", "small-hf")):
        pulled = runner.invoke(app, ["pull", f"hf.co/{repo}", "--name", name, "--json"])
        assert pulled.exit_code == 0, pulled.output
        assert json.loads(pulled.stdout)["version"]["profile"]["format"] == "transformers"
    common = ["--base", "tiny", "--data", str(fact_data), *FAST, *EPOCHS]
    wrong = runner.invoke(app, ["finetune", "clinic", *common, "--weights", "small-hf"])
    assert isinstance(wrong.exception, AdapterMismatchError)  # refused before any training
    assert "do not match the base GGUF: blk.0.attn_q.weight is 64x64 in the base, 32x32" in str(
        wrong.exception
    )
    ok = runner.invoke(app, ["finetune", "clinic", *common, "--weights", "tiny-hf", "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["won"] is True and "transformers weights" in doc["lineage"]["weights"]["source"]
    with Store.open(tiny_store) as store:
        folder = store.resolve(parse_ref("tiny-hf"))
    assert doc["lineage"]["weights"]["sha256"] == list(folder.profile.base)
    assert "07:15" in _answers(tiny_store, "clinic:candidate", [QUESTIONS[0]])[0]
