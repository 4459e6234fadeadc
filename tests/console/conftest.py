"""Browser tests of the web console: a real `kennel serve` (a subprocess on a free loopback port,
serving a generated tiny GGUF imported into its store, with an admin key and a user key) driven
by headless Chromium through Playwright.

The browser is Debian's chromium (``/usr/bin/chromium``; Playwright's own download needs the
internet). Without chromium or the playwright package the browser tests are skipped, with the
reason; nothing else is.

Every page made here records and aborts any request to a host other than the kennel server, and
an autouse check fails the test if one was made: the console must work air-gapped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.conftest import ModelFactory
from tests.loopback import wait_ready
from tests.server.serverkit import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

KENNEL = [sys.executable, "-m", "kennel.cli.main"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "console-screenshots"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
MODEL = "tiny"


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (bash scripts/install.sh --dev)"
    if chromium_path() is None:
        return (
            "chromium is not installed (sudo apt-get install chromium, or scripts/install.sh --dev as root)"
        )
    return None


@pytest.fixture(scope="session")
def console_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The KENNEL_HOME of the console's server (its store, keys.db, history)."""
    return tmp_path_factory.mktemp("console") / "kennel-home"


def kennel_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the kennel CLI against the console server's home (as its operator would)."""
    env = {**os.environ, "KENNEL_HOME": str(home)}
    return subprocess.run([*KENNEL, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def console_keys(console_home: Path) -> dict[str, str]:
    with KeyStore.open(KennelHome(console_home)) as keys:
        _, admin = keys.create("console-admin", role="admin")
        _, user = keys.create("console-user", role="user")
    return {"admin": admin, "user": user}


@pytest.fixture(scope="session")
def admin_key(console_keys: dict[str, str]) -> str:
    return console_keys["admin"]


@pytest.fixture(scope="session")
def user_key(console_keys: dict[str, str]) -> str:
    return console_keys["user"]


@pytest.fixture(scope="package")
def console_url(
    make_model: ModelFactory,
    console_home: Path,
    console_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A real `kennel serve` of the generated model "tiny" (imported into the store)."""
    reason = _why_no_browser()
    if reason:
        pytest.skip(reason)
    path, _ = make_model()
    imported = kennel_cli(console_home, "import", str(path), "--name", MODEL)
    assert imported.returncode == 0, imported.stderr
    port = free_port()
    log = tmp_path_factory.mktemp("console-log") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*KENNEL, "serve", "--model", MODEL, "--port", str(port), "--ctx", "512"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KENNEL_HOME": str(console_home)},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc, log=lambda: log.read_text(errors="replace"))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the console's tests, closed when they are done: Playwright's sync API
    keeps an event loop marked running in this thread while it is open, and the rest of the suite
    calls asyncio.run()."""
    reason = _why_no_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # as root (containers, CI) Chromium refuses to start with its sandbox on
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        yield b
        b.close()


@pytest.fixture
def foreign_requests() -> list[str]:
    """URLs the pages of this test asked for on any host but the kennel server's."""
    return []


@pytest.fixture(autouse=True)
def no_foreign_requests(foreign_requests: list[str]) -> Iterator[None]:
    yield
    assert not foreign_requests, f"the console asked another host: {foreign_requests}"


def guard_hosts(context: BrowserContext, base: str, recorded: list[str], allow: tuple[str, ...] = ()) -> None:
    """Record and abort every request that is not to ``base``'s host and port (or to ``allow``:
    the "other site" of a cross-site test)."""
    own = {urlsplit(base).netloc, *(urlsplit(a).netloc for a in allow)}

    def route(r: Any) -> None:
        parts = urlsplit(r.request.url)
        if parts.scheme in ("data", "blob", "about") or parts.netloc in own:
            r.continue_()
        else:
            recorded.append(r.request.url)
            r.abort()

    context.route("**/*", route)


PageFactory = Callable[..., "Page"]


@pytest.fixture
def new_page(browser: Browser, console_url: str, foreign_requests: list[str]) -> Iterator[PageFactory]:
    """``new_page(key=None, js=True, locale="en-US", allow=())``: a page in a fresh browser context,
    signed in with ``key`` when one is given, guarded against other hosts than the server (and
    the ``allow`` URLs)."""
    contexts: list[BrowserContext] = []

    def make(
        key: str | None = None, *, js: bool = True, locale: str = "en-US", allow: tuple[str, ...] = ()
    ) -> Page:
        context = browser.new_context(
            viewport=VIEWPORT, java_script_enabled=js, locale=locale, base_url=console_url
        )
        contexts.append(context)
        guard_hosts(context, console_url, foreign_requests, allow)
        page = context.new_page()
        if key is not None:
            sign_in(page, key)
        return page

    yield make
    for context in contexts:
        context.close()


def sign_in(page: Page, key: str) -> None:
    page.goto("/ui/signin")
    page.get_by_label(re.compile("API key|Khóa API")).fill(key)
    page.locator("form[action='/ui/signin'] button[type=submit]").click()
    page.wait_for_url(re.compile(r"/ui/$"))


@pytest.fixture
def admin_page(new_page: PageFactory, admin_key: str) -> Page:
    return new_page(admin_key)


@pytest.fixture
def user_page(new_page: PageFactory, user_key: str) -> Page:
    return new_page(user_key)


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot for the people reviewing the change (build/ is gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
