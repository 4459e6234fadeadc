"""Each engine's own Prometheus metrics (llama.cpp's ``llamacpp:*``, vLLM's ``vllm:*``) under
kennel's /metrics, with a ``model`` label saying which served model they are from. kennel's own
metrics stay the same whatever the engine; these add what only the engine knows (KV cache use,
tokens in flight, its own queue). Only the engines' namespaced series (names with a colon) are
taken: their ``python_*`` and ``process_*`` series would clash with kennel's own."""

from __future__ import annotations

import asyncio
import logging
import re

from kennel.engines.base import Engine
from kennel.server.pool import Pool

log = logging.getLogger("kennel.metrics")
TIMEOUT = 2.0  # seconds one engine may take to answer; /metrics must not hang on a stuck engine
# a sample line: NAME, optional {labels}, the rest (value and optional timestamp)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(.*)$")


def relabel(text: str, model: str) -> list[str]:
    """``text``'s samples with ``model="..."`` added, and its HELP/TYPE lines, as lines."""
    value = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            out.append(line)
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue  # not Prometheus text: leave it out rather than break the scrape
        name, labels, rest = m.groups()
        if ":" not in name:
            continue  # the engine's Python or process metrics would clash with kennel's own
        inner = labels[1:-1].strip().rstrip(",") if labels else ""
        merged = f'model="{value}"' + (f",{inner}" if inner else "")
        out.append(f"{name}{{{merged}}} {rest}")
    return out


async def engine_metrics(pool: Pool) -> bytes:
    """The loaded engines' metrics, one family's HELP/TYPE once even when several models use
    the same engine kind (Prometheus refuses a family declared twice)."""
    slots = [s for s in pool.slots.values() if s.state == "ready" and s.engine is not None]

    async def one(name: str, engine: Engine) -> list[str]:
        try:
            text = await asyncio.wait_for(engine.native_metrics(), timeout=TIMEOUT)
        except Exception as exc:  # an engine that cannot answer now: its metrics are missing, not the rest
            log.debug("no engine metrics from %s: %s", name, exc)
            return []
        return relabel(text, name)

    results = await asyncio.gather(*(one(s.spec.name, s.engine) for s in slots if s.engine is not None))
    seen: set[str] = set()
    families: dict[str, list[str]] = {}
    for lines in results:
        current = ""
        for line in lines:
            if line.startswith("#"):
                parts = line.split(maxsplit=3)
                if len(parts) < 3 or parts[1] not in ("HELP", "TYPE") or ":" not in parts[2]:
                    continue
                current = parts[2]
                if f"{parts[1]} {current}" in seen:
                    continue
                seen.add(f"{parts[1]} {current}")
                family = current
            else:
                name = line.split("{", 1)[0]
                # a histogram's _bucket, _sum and _count belong to the family declared above them
                family = current if current and name.startswith(current) else name
            families.setdefault(family, []).append(line)
    return "".join(line + "\n" for lines in families.values() for line in lines).encode()
