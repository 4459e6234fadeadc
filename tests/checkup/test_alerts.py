"""Checkup alerts: channel parsing, the once-on-start / once-on-recovery rule kept across runs, and
delivery with retries to loopback HTTP and SMTP receivers started by the tests themselves."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kennel.checkup.alerts import (
    Alert,
    AlertState,
    DeliveryResult,
    FailureStreak,
    UndeliveredAlert,
    alerts_path,
    deliver,
)
from kennel.checkup.channels import Channel, parse_channel
from kennel.errors import InvalidOptionError
from kennel.settings import KennelHome
from tests.loopback import Quiet, running

AT = "2026-05-01T12:00:00+00:00"
SECRET = "XXSECRETTOKENXX"  # stands for the token part of a Slack webhook URL


# ---- loopback receivers ----------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """Records every POST; the first ``fail_first`` get ``fail_status`` (and ``retry_after``)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.fail_first = 0
        self.fail_status = 500
        self.retry_after: str | None = None
        self.lock = threading.Lock()
        receiver = self

        class Handler(Quiet):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                    failing = len(receiver.requests) <= receiver.fail_first
                if not failing:
                    self.reply(200, b"ok")
                    return
                wait = () if receiver.retry_after is None else (("Retry-After", receiver.retry_after),)
                self.reply(receiver.fail_status, b"invalid_payload", headers=wait)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@dataclass
class Mail:
    sender: str
    rcpts: list[str]
    data: bytes
    login: tuple[str, str] | None

    def message(self) -> EmailMessage:
        # as a mail store would: lines end in LF once off the wire
        return email.message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=email.policy.default)


@dataclass
class SmtpConfig:
    auth: tuple[str, str] | None = None  # advertise AUTH PLAIN and accept only these credentials
    busy_first: int = 0  # answer the first N connections with "421 busy"
    reject: set[str] = field(default_factory=set)  # recipients answered with 550


class SmtpReceiver:
    """Just enough SMTP for smtplib (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT…); never STARTTLS."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.mails: list[Mail] = []
        self.commands: list[str] = []
        self.sessions = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = 5  # a stuck client cannot hang the test

            def handle(self) -> None:
                receiver.session(self.rfile, self.wfile)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def session(self, rfile: io.BufferedIOBase, wfile: io.BufferedIOBase) -> None:
        def reply(*lines: str) -> None:
            wfile.write(b"".join(line.encode() + b"\r\n" for line in lines))
            wfile.flush()

        with self.lock:
            self.sessions += 1
            busy = self.sessions <= self.config.busy_first
        if busy:
            reply("421 test server busy, try later")
            return
        reply("220 test ESMTP")
        sender, rcpts, login = "", list[str](), None
        for _ in range(100):  # commands per session
            raw = rfile.readline(2000)
            if not raw:
                return
            verb, _, arg = raw.decode().rstrip("\r\n").partition(" ")
            verb = verb.upper()
            with self.lock:
                self.commands.append(verb)
            if verb in ("HELO", "NOOP", "RSET"):
                reply("250 ok")  # RSET needs no reset here: MAIL starts every envelope afresh
            elif verb == "EHLO":
                reply("250-test", *(["250-AUTH PLAIN"] if self.config.auth else []), "250 HELP")
            elif verb == "AUTH":
                _, user, password = base64.b64decode(arg.split(" ", 1)[1]).decode().split("\0")
                ok = (user, password) == self.config.auth
                login = (user, password) if ok else login
                reply("235 authenticated" if ok else "535 bad credentials")
            elif verb == "MAIL":
                sender, rcpts = arg.split(":", 1)[1].strip().strip("<>"), []
                reply("250 ok")
            elif verb == "RCPT":
                addr = arg.split(":", 1)[1].strip().strip("<>")
                refused = addr in self.config.reject
                rcpts += [] if refused else [addr]
                reply("550 no such user" if refused else "250 ok")
            elif verb == "DATA":
                reply("354 end with <CRLF>.<CRLF>")
                lines = []
                for _ in range(10_000):  # lines per message
                    line = rfile.readline(10_000)
                    if line in (b".\r\n", b""):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)  # dot-unstuffing
                with self.lock:
                    self.mails.append(Mail(sender, rcpts, b"".join(lines), login))
                reply("250 queued")
            elif verb == "QUIT":
                reply("221 bye")
                return
            else:
                reply("502 not implemented")


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    with running(receiver.server):
        yield receiver


@pytest.fixture
def smtp_config() -> SmtpConfig:
    return SmtpConfig()


@pytest.fixture
def smtp(smtp_config: SmtpConfig) -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(smtp_config)
    with running(receiver.server):
        yield receiver


@pytest.fixture
def home(kennel_home: Path) -> KennelHome:
    return KennelHome(kennel_home)


@pytest.fixture
def state(home: KennelHome) -> Iterator[AlertState]:
    with AlertState.open(home) as s:
        yield s


class Sleeps(list[float]):
    """An injected sleep that records how long deliver() wanted to wait, and does not wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _alert(kind: str = "failing", **kw: Any) -> Alert:
    values: dict[str, Any] = {
        "kind": kind,
        "subject": "qwen-7b/capital",
        "text": "expected 'Paris', got 'Lyon'",
        "at": AT,
        "failures": 3,
    } | kw
    return Alert(**values)


def _attempts(state: AlertState) -> list[tuple[Any, ...]]:  # (attempt, ok, status) of each attempt
    return [tuple(r) for r in state.conn.execute("SELECT attempt, ok, status FROM deliveries ORDER BY id")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- parse_channel ---------------------------------------------------------------------------
def test_parse_slack_and_webhook() -> None:
    slack = parse_channel(f" slack:https://hooks.slack.com/services/T000/B000/{SECRET} ")
    assert (slack.kind, slack.target) == ("slack", f"https://hooks.slack.com/services/T000/B000/{SECRET}")
    assert slack.label == "slack:https://hooks.slack.com/services/…"
    assert SECRET not in repr(slack) and SECRET not in str(slack)
    hook = parse_channel("webhook:http://127.0.0.1:8080/alerts?token=abc")
    assert (hook.kind, hook.target) == ("webhook", "http://127.0.0.1:8080/alerts?token=abc")
    assert hook.label == "webhook:http://127.0.0.1:8080/alerts"
    assert parse_channel("WEBHOOK:https://example.com").kind == "webhook"


def test_parse_email_full_form() -> None:
    ch = parse_channel(
        "email:smtp://alice%40corp.example:p%2Fss%40w0rd@mail.example.com:587"
        "?to=ops@example.com,oncall@example.com&from=kennel@example.com&starttls=1"
    )
    assert ch == Channel(
        kind="email",
        target="smtp://mail.example.com:587",
        to=("ops@example.com", "oncall@example.com"),
        sender="kennel@example.com",
        username="alice@corp.example",
        password="p/ss@w0rd",
        starttls=True,
    )
    assert "w0rd" not in repr(ch) and "alice" not in ch.label
    assert (
        ch.label == "email:smtp://user@mail.example.com:587?to=ops@example.com,oncall@example.com&starttls=1"
    )


def test_parse_email_defaults() -> None:
    ch = parse_channel("email:smtp://localhost?to=a@b.c&to=d@e.f&from=x@y.z")
    assert (ch.target, ch.to, ch.sender) == ("smtp://localhost:25", ("a@b.c", "d@e.f"), "x@y.z")
    assert (ch.username, ch.password, ch.starttls) == (None, None, False)
    assert (
        parse_channel("email:smtp://[::1]:2525?to=a@b.c&from=x@y.z&starttls=0").target == "smtp://[::1]:2525"
    )


# fmt: off
BAD_CHANNELS = [
    "", "slack", f"hooks.slack.com/services/T000/B000/{SECRET}",
    f"slak:https://hooks.slack.com/services/T000/B000/{SECRET}", "teams:https://example.com/hook",
    "slack:", "slack:ftp://example.com/hook", "webhook:example.com/hook", "webhook:http://exa mple.com/hook",
    "email:http://mail.example.com?to=a@b.c&from=x@y.z",
    "email:smtp://mail.example.com:99999?to=a@b.c&from=x@y.z",
    "email:smtp://mail.example.com:abc?to=a@b.c&from=x@y.z", "email:smtp://:25?to=a@b.c&from=x@y.z",
    "email:smtp://mail.example.com/inbox?to=a@b.c&from=x@y.z", "email:smtp://mail.example.com?from=x@y.z",
    "email:smtp://mail.example.com?to=a@b.c", "email:smtp://mail.example.com?to=a@b.c&from=x@y.z&from=w@y.z",
    "email:smtp://mail.example.com?to=not-an-address&from=x@y.z",
    "email:smtp://mail.example.com?to=a@b.c&from=x@y.z&starttls=maybe",
    "email:smtp://mail.example.com?to=a@b.c&from=x@y.z&tls=1",
]
# fmt: on


@pytest.mark.parametrize("text", BAD_CHANNELS)
def test_parse_channel_rejects(text: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        parse_channel(text)
    hint = info.value.hint or ""
    for form in ("slack:https://", "webhook:https://", "email:smtp://[user:pass@]host:port?to="):
        assert form in hint
    assert SECRET not in str(info.value)  # a mistyped webhook URL is still a secret


# ---- the rule, kept in alerts.db -------------------------------------------------------------
def test_alert_once_when_failing_starts_and_once_on_recovery(state: AlertState) -> None:
    def fail() -> Alert | None:
        return state.observe("qwen/capital", True, threshold=3, text="wrong answer")

    assert [fail(), fail()] == [None, None]
    failing = fail()
    assert failing is not None
    assert (failing.kind, failing.subject, failing.text, failing.failures) == (
        "failing",
        "qwen/capital",
        "wrong answer",
        3,
    )
    assert [fail(), fail()] == [None, None]  # no repeat while still failing
    assert state.failures("qwen/capital") == 5
    recovered = state.observe("qwen/capital", False, threshold=3, text="passing again")
    assert recovered is not None
    assert (recovered.kind, recovered.text, recovered.failures) == ("recovered", "passing again", 5)
    assert state.observe("qwen/capital", False, threshold=3, text="ok") is None
    assert state.failures("qwen/capital") == 0
    # a streak that ends below the threshold raises nothing, and the next one counts from zero
    for failed in (True, True, False, True, True):
        assert state.observe("qwen/capital", failed, threshold=3, text="") is None


def test_counts_persist_across_runs(home: KennelHome) -> None:
    def cron_run(failed: bool) -> Alert | None:  # each run opens alerts.db afresh, as a new process does
        with AlertState.open(home) as run:
            return run.observe("llama/json", failed, threshold=3, text="t")

    assert [cron_run(True), cron_run(True)] == [None, None]
    failing = cron_run(True)
    assert failing is not None and (failing.kind, failing.failures) == ("failing", 3)
    assert cron_run(True) is None
    recovered = cron_run(False)
    assert recovered is not None and (recovered.kind, recovered.failures) == ("recovered", 4)
    assert alerts_path(home).is_file()


def test_subjects_are_independent(state: AlertState) -> None:
    assert state.observe("a", True, threshold=2, text="") is None
    assert state.observe("b", True, threshold=2, text="") is None
    assert state.observe("b", False, threshold=2, text="") is None  # b never reached its threshold
    alert = state.observe("a", True, threshold=2, text="")
    assert alert is not None and alert.subject == "a"
    assert state.observe("b", True, threshold=2, text="") is None
    assert (state.failures("a"), state.failures("b")) == (2, 1)


def test_threshold_one_and_invalid_thresholds(state: AlertState) -> None:
    alert = state.observe("x", True, threshold=1, text="")
    assert alert is not None and alert.failures == 1
    for bad in (0, -1):
        with pytest.raises(InvalidOptionError):
            state.observe("x", True, threshold=bad, text="")
    with pytest.raises(InvalidOptionError):
        FailureStreak(0)


def test_concurrent_processes_count_together(home: KennelHome) -> None:
    alerts: list[Alert] = []
    lock = threading.Lock()

    def run() -> None:
        with AlertState.open(home) as own:  # one connection per worker, as separate processes have
            for _ in range(5):
                if (alert := own.observe("shared", True, threshold=10, text="")) is not None:
                    with lock:
                        alerts.append(alert)

    AlertState.open(home).close()  # migrate once up front, as the first cron run would
    workers = [threading.Thread(target=run) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert [(a.kind, a.failures) for a in alerts] == [("failing", 10)]
    with AlertState.open(home) as s:
        assert s.failures("shared") == 20


def test_raised_alert_is_undelivered_until_delivered(state: AlertState) -> None:
    alert = state.observe("s", True, threshold=1, text="down")
    assert alert is not None
    assert state.undelivered() == [
        UndeliveredAlert(alert=alert, channel=None, attempts=0, error=None, last_attempt_at=None)
    ]
    assert state.undelivered(since="2999-01-01") == []
    assert state.undelivered(since="2000-01-01T00:00:00") == state.undelivered()
    with pytest.raises(InvalidOptionError):
        state.undelivered(since="yesterday")


def test_failure_streak() -> None:
    streak = FailureStreak(3)
    assert [streak.record(ok) for ok in (False, False, True, False, False)] == [None] * 5
    assert streak.record(False) == "started"
    assert [streak.record(False), streak.record(False)] == [None, None]
    assert (streak.failures, streak.alerting) == (5, True)
    assert streak.record(True) == "recovered"
    assert [streak.record(True), streak.alerting, streak.failures] == [None, False, 0]


# ---- delivery over HTTP ----------------------------------------------------------------------
def test_slack_payload(http: HttpReceiver, state: AlertState) -> None:
    channel = parse_channel("slack:" + http.url(f"/services/T000/B000/{SECRET}"))
    results = deliver(_alert(), [channel], state=state, sleep=Sleeps())
    assert results == [DeliveryResult(channel=channel, ok=True, attempts=1, error=None)]
    [request] = http.requests
    assert request.path == f"/services/T000/B000/{SECRET}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "text": "[kennel] FAILING: qwen-7b/capital\nexpected 'Paris', got 'Lyon'",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "[kennel] FAILING: qwen-7b/capital"}},
            {"type": "section", "text": {"type": "plain_text", "text": "expected 'Paris', got 'Lyon'"}},
            {
                "type": "context",
                "elements": [{"type": "plain_text", "text": f"3 consecutive failures as of {AT}"}],
            },
        ],
    }
    assert state.undelivered() == []
    assert _attempts(state) == [(1, 1, None)]
    stored = state.conn.execute("SELECT channel FROM deliveries").fetchone()[0]
    assert SECRET not in stored  # alerts.db never holds the webhook's secret


def test_slack_escapes_markup_and_recovered_wording(http: HttpReceiver, state: AlertState) -> None:
    alert = _alert("recovered", subject="m\nx", text="<!channel> & <b>", failures=1)
    deliver(alert, [parse_channel("slack:" + http.url("/hook"))], state=state, sleep=Sleeps())
    body = http.requests[0].json()
    assert body["text"] == "[kennel] RECOVERED: m x\n&lt;!channel&gt; &amp; &lt;b&gt;"
    assert body["blocks"][1]["text"]["text"] == "<!channel> & <b>"  # plain_text: shown, never parsed
    assert body["blocks"][2]["elements"][0]["text"] == f"Recovered at {AT} after 1 consecutive failure"


def test_webhook_payload(http: HttpReceiver, state: AlertState) -> None:
    deliver(_alert(), [parse_channel("webhook:" + http.url("/kennel"))], state=state, sleep=Sleeps())
    assert http.requests[0].path == "/kennel"
    assert http.requests[0].json() == {
        "kind": "failing",
        "subject": "qwen-7b/capital",
        "text": "expected 'Paris', got 'Lyon'",
        "at": AT,
        "failures": 3,
        "source": "kennel",
    }


def test_retries_5xx_with_exponential_backoff(http: HttpReceiver, state: AlertState) -> None:
    http.fail_first = 2
    sleeps = Sleeps()
    [result] = deliver(_alert(), [parse_channel("webhook:" + http.url("/h"))], state=state, sleep=sleeps)
    assert (result.ok, result.attempts, result.error) == (True, 3, None)
    assert sleeps == [0.5, 1.0]
    assert len(http.requests) == 3
    assert _attempts(state) == [(1, 0, 500), (2, 0, 500), (3, 1, None)]
    assert state.undelivered() == []


def test_429_honours_retry_after_within_a_cap(http: HttpReceiver, state: AlertState) -> None:
    http.fail_first, http.fail_status, http.retry_after = 2, 429, "7"
    sleeps = Sleeps()
    deliver(_alert(), [parse_channel("webhook:" + http.url("/h"))], state=state, sleep=sleeps)
    assert sleeps == [7.0, 7.0]
    http.requests.clear()
    http.fail_first, http.retry_after = 1, "3600"
    sleeps.clear()
    deliver(_alert(subject="other"), [parse_channel("webhook:" + http.url("/h"))], state=state, sleep=sleeps)
    assert sleeps == [30.0]  # a cron run is not held for an hour


def test_4xx_is_not_retried_and_is_kept_undelivered(
    http: HttpReceiver, state: AlertState, caplog: pytest.LogCaptureFixture
) -> None:
    http.fail_first, http.fail_status = 99, 400
    sleeps = Sleeps()
    channel = parse_channel("slack:" + http.url(f"/services/T000/B000/{SECRET}"))
    [result] = deliver(_alert(), [channel], state=state, sleep=sleeps)
    assert (result.ok, result.attempts, result.error) == (False, 1, "HTTP 400: invalid_payload")
    assert sleeps == [] and len(http.requests) == 1
    [missed] = state.undelivered()
    assert (missed.alert, missed.channel, missed.attempts, missed.error) == (
        _alert(),
        channel.label,
        1,
        "HTTP 400: invalid_payload",
    )
    errors = [r for r in caplog.records if r.name == "kennel.alerts" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and "qwen-7b/capital" in errors[0].getMessage()
    assert channel.label in errors[0].getMessage() and SECRET not in caplog.text


def test_final_failure_after_all_attempts(
    http: HttpReceiver, state: AlertState, caplog: pytest.LogCaptureFixture
) -> None:
    http.fail_first, http.fail_status = 99, 503
    sleeps = Sleeps()
    [result] = deliver(_alert(), [parse_channel("webhook:" + http.url("/h"))], state=state, sleep=sleeps)
    assert (result.ok, result.attempts) == (False, 4)
    assert sleeps == [0.5, 1.0, 2.0] and len(http.requests) == 4
    assert [a[1:] for a in _attempts(state)] == [(0, 503)] * 4
    [missed] = state.undelivered()
    assert (missed.attempts, missed.error) == (4, "HTTP 503: invalid_payload")
    assert any(r.levelno == logging.ERROR and "after 4 attempt(s)" in r.getMessage() for r in caplog.records)
    # the receiver is back: delivering the same alert again clears it
    http.fail_first = 0
    deliver(missed.alert, [parse_channel("webhook:" + http.url("/h"))], state=state, sleep=sleeps)
    assert state.undelivered() == []


def test_network_errors_are_retried(state: AlertState, caplog: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    channel = parse_channel(f"webhook:http://127.0.0.1:{_closed_port()}/h")
    [result] = deliver(_alert(), [channel], state=state, attempts=3, backoff_s=0.25, sleep=sleeps)
    assert (result.ok, result.attempts) == (False, 3)
    assert result.error is not None and result.error.startswith("ConnectError")
    assert sleeps == [0.25, 0.5]
    assert state.undelivered()[0].attempts == 3


def test_each_channel_is_delivered_and_tracked_separately(http: HttpReceiver, state: AlertState) -> None:
    good = parse_channel("webhook:" + http.url("/h"))
    bad = parse_channel(f"webhook:http://127.0.0.1:{_closed_port()}/down")
    alert = state.observe("s", True, threshold=1, text="down")
    assert alert is not None
    results = deliver(alert, [bad, good], state=state, attempts=2, sleep=Sleeps())
    assert [(r.channel, r.ok) for r in results] == [(bad, False), (good, True)]
    assert [(u.alert, u.channel) for u in state.undelivered()] == [(alert, bad.label)]


def test_no_channels_is_logged_and_kept(state: AlertState, caplog: pytest.LogCaptureFixture) -> None:
    alert = state.observe("s", True, threshold=1, text="down")
    assert alert is not None
    assert deliver(alert, [], state=state) == []
    assert "no channel" in caplog.text
    assert [u.channel for u in state.undelivered()] == [None]
    with pytest.raises(InvalidOptionError):
        deliver(alert, [], state=state, attempts=0)


# ---- delivery over SMTP ----------------------------------------------------------------------
def _email(smtp: SmtpReceiver, login: str = "", extra: str = "") -> Channel:
    return parse_channel(
        f"email:smtp://{login}127.0.0.1:{smtp.port}"
        f"?to=ops@example.com,oncall@example.com&from=kennel@example.com{extra}"
    )


@pytest.mark.parametrize("smtp_config", [SmtpConfig(auth=("alice@corp", "s3:cr/t"))])
def test_email_with_login(smtp: SmtpReceiver, state: AlertState) -> None:
    alert = _alert(text="expected 'Paris', got 'Lyon' — température")
    [refused] = deliver(alert, [_email(smtp, "alice%40corp:wrong@")], state=state, sleep=Sleeps())
    assert (refused.ok, refused.attempts, refused.error) == (False, 1, "SMTP 535: bad credentials")
    [result] = deliver(alert, [_email(smtp, "alice%40corp:s3%3Acr%2Ft@")], state=state, sleep=Sleeps())
    assert (result.ok, result.attempts) == (True, 1)
    [mail] = smtp.mails
    assert mail.login == ("alice@corp", "s3:cr/t")
    assert (mail.sender, mail.rcpts) == ("kennel@example.com", ["ops@example.com", "oncall@example.com"])
    msg = mail.message()
    assert msg["Subject"] == "[kennel] FAILING: qwen-7b/capital"
    assert (msg["From"], msg["To"]) == ("kennel@example.com", "ops@example.com, oncall@example.com")
    assert msg.get_content_type() == "text/plain"
    body = f"expected 'Paris', got 'Lyon' — température\n\n3 consecutive failures as of {AT}\n"
    assert msg.get_content() == body


def test_email_recovered_without_login(smtp: SmtpReceiver, state: AlertState) -> None:
    deliver(_alert("recovered", failures=4), [_email(smtp)], state=state, sleep=Sleeps())
    [mail] = smtp.mails
    assert mail.login is None and "AUTH" not in smtp.commands
    assert mail.message()["Subject"] == "[kennel] RECOVERED: qwen-7b/capital"
    assert mail.message().get_content().endswith(f"Recovered at {AT} after 4 consecutive failures\n")


@pytest.mark.parametrize("smtp_config", [SmtpConfig(busy_first=2)])
def test_email_retries_a_busy_server(smtp: SmtpReceiver, state: AlertState) -> None:
    sleeps = Sleeps()
    [result] = deliver(_alert(), [_email(smtp)], state=state, sleep=sleeps)
    assert (result.ok, result.attempts) == (True, 3)
    assert sleeps == [0.5, 1.0] and len(smtp.mails) == 1
    assert _attempts(state) == [(1, 0, 421), (2, 0, 421), (3, 1, None)]


@pytest.mark.parametrize("smtp_config", [SmtpConfig(reject={"ops@example.com", "oncall@example.com"})])
def test_email_refused_recipients_are_not_retried(
    smtp: SmtpReceiver, state: AlertState, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps = Sleeps()
    [result] = deliver(_alert(), [_email(smtp)], state=state, sleep=sleeps)
    assert (result.ok, result.attempts, sleeps, smtp.mails) == (False, 1, [], [])
    assert result.error is not None and "550 no such user" in result.error
    assert state.undelivered()[0].error == result.error
    assert "could not be delivered" in caplog.text


def test_email_starttls_not_offered_never_sends_in_clear(smtp: SmtpReceiver, state: AlertState) -> None:
    [result] = deliver(_alert(), [_email(smtp, extra="&starttls=1")], state=state, sleep=Sleeps())
    assert (result.ok, result.attempts) == (False, 1)
    assert result.error is not None and "STARTTLS" in result.error
    assert "MAIL" not in smtp.commands and smtp.mails == []
