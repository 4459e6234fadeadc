"""Alerts from the server itself: a model whose requests fail N times in a row (engine errors,
not client mistakes), and a model that fails to load. One alert when it starts, one when it
recovers; delivery runs in a worker thread so requests never wait for Slack or SMTP."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from kennel.checkup.alerts import Alert, AlertState, FailureStreak, deliver
from kennel.checkup.channels import Channel
from kennel.settings import KennelHome

log = logging.getLogger("kennel.alerts")


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


class ServerAlerts:
    def __init__(self, channels: Sequence[Channel], *, threshold: int, home: KennelHome) -> None:
        self.channels = tuple(channels)
        self.threshold = threshold
        self.home = home
        self.streaks: dict[str, FailureStreak] = {}
        self.pending: set[asyncio.Future[None]] = set()
        self.recent: deque[Alert] = deque(maxlen=20)  # the last alerts sent, for the web console

    def record(self, model: str, ok: bool) -> None:
        """Count one finished request of ``model`` (ok: answered; not ok: a server-side error)."""
        streak = self.streaks.setdefault(model, FailureStreak(self.threshold))
        change = streak.record(ok)
        if change == "started":
            self._send(
                Alert(
                    "failing",
                    f"kennel serve: {model}",
                    f"{model} failed {streak.failures} requests in a row "
                    "(engine errors). See the server log.",
                    _now(),
                    streak.failures,
                )
            )
        elif change == "recovered":
            self._send(
                Alert(
                    "recovered", f"kennel serve: {model}", f"{model} answers again.", _now(), self.threshold
                )
            )

    def engine_failed(self, model: str, detail: str) -> None:
        """An engine process died (it is being restarted): one alert per death."""
        self._send(Alert("failing", f"kennel serve: {model} engine stopped", detail, _now(), 1))

    def load_failed(self, model: str, error: str) -> None:
        self._send(Alert("failing", f"kennel serve: {model} failed to load", error, _now(), 1))

    def _send(self, alert: Alert) -> None:
        log.warning("alert %s: %s", alert.kind, alert.subject)
        self.recent.append(alert)

        def run() -> None:
            with AlertState.open(self.home) as state:  # its own connection: this is a worker thread
                deliver(alert, self.channels, state=state)

        fut = asyncio.get_running_loop().run_in_executor(None, run)
        self.pending.add(fut)
        fut.add_done_callback(self.pending.discard)

    async def drain(self) -> None:
        """Wait for deliveries in flight (at shutdown, so no alert is dropped)."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
