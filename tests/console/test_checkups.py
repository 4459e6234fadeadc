"""The Checkups page over HTTP, against a real server on loopback (a run goes through the API):
trends per model version with regressions and their cause, the last runs' failed assertions,
alerts delivered and not, and "Run now" — admins only, with CSRF, recorded like a scheduled run."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from kennel.checkup.alerts import AlertState, deliver
from kennel.checkup.channels import parse_channel
from kennel.checkup.results import db_path, default_csv
from kennel.checkup.scheduler import Scheduled, run_once
from kennel.engines.base import Memory
from kennel.settings import KennelHome
from kennel.store.registry import Store
from tests.checkup.fakeserver import Script, ScriptedEngine, fake_spec
from tests.conftest import ModelFactory
from tests.console.conftest import screenshot
from tests.console.pagekit import MODEL, console_client, csrf_of, make_keys, two_versions, visible_text
from tests.loopback import webhook_receiver
from tests.server.serverkit import running_server

if TYPE_CHECKING:
    from playwright.sync_api import Page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser tests skip themselves (tests/console/conftest.py)
    expect = None  # type: ignore[assignment]

pytestmark = pytest.mark.timeout(180)

SUITE = (
    "name: smoke\nprompts:\n  - id: capital\n    prompt: What is the capital of France?\n"
    "    assert:\n      - {type: icontains, value: paris}\n"
)


@pytest.fixture
def home(kennel_home: Path, make_model: ModelFactory) -> KennelHome:
    h = KennelHome(kennel_home)
    gguf, _ = make_model()
    two_versions(h, gguf)
    return h


@pytest.fixture
def script() -> Script:
    return Script(default="Paris is the capital of France.")


@contextmanager
def _serving(home: KennelHome, script: Script) -> Iterator[str]:
    """The store's model served (by name) by a scripted engine: answers and delays on demand."""
    with running_server(
        [fake_spec(MODEL)],
        home,
        engine_factory=lambda s: ScriptedEngine(s, script),
        budget=Memory(ram=1 << 30),
    ) as url:
        yield url


@pytest.fixture
def server(home: KennelHome, script: Script) -> Iterator[str]:
    with _serving(home, script) as url:
        yield url


def _points(html: str, metric: str = "pass-rate", model: str = MODEL) -> int:
    section = html.split(f'id="trend-{model}"', 1)[1].split("</section>", 1)[0]
    m = re.search(rf'data-metric="{metric}" data-points="(\d+)"', section)
    assert m is not None
    box = section.split(f'data-metric="{metric}"', 1)[1].split("</figure>", 1)[0]
    assert box.count('class="chart-point"') == int(m.group(1))  # the dots drawn are the points counted
    return int(m.group(1))


def _wait_until_done(client: httpx.Client, deadline_s: float = 60) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        html = client.get("/ui/checkups").text
        if 'class="running"' not in html:
            return html
        assert 'http-equiv="refresh"' in html  # a page without JS refreshes itself while it runs
        time.sleep(0.2)
    raise AssertionError("the checkup did not finish")


def test_no_run_yet_reads_without_creating_anything(home: KennelHome, server: str) -> None:
    with console_client(server) as client:
        r = client.get("/ui/checkups")
    assert r.status_code == 200
    assert "No checkup has run yet" in r.text
    assert 'id="run-form"' in r.text  # the open console's local user is an admin
    assert not db_path(home).exists()


def test_trend_marks_a_regression_with_its_cause(
    home: KennelHome, server: str, script: Script, tmp_path: Path
) -> None:
    suite = tmp_path / "smoke.yaml"
    suite.write_text(SUITE)
    job = Scheduled(cron="0 7 * * *", model=MODEL, suite=suite)
    for _ in range(3):
        run_once(job, server + "/v1", home)
    with Store.open(home) as store:  # a tag change between the runs: the likely cause
        store.rollback(MODEL, to=1, actor="console:boss", message="answers got worse")
    script.first_delay = 0.6  # the planted slowdown
    script.answers = {"capital": "Lyon."}  # and a failed assertion
    run_once(job, server + "/v1", home)
    with console_client(server) as client:
        r = client.get("/ui/checkups")
    assert r.status_code == 200
    assert _points(r.text, "pass-rate") == 4 and _points(r.text, "latency") == 4
    trend = r.text.split(f'id="trend-{MODEL}"', 1)[1].split("</section>", 1)[0]
    assert "@2" in trend and "@1" in trend  # a series per version
    assert trend.count('class="chart-marker"') >= 2  # pass rate and latency both regressed
    text = visible_text(trend)
    assert "Since version 1: rolled back by console:boss" in text
    assert "Reason: answers got worse" in text
    runs = visible_text(r.text.split('id="runs"', 1)[1])
    assert "capital" in runs and "icontains" in runs  # the failed assertion of the last run
    assert "0/1" in runs and "1/1" in runs


def test_admin_runs_a_checkup_now_and_sees_the_new_point(home: KennelHome, script: Script) -> None:
    admin, _ = make_keys(home)
    with _serving(home, script) as url, console_client(url, admin) as client:
        page = client.get("/ui/checkups")
        assert page.status_code == 200 and 'id="run-form"' in page.text
        r = client.post("/ui/checkups/run", data={"csrf_token": csrf_of(page.text), "model": MODEL})
        assert r.status_code == 303 and r.headers["location"] == f"/ui/checkups?started={MODEL}"
        first = _wait_until_done(client)
        assert _points(first) == 1
        r = client.post("/ui/checkups/run", data={"csrf_token": csrf_of(first), "model": MODEL})
        assert r.status_code == 303
        second = _wait_until_done(client)
        assert _points(second) == 2
        metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    # recorded like a scheduled run: the CSV, the database (with the store version) and the metrics
    rows = default_csv(home).read_text().splitlines()
    assert len(rows) == 1 + 2 * 10  # the default suite's ten prompts, twice
    assert all(f",{MODEL}," in row for row in rows[1:])
    assert re.search(
        rf'kennel_checkup_runs_total\{{model="{MODEL}",result="\w+",suite="default"\}} 2\.0', metrics
    )
    assert "@2" in visible_text(second.split('id="runs"', 1)[1])
    assert "is not served here" not in second


def test_users_see_the_trend_but_cannot_run(home: KennelHome, script: Script) -> None:
    _, user = make_keys(home)
    with _serving(home, script) as url, console_client(url, user) as client:
        page = client.get("/ui/checkups")
        r = client.post("/ui/checkups/run", data={"csrf_token": csrf_of(page.text), "model": MODEL})
    assert page.status_code == 200 and 'id="run-form"' not in page.text
    assert r.status_code == 403
    assert not db_path(home).exists()


def test_run_now_needs_the_csrf_token_and_a_served_model(home: KennelHome, server: str) -> None:
    with console_client(server) as client:
        page = client.get("/ui/checkups")
        no_token = client.post("/ui/checkups/run", data={"model": MODEL})
        bad_model = client.post("/ui/checkups/run", data={"csrf_token": csrf_of(page.text), "model": "other"})
    assert no_token.status_code == 403
    assert bad_model.status_code == 400 and "other is not served here." in visible_text(bad_model.text)
    assert not db_path(home).exists()


def test_alerts_sent_and_undelivered(home: KennelHome, server: str) -> None:
    with webhook_receiver() as (hook, got), AlertState.open(home) as state:
        sent = state.observe("checkup smoke on tiny", True, threshold=1, text="1 of 1 prompts failed")
        assert sent is not None
        deliver(sent, [parse_channel(f"webhook:{hook}")], state=state)
        lost = state.observe("regression on tiny", True, threshold=1, text="p50 latency ×3.0")
        assert lost is not None
        deliver(
            lost,
            [parse_channel("webhook:http://127.0.0.1:9/hooks/SECRET-TOKEN")],
            state=state,
            attempts=2,
            backoff_s=0,
        )
        state.observe("checkup other", True, threshold=1, text="never sent")  # no channel at all
    assert len(got) == 1
    with console_client(server) as client:
        r = client.get("/ui/checkups")
    alerts = visible_text(r.text.split('id="alerts"', 1)[1].split("</table>", 1)[0])
    assert "checkup smoke on tiny" in alerts and "delivered (1 attempt)" in alerts
    assert "regression on tiny" in alerts and "not delivered" in alerts and "(2 attempts)" in alerts
    undelivered = visible_text(r.text.split('id="undelivered"', 1)[1].split("</ul>", 1)[0])
    assert "regression on tiny" in undelivered and "checkup other" in undelivered
    assert "checkup smoke on tiny" not in undelivered
    assert "no delivery was tried" in undelivered
    assert "webhook:http://127.0.0.1:9/hooks/…" in alerts
    assert "SECRET-TOKEN" not in r.text  # a channel shows by its label only


# ---- in the browser, against `kennel serve` (tests/console/conftest.py) -------------------------
def _browser_points(page: Page) -> int:
    chart = page.locator(f"#trend-{MODEL} figure[data-metric='pass-rate']")
    return chart.locator("circle.chart-point").count() if chart.count() else 0


def test_browser_run_now_adds_a_point_to_the_trend(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/checkups")
    before = _browser_points(page)
    page.get_by_label("Model", exact=True).select_option(MODEL)
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/ui/checkups\?started="))
    expect(page.get_by_role("status").first).to_contain_text(MODEL)
    deadline = time.monotonic() + 150
    while page.locator("p.running").count():  # the page refreshes itself; reload to be sure
        assert time.monotonic() < deadline, "the checkup did not finish"
        time.sleep(1)
        page.goto("/ui/checkups")
    assert _browser_points(page) == before + 1
    expect(page.locator("#runs")).to_contain_text(MODEL)
    screenshot(page, "checkups")


def test_browser_user_has_no_run_button(user_page: Page) -> None:
    user_page.goto("/ui/checkups")
    expect(user_page.get_by_role("heading", name="Checkups", exact=True)).to_be_visible()
    expect(user_page.locator("#run-form")).to_have_count(0)
