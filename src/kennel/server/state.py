"""What every request handler reads: the settings, the pool, metrics, keys, the guards and the
alert sender, built once per app in its lifespan (no module-level state)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kennel.guard.policy import Guard
from kennel.server.alerting import ServerAlerts
from kennel.server.guard_stages import build_stage, check_stage
from kennel.server.keys import ApiKey, KeySource
from kennel.server.metrics import Metrics
from kennel.server.model_facts import ModelFacts
from kennel.server.pool import ModelSpec, Pool
from kennel.server.ratelimit import RateLimiter
from kennel.server.settings import ServeSettings
from kennel.settings import KennelHome

log = logging.getLogger("kennel.guard")


@dataclass
class AppState:
    settings: ServeSettings
    pool: Pool
    metrics: Metrics
    keys: KeySource | None  # keys.db or a keys file; None: no keys exist, loopback only
    limiter: RateLimiter
    started: float
    guards: dict[str, Guard] = field(default_factory=dict)  # model -> its guard (built once per mode)
    alerts: ServerAlerts | None = None
    home: KennelHome | None = None  # the store behind Ollama's /api/pull, /api/delete, /api/copy
    # what Ollama's /api/tags and /api/show tell of each served model, read from its file once
    facts: dict[str, ModelFacts] = field(default_factory=dict)

    def guard(self, model: str, key: ApiKey | None = None) -> Guard:
        """The key's own mode if it has one, else the model's, else the server's."""
        if key is not None and key.guard:
            return self.guards[f"mode:{key.guard}"]
        return self.guards.get(model) or self.guards["*"]


def build_guards(
    settings: ServeSettings, specs: list[ModelSpec], *, pool: Pool, home: KennelHome | None = None
) -> dict[str, Guard]:
    """One Guard per mode in use (compiling the phrase tables is the costly part), mapped per model
    and under "mode:<m>" for API keys with their own mode; all share one second stage, built from
    the settings (a guard or embedding model needs the ``pool`` that serves it)."""
    by_mode: dict[str, Guard] = {}
    for warning in check_stage(settings, specs, home):  # `kennel serve` also shows them in its banner
        log.warning("guard: %s", warning)
    stage = build_stage(settings, pool, specs, home)

    def get(mode: str) -> Guard:
        if mode not in by_mode:
            by_mode[mode] = Guard(
                mode,  # type: ignore[arg-type]
                stage=stage,
                budget_ms=settings.guard_budget_ms,
                fail=settings.guard_fail,
            )
        return by_mode[mode]

    out = {"*": get(settings.guard)}
    for entry, spec in zip(settings.models, specs, strict=False):
        out[spec.name] = get(entry.guard or settings.guard)
    for mode in ("off", "log", "flag", "block"):
        out[f"mode:{mode}"] = get(mode)
    return out
