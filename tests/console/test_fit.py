"""The Fit page over HTTP: the `kennel fit` table for a catalog model or a hub reference, and the
`kennel recommend` ranking with no model, on what-if hardware or this machine; the same numbers as
the CLI, and readable errors (never a 500) for a bad reference or an unreachable hub."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from kennel.cli.main import app
from kennel.units import fmt_bytes
from tests.conftest import ModelFactory
from tests.console.apptest import console_client
from tests.console.conftest import screenshot
from tests.console.pagekit import visible_text
from tests.hubserver import HubState, Repo, hub_server

if TYPE_CHECKING:
    from playwright.sync_api import Page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser tests skip themselves (tests/console/conftest.py)
    expect = None  # type: ignore[assignment]

WHAT_IF = {"hardware": "whatif", "gpu": "RTX 4090", "gpu_count": "1", "ctx": "8k"}


def _cli(*args: str) -> dict[str, Any]:
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def _table_rows(html: str, table_id: str) -> list[list[str]]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body.split("<tbody>", 1)[1], flags=re.S)
    return [[visible_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, flags=re.S)] for r in rows]


def test_the_form_offers_the_catalog_and_the_gpu_list(kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        r = client.get("/ui/fit")
    assert r.status_code == 200
    assert '<option value="qwen2.5-7b">' in r.text
    assert '<option value="RTX 4090">' in r.text and '<option value="H100 SXM">' in r.text
    for control in ("fit-catalog", "fit-hub", "hw-here", "hw-whatif", "fit-gpu", "fit-gpu-count", "fit-ctx"):
        assert f'<label for="{control}"' in r.text  # every control has its label
    assert 'id="fit-table"' not in r.text and 'id="recommend-table"' not in r.text


def test_a_catalog_model_on_what_if_hardware_matches_kennel_fit(kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        r = client.get("/ui/fit", params={"catalog_model": "qwen2.5-7b", **WHAT_IF})
    assert r.status_code == 200, r.text
    cli = _cli("fit", "qwen2.5-7b", "--gpu", "RTX 4090", "--ctx", "8k")
    rows = _table_rows(r.text, "fit-table")
    assert [row[0].removeprefix("→ ").split(" ")[0] for row in rows] == [o["quant"] for o in cli["options"]]
    for row, option in zip(rows, cli["options"], strict=True):
        assert row[4] == fmt_bytes(option["total_bytes"])  # memory
        assert row[5] == (f"{option['max_context']:,}" if option["max_context"] else "-")
    recommended = [row[0] for row in rows if row[0].startswith("→")]
    assert recommended == [f"→ {cli['recommended']} (recommended)"]
    assert f"Recommended: {cli['recommended']}" in visible_text(r.text)
    assert "what-if" in visible_text(r.text)
    assert "8192 tokens of context" in visible_text(r.text)


def test_no_model_ranks_the_catalog_like_kennel_recommend(kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        r = client.get("/ui/fit", params={**WHAT_IF, "ctx": ""})
    assert r.status_code == 200, r.text
    cli = _cli("recommend", "--gpu", "RTX 4090")
    rows = _table_rows(r.text, "recommend-table")
    assert [(row[1], row[2]) for row in rows] == [(p["model"], p["quant"]) for p in cli["picks"]]


def test_this_machine_is_probed(kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        r = client.get("/ui/fit", params={"catalog_model": "qwen2.5-0.5b", "hardware": "here", "ctx": "2048"})
    assert r.status_code == 200, r.text
    assert 'id="fit-table"' in r.text
    assert "what-if" not in visible_text(r.text.split('id="fit-result"', 1)[1])


def test_a_hub_reference_reads_the_header_from_hf_endpoint(
    kennel_home: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf, _ = make_model()
    files = {"tiny-F16.gguf": gguf.read_bytes()}
    with hub_server(HubState(repos={"someone/tiny-GGUF": Repo(files=files)})) as (url, state):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with console_client(kennel_home) as client:
            r = client.get("/ui/fit", params={"hub": "hf.co/someone/tiny-GGUF", **WHAT_IF, "ctx": "256"})
    assert r.status_code == 200, r.text
    assert "hf.co/someone/tiny-GGUF" in r.text
    assert "(this file)" in visible_text(r.text)  # the repo's own file is sized too
    assert any("someone/tiny-GGUF" in q for q in state.requests)


def test_an_unreachable_hub_is_a_readable_message(kennel_home: Path) -> None:
    # HF_ENDPOINT points at a closed loopback port (tests/conftest.py)
    with console_client(kennel_home) as client:
        r = client.get("/ui/fit", params={"hub": "hf.co/someone/missing-GGUF:Q4_K_M", **WHAT_IF})
    assert r.status_code == 502
    assert 'id="fit-error"' in r.text
    assert "Cannot reach the Hugging Face hub" in visible_text(r.text)
    assert 'id="fit-form"' in r.text  # the form is still there to try again


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hub": "/etc/passwd"}, "is not a Hugging Face reference"),
        ({"hub": "./model.gguf"}, "is not a Hugging Face reference"),
        ({"catalog_model": "no-such-model"}, "is not in the catalog"),
        (
            {"catalog_model": "qwen2.5-7b", "hardware": "whatif", "gpu": "RTX 4090", "gpu_count": "0"},
            "between 1",
        ),
        ({"catalog_model": "qwen2.5-7b", "hardware": "whatif"}, "choose a GPU or give the RAM"),
        ({"catalog_model": "qwen2.5-7b", "ctx": "lots"}, "Cannot read number"),
    ],
)
def test_bad_input_is_explained_not_a_500(kennel_home: Path, params: dict[str, str], message: str) -> None:
    with console_client(kennel_home) as client:
        r = client.get("/ui/fit", params=params)
    assert r.status_code == 400
    assert message in visible_text(r.text)


def test_the_page_speaks_vietnamese(kennel_home: Path) -> None:
    with console_client(kennel_home) as client:
        r = client.get(
            "/ui/fit", params={"catalog_model": "qwen2.5-7b", **WHAT_IF}, headers={"accept-language": "vi"}
        )
    assert r.status_code == 200
    assert "Will it fit?" not in r.text and "Quantization" not in r.text


# ---- in the browser, against `kennel serve` (tests/console/conftest.py) -------------------------
def test_browser_fit_on_what_if_hardware(user_page: Page) -> None:
    page = user_page  # reading pages: users too
    page.goto("/ui/fit")
    page.get_by_label("From the catalog").select_option("qwen2.5-7b")
    page.get_by_label("What-if hardware").check()
    page.get_by_label("GPU", exact=True).select_option("RTX 4090")
    page.get_by_label("How many").fill("2")
    page.get_by_label("Context length in tokens (optional)").fill("16k")
    page.get_by_role("button", name="Size it").click()
    expect(page.locator("#fit-table")).to_be_visible()
    expect(page.locator("#fit-result")).to_contain_text("2x RTX 4090")
    expect(page.locator("#fit-table tr.recommended")).to_have_count(1)
    screenshot(page, "fit")
    page.get_by_label("From the catalog").select_option("")
    page.get_by_role("button", name="Size it").click()
    expect(page.locator("#recommend-table")).to_be_visible()
