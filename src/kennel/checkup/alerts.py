"""Checkup alerts: raised once when a subject starts failing, once when it recovers; delivered.

``AlertState.observe`` counts consecutive failures per subject in KENNEL_HOME/alerts.db, so cron
runs and concurrent processes count together. The alert it returns is written in the same
transaction, so a process killed before ``deliver`` leaves it in ``undelivered()``, not lost.
``deliver`` posts to Slack and JSON webhooks or sends SMTP mail, retrying network errors and
transient answers (HTTP 5xx/429, SMTP 4xx) with exponential backoff; every attempt is recorded,
and a channel that still fails is logged at ERROR on ``kennel.alerts``.

Channel URLs are secrets (see kennel/checkup/channels.py), so alerts.db and logs show only
``Channel.label``.
``FailureStreak`` is the same rule in memory, for the server.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from kennel.checkup.channels import Channel
from kennel.errors import InvalidOptionError
from kennel.settings import KennelHome
from kennel.store import db

log = logging.getLogger("kennel.alerts")

AlertKind = Literal["failing", "recovered"]

HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SMTP_TIMEOUT_S = 15.0
MAX_RETRY_AFTER_S = 30.0  # honour a server's Retry-After, but never let it stall a cron run for long
_SLACK_HEADER_MAX, _SLACK_TEXT_MAX = 150, 3000  # Slack's limits for a header block and a section's text


MIGRATIONS: db.Migrations = (
    (
        "001_alert_state",
        """
        CREATE TABLE alert_state (
            subject TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,         -- consecutive failures, 0 after a success
            alerting INTEGER NOT NULL,         -- 1 from the 'failing' alert until the 'recovered' one
            updated_at TEXT NOT NULL
        );
        """,
    ),
    (
        "002_deliveries",
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,                -- failing | recovered
            subject TEXT NOT NULL,
            text TEXT NOT NULL,
            at TEXT NOT NULL,                  -- ISO UTC, when it was raised
            failures INTEGER NOT NULL
        );
        CREATE INDEX alerts_at ON alerts(at);
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            channel TEXT NOT NULL,             -- Channel.label: no secrets
            channel_key TEXT NOT NULL,         -- hash of the whole channel, to tell channels apart
            attempt INTEGER NOT NULL,          -- 1-based, within one deliver() call
            at TEXT NOT NULL,
            ok INTEGER NOT NULL,
            status INTEGER,                    -- HTTP status or SMTP reply code, when there was one
            error TEXT
        );
        CREATE INDEX deliveries_alert ON deliveries(alert_id, channel_key);
        """,
    ),
)


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- alerts and their state ------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """A change worth telling people: a subject started failing, or recovered. ``failures`` is the
    consecutive failures so far (failing) or the streak that just ended (recovered)."""

    kind: AlertKind
    subject: str
    text: str
    at: str
    failures: int


@dataclass(frozen=True)
class DeliveryResult:
    channel: Channel
    ok: bool
    attempts: int
    error: str | None


@dataclass(frozen=True)
class DeliveryAttempt:
    """One try at delivering an alert to a channel (its label: no secrets)."""

    channel: str
    attempt: int
    at: str
    ok: bool
    status: int | None
    error: str | None


@dataclass(frozen=True)
class UndeliveredAlert:
    """An alert that no attempt delivered to ``channel`` (a Channel.label), or, with ``channel``
    None, one that no delivery was ever tried for (no channels, or the process died first)."""

    alert: Alert
    channel: str | None
    attempts: int
    error: str | None
    last_attempt_at: str | None


def _check_threshold(threshold: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise InvalidOptionError(
            f"The alert threshold {threshold!r} must be a whole number of at least 1.",
            hint="Use 1 to alert on the first failure.",
        )


def _step(
    failures: int, alerting: bool, *, failed: bool, threshold: int
) -> tuple[int, bool, AlertKind | None]:
    """The one rule, shared by AlertState and FailureStreak: (failures, alerting, what to raise)."""
    if failed:
        failures += 1
        # >= rather than ==: a threshold lowered below a running streak still alerts, once
        if not alerting and failures >= threshold:
            return failures, True, "failing"
        return failures, alerting, None
    return 0, False, "recovered" if alerting else None


def alerts_path(home: KennelHome) -> Path:
    return home.root / "alerts.db"


class AlertState:
    """Failure streaks and alert deliveries in KENNEL_HOME/alerts.db; ``AlertState.open(home)``.
    The sqlite3 connection belongs to the thread that opened it: open one per thread or process."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, home: KennelHome) -> AlertState:
        path = alerts_path(home)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # alert texts can quote prompts and answers
        return cls(path, db.connect(path, MIGRATIONS))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> AlertState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def observe(self, subject: str, failed: bool, *, threshold: int, text: str) -> Alert | None:
        """Count this outcome; the Alert to send when a streak reaches ``threshold`` or ends."""
        _check_threshold(threshold)
        now = _now()
        with db.transaction(self.conn):
            row = self.conn.execute(
                "SELECT failures, alerting FROM alert_state WHERE subject = ?", (subject,)
            ).fetchone()
            before = (row["failures"], bool(row["alerting"])) if row else (0, False)
            failures, alerting, kind = _step(*before, failed=failed, threshold=threshold)
            self.conn.execute(
                "INSERT INTO alert_state (subject, failures, alerting, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(subject) DO UPDATE SET failures = excluded.failures,"
                " alerting = excluded.alerting, updated_at = excluded.updated_at",
                (subject, failures, int(alerting), now),
            )
            if kind is None:
                return None
            alert = Alert(
                kind=kind,
                subject=subject,
                text=text,
                at=now,
                failures=failures if kind == "failing" else before[0],
            )
            self._insert(alert)
        return alert

    def failures(self, subject: str) -> int:  # the current streak of ``subject``
        row = self.conn.execute("SELECT failures FROM alert_state WHERE subject = ?", (subject,)).fetchone()
        return int(row["failures"]) if row else 0

    def undelivered(self, since: str | None = None) -> list[UndeliveredAlert]:
        """Alerts (raised at or after ``since``, an ISO time) not delivered to some channel, oldest first."""
        bound = "" if since is None else _normalize_since(since)
        rows = self.conn.execute(
            """
            SELECT a.id, a.kind, a.subject, a.text, a.at, a.failures,
                   d.channel_key, MAX(d.channel) AS channel, COUNT(d.id) AS attempts,
                   MAX(d.ok) AS delivered, MAX(d.at) AS last_at,
                   (SELECT error FROM deliveries x WHERE x.alert_id = a.id AND x.channel_key IS d.channel_key
                    ORDER BY x.id DESC LIMIT 1) AS error
            FROM alerts a LEFT JOIN deliveries d ON d.alert_id = a.id
            WHERE a.at >= ?
            GROUP BY a.id, d.channel_key
            HAVING delivered IS NULL OR delivered = 0
            ORDER BY a.id, MIN(d.id)
            """,
            (bound,),
        ).fetchall()
        fields = ("kind", "subject", "text", "at", "failures")
        return [
            UndeliveredAlert(
                alert=Alert(**{k: r[k] for k in fields}),
                channel=r["channel"],
                attempts=r["attempts"],
                error=r["error"],
                last_attempt_at=r["last_at"],
            )
            for r in rows
        ]

    def recent(self, limit: int = 20) -> list[tuple[Alert, list[DeliveryAttempt]]]:
        """The last ``limit`` alerts raised, newest first, each with its delivery attempts in order
        (none: no channel was configured, or the process died before delivering)."""
        rows = self.conn.execute(
            "SELECT id, kind, subject, text, at, failures FROM alerts ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        out: list[tuple[Alert, list[DeliveryAttempt]]] = []
        for r in rows:
            attempts = self.conn.execute(
                "SELECT channel, attempt, at, ok, status, error FROM deliveries"
                " WHERE alert_id = ? ORDER BY id",
                (r["id"],),
            ).fetchall()
            alert = Alert(
                kind=r["kind"], subject=r["subject"], text=r["text"], at=r["at"], failures=r["failures"]
            )
            out.append(
                (
                    alert,
                    [
                        DeliveryAttempt(
                            channel=a["channel"],
                            attempt=a["attempt"],
                            at=a["at"],
                            ok=bool(a["ok"]),
                            status=a["status"],
                            error=a["error"],
                        )
                        for a in attempts
                    ],
                )
            )
        return out

    def _insert(self, alert: Alert) -> int:
        cur = self.conn.execute(
            "INSERT INTO alerts (kind, subject, text, at, failures) VALUES (?, ?, ?, ?, ?)",
            (alert.kind, alert.subject, alert.text, alert.at, alert.failures),
        )
        return int(cur.lastrowid or 0)

    def _alert_id(self, alert: Alert) -> int:
        """The row observe() wrote for this alert (the oldest not yet delivered anywhere, so two
        identical alerts are delivered one by one), or a new row for an alert built elsewhere."""
        with db.transaction(self.conn):
            rows = self.conn.execute(
                "SELECT a.id, EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.ok)"
                " FROM alerts a WHERE kind = ? AND subject = ? AND text = ? AND at = ? AND failures = ?"
                " ORDER BY a.id",
                (alert.kind, alert.subject, alert.text, alert.at, alert.failures),
            ).fetchall()
            pending = [r[0] for r in rows if not r[1]]
            if pending or rows:
                return int(pending[0] if pending else rows[-1][0])
            return self._insert(alert)

    def _record(self, alert_id: int, channel: Channel, attempt: int, outcome: _Outcome) -> None:
        # one short transaction per attempt: a run killed mid-retry keeps what happened so far
        with db.transaction(self.conn):
            self.conn.execute(
                "INSERT INTO deliveries (alert_id, channel, channel_key, attempt, at, ok, status, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert_id,
                    channel.label,
                    channel.key,
                    attempt,
                    _now(),
                    int(outcome.ok),
                    outcome.status,
                    outcome.error,
                ),
            )


def _normalize_since(since: str) -> str:
    try:
        when = datetime.fromisoformat(since.strip())
    except ValueError as exc:
        raise InvalidOptionError(
            f"{since!r} is not an ISO date or time.",
            hint="Use a form like 2026-05-01 or 2026-05-01T12:00:00+00:00.",
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # alerts.db keeps UTC; a bare time is taken as UTC too
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


# ---- delivery --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Outcome:
    ok: bool
    retryable: bool = False
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


_OK = _Outcome(ok=True)


def _headline(alert: Alert) -> str:
    return f"[kennel] {'FAILING' if alert.kind == 'failing' else 'RECOVERED'}: {_one_line(alert.subject)}"


def _detail(alert: Alert) -> str:
    streak = f"{alert.failures} consecutive failure{'' if alert.failures == 1 else 's'}"
    return (
        f"{streak} as of {alert.at}" if alert.kind == "failing" else f"Recovered at {alert.at} after {streak}"
    )


def _slack_escape(text: str) -> str:
    # Slack parses &, <, > in mrkdwn: an answer quoting "<!channel>" must not ping everyone
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body for a Slack incoming webhook: ``text`` is the notification fallback; blocks
    use plain_text so nothing in a checkup's output is read as markup or mentions."""
    headline = _headline(alert)
    return {
        "text": _clip(_slack_escape(f"{headline}\n{alert.text}"), _SLACK_TEXT_MAX),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _clip(headline, _SLACK_HEADER_MAX)}},
            {
                "type": "section",
                "text": {"type": "plain_text", "text": _clip(alert.text or "(no details)", _SLACK_TEXT_MAX)},
            },
            {"type": "context", "elements": [{"type": "plain_text", "text": _detail(alert)}]},
        ],
    }


def webhook_payload(alert: Alert) -> dict[str, Any]:
    return {
        "kind": alert.kind,
        "subject": alert.subject,
        "text": alert.text,
        "at": alert.at,
        "failures": alert.failures,
        "source": "kennel",
    }


def email_message(alert: Alert, channel: Channel) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = _headline(alert)
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=channel.sender.rpartition("@")[2])
    msg.set_content(f"{alert.text}\n\n{_detail(alert)}\n")
    return msg


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None  # an HTTP-date, or garbage: fall back to our own backoff


def _post(client: httpx.Client, channel: Channel, payload: dict[str, Any]) -> _Outcome:
    try:
        response = client.post(channel.target, json=payload)
    except httpx.TransportError as exc:  # connect, timeout, protocol: worth another try
        return _Outcome(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        return _Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return _OK
    return _Outcome(
        ok=False,
        retryable=status == 429 or status >= 500,
        status=status,
        error=f"HTTP {status}: {_clip(_one_line(response.text), 200)}",
        retry_after=_retry_after(response),
    )


def _send_email(alert: Alert, channel: Channel) -> _Outcome:
    url = urlsplit(channel.target)
    host, port = url.hostname or "", url.port or 25
    try:
        refused = _smtp_send(host, port, channel, email_message(alert, channel))
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return _Outcome(
            ok=False,
            retryable=all(400 <= c < 500 for c in codes),
            status=max(codes, default=None),
            error=f"all recipients refused: {_refused(exc.recipients)}",
        )
    except smtplib.SMTPResponseException as exc:  # connect, helo, auth, sender, data
        message = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return _Outcome(
            ok=False,
            retryable=400 <= exc.smtp_code < 500,
            status=exc.smtp_code,
            error=f"SMTP {exc.smtp_code}: {_one_line(message)}",
        )
    except smtplib.SMTPServerDisconnected as exc:
        return _Outcome(ok=False, retryable=True, error=f"SMTP server disconnected: {exc}")
    except smtplib.SMTPException as exc:  # e.g. no STARTTLS or AUTH offered: trying again will not help
        return _Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
    except ssl.SSLCertVerificationError as exc:
        return _Outcome(ok=False, error=f"TLS certificate of {host} not trusted: {exc}")
    except (OSError, ValueError) as exc:  # refused, reset, timeout, DNS; ValueError: an unencodable header
        return _Outcome(ok=False, retryable=isinstance(exc, OSError), error=f"{type(exc).__name__}: {exc}")
    if refused:
        # some got it: trying again would send them a duplicate, so this stays an undelivered failure
        return _Outcome(ok=False, error=f"some recipients refused: {_refused(refused)}")
    return _OK


def _smtp_send(host: str, port: int, channel: Channel, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
    smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S)
    try:
        smtp.ehlo()
        if channel.starttls:
            # an explicit default context: smtplib's own does not verify the server's certificate
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if channel.username:
            smtp.login(channel.username, channel.password or "")
        return smtp.send_message(msg, from_addr=channel.sender, to_addrs=list(channel.to))
    finally:
        # not `with SMTP`: its __exit__ raises on a bad QUIT reply, after the message was accepted
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()


def _refused(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(
        f"{addr} ({code} {msg.decode('utf-8', 'replace')})" for addr, (code, msg) in recipients.items()
    )


def _attempt(alert: Alert, channel: Channel, client: httpx.Client) -> _Outcome:
    if channel.kind == "slack":
        return _post(client, channel, slack_payload(alert))
    if channel.kind == "webhook":
        return _post(client, channel, webhook_payload(alert))
    return _send_email(alert, channel)


def deliver(
    alert: Alert,
    channels: Sequence[Channel],
    *,
    state: AlertState,
    attempts: int = 4,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> list[DeliveryResult]:
    """Send ``alert`` to every channel, each with up to ``attempts`` tries (waiting backoff_s,
    2×, 4×… between them); one result per channel, in order. Failures are logged, not raised."""
    if attempts < 1 or backoff_s < 0:
        raise InvalidOptionError(
            f"attempts={attempts} must be at least 1 and backoff_s={backoff_s} not negative."
        )
    alert_id = state._alert_id(alert)
    if not channels:
        log.error(
            "alert %s %r has no channel to go to; it stays undelivered: %s",
            alert.kind,
            alert.subject,
            _clip(_one_line(alert.text), 500),
        )
        return []
    results = []
    with httpx.Client(
        timeout=HTTP_TIMEOUT, follow_redirects=False, headers={"User-Agent": "kennel-alerts"}
    ) as client:
        for channel in channels:
            attempt, outcome = 0, _OK
            while attempt < attempts:
                attempt += 1
                outcome = _attempt(alert, channel, client)
                state._record(alert_id, channel, attempt, outcome)
                if outcome.ok or not outcome.retryable or attempt == attempts:
                    break
                delay = backoff_s * 2 ** (attempt - 1)
                if outcome.retry_after is not None:
                    delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER_S))
                log.warning(
                    "alert to %s failed (attempt %d of %d): %s; retrying in %.1fs",
                    channel.label,
                    attempt,
                    attempts,
                    outcome.error,
                    delay,
                )
                sleep(delay)
            if not outcome.ok:
                log.error(
                    "alert %s %r could not be delivered to %s after %d attempt(s): %s; the alert: %s",
                    alert.kind,
                    alert.subject,
                    channel.label,
                    attempt,
                    outcome.error,
                    _clip(_one_line(alert.text), 500),
                )
            results.append(
                DeliveryResult(channel=channel, ok=outcome.ok, attempts=attempt, error=outcome.error)
            )
    return results


# ---- in memory, for the server ---------------------------------------------------------------
class FailureStreak:
    """Consecutive failures of one thing in this process (requests, model loads): ``record``
    says "started" when the streak reaches ``threshold`` and "recovered" on the next success."""

    def __init__(self, threshold: int) -> None:
        _check_threshold(threshold)
        self.threshold = threshold
        self._failures = 0
        self._alerting = False
        # record() never awaits, so asyncio tasks cannot interleave in it; the lock covers threads
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def alerting(self) -> bool:
        return self._alerting

    def record(self, ok: bool) -> Literal["started", "recovered"] | None:
        with self._lock:
            self._failures, self._alerting, kind = _step(
                self._failures, self._alerting, failed=not ok, threshold=self.threshold
            )
        return "started" if kind == "failing" else kind

    def __repr__(self) -> str:
        return (
            f"FailureStreak(threshold={self.threshold}, failures={self._failures}, alerting={self._alerting})"
        )
