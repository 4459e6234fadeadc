"""The overview page: each model's state and memory, requests running and waiting, generated
tokens/s and time to first token over the last hour, recent server errors and failure alerts.

``/ui/`` is the whole page; ``/ui/overview/live`` is its live part alone, which console.js fetches
every few seconds and swaps in (without JavaScript the page is simply read as it was served)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from kennel.console.i18n import N_, Gettext
from kennel.console.render import language, page
from kennel.console.sampler import ErrorEvent, Samples, read
from kennel.console.session import Viewer, may_see, sees_all
from kennel.console.svg import Series, line_chart
from kennel.engines.base import Memory
from kennel.server.pool import FOREVER, Slot
from kennel.server.state import AppState

router = APIRouter()


@dataclass(frozen=True)
class ModelRow:
    name: str
    state: str  # loading | warm | idle | unloading | failed
    memory: Memory
    memory_reported: bool  # the engine's own report, not the fit estimate
    running: int
    waiting: int
    parallel: int
    unloads_in: float | None  # seconds; None: not loaded, busy, pinned or kept forever
    pinned: bool
    failing: int  # consecutive failed requests while a failure alert is on; 0 otherwise


@dataclass(frozen=True)
class AlertRow:
    kind: str
    subject: str
    text: str
    at: str


@dataclass(frozen=True)
class Overview:
    models: tuple[ModelRow, ...]
    used: Memory
    budget: Memory
    running: int
    waiting: int
    tokens_chart: Markup
    ttft_chart: Markup
    errors: tuple[ErrorEvent, ...]
    alerts: tuple[AlertRow, ...]
    alerts_on: bool


def _state_of(slot: Slot) -> str:
    """warm: loaded and generating or just used; idle: loaded, waiting for its keep-alive to run
    out (or "unloaded": not in memory)."""
    if slot.state == "loading" or (slot.state == "unloaded" and slot.waiting):
        return "loading"
    if slot.state == "ready":
        return "warm"
    if slot.state == "unloading":
        return "unloading"
    return "idle"


def build(
    state: AppState,
    samples: Samples,
    _: Gettext,
    *,
    now: float | None = None,
    visible: Callable[[str], bool] | None = None,
) -> Overview:
    """The page's data; ``visible`` (None: every model) keeps a key limited to some models to
    those, its errors included, and without the server's alerts (they are about any model)."""
    pool = state.pool
    mono = pool.clock()
    rows = []
    for name, s in pool.slots.items():
        if visible is not None and not visible(name):
            continue
        unloads_in = None
        if (
            s.state == "ready"
            and not s.running
            and not s.waiting
            and not s.spec.pinned
            and s.expires_at != FOREVER
        ):
            unloads_in = max(0.0, s.expires_at - mono)
        streak = state.alerts.streaks.get(name) if state.alerts is not None else None
        rows.append(
            ModelRow(
                name=name,
                state=_state_of(s),
                memory=s.memory,
                memory_reported=s.held is not None,
                running=s.running,
                waiting=s.waiting,
                parallel=s.spec.plan.parallel,
                unloads_in=unloads_in,
                pinned=s.spec.pinned,
                failing=streak.failures if streak is not None and streak.alerting else 0,
            )
        )
    # the samples so far and the counters as they are now: the chart's right end is live
    wall = now if now is not None else time.time()
    live = Samples()
    live.points.extend([*samples.points, read(state.metrics, wall)])
    names = [r.name for r in rows]
    tokens = [Series(n, live.tokens_per_s(n)) for n in names]
    ttft = [Series(n, live.ttft_ms(n)) for n in names]
    alerts: list[AlertRow] = []
    if state.alerts is not None and visible is None:
        alerts = [AlertRow(a.kind, a.subject, a.text, a.at) for a in reversed(state.alerts.recent)]
    return Overview(
        models=tuple(rows),
        used=pool.in_use(),
        budget=pool.budget,
        running=sum(r.running for r in rows),
        waiting=sum(r.waiting for r in rows),
        tokens_chart=line_chart(
            tokens,
            y_label=_("tokens/s"),
            title=_("Generated tokens per second, last hour"),
            empty_label=_("No data yet"),
        ),
        ttft_chart=line_chart(
            ttft,
            y_label=_("ms"),
            title=_("Time to first token, last hour"),
            empty_label=_("No data yet"),
        ),
        errors=tuple(e for e in reversed(samples.errors) if visible is None or visible(e.model)),
        alerts=tuple(alerts),
        alerts_on=state.alerts is not None and visible is None,
    )


# the state badges' words (msgids), by ModelRow.state
STATE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "loading": N_("Loading"),
        "warm": N_("Warm"),
        "unloading": N_("Unloading"),
        "idle": N_("Idle (not loaded)"),
    }
)


@router.get("/")
async def overview(request: Request, user: Viewer) -> Response:
    return page(request, "overview.html", _context(request))


@router.get("/overview/live")
async def overview_live(request: Request, user: Viewer) -> Response:
    """The live part alone (the same markup as in the page), for console.js to swap in."""
    return page(request, "overview_live.html", _context(request))


def _context(request: Request) -> dict[str, object]:
    console = request.app.state.console
    tr = console.catalogs.get(language(request)).gettext
    now = time.time()
    visible = None if sees_all(request) else partial(may_see, request)
    view = build(request.app.state.kennel, console.samples, tr, now=now, visible=visible)
    return {"o": view, "state_names": STATE_NAMES, "now": now}
