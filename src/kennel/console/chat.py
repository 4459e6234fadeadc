"""The chat playground: a served model or profile, a system prompt, sampling parameters, and the
answer as it streams, with tokens/s and time to first token under it and the guard's verdict when
it flags or blocks.

``POST /ui/chat`` runs the request through the same ``Generation`` as /v1/chat/completions (the
guard, admission, the profile's system prompt, metrics, the request log), as the signed-in key: its
model list, rate limit and guard mode apply. console.js asks for ``text/event-stream`` and gets
named events (``start``, ``text``, ``reasoning``, ``done``, ``error``); a form post without
JavaScript gets the whole page with the answer. The conversation so far travels in the form (a
hidden ``history`` field, JSON), so the server keeps nothing of it."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from kennel.console.i18n import Gettext
from kennel.console.render import language, page
from kennel.console.session import CsrfChecked, Viewer, api_key_of
from kennel.errors import InvalidRequestError, KennelError, validation_text
from kennel.guard.policy import Verdict
from kennel.server.auth import check_key
from kennel.server.generation import Framing, Generation
from kennel.server.http_errors import status_of_error
from kennel.server.protocol import ChatRequest
from kennel.server.state import AppState

router = APIRouter()
MAX_HISTORY = 100  # messages carried back and forth; a longer chat starts over


@dataclass(frozen=True)
class Turn:
    role: str  # user | assistant
    content: str


@dataclass(frozen=True)
class Form:
    model: str
    system: str
    message: str
    temperature: str
    top_p: str
    max_tokens: str
    seed: str
    history: tuple[Turn, ...]


@dataclass(frozen=True)
class Result:
    text: str
    stats: str  # tokens/s, TTFT, tokens: one translated line
    verdict: str | None  # the guard's, translated; None when it did not flag
    blocked: bool
    error: str | None


def served_models(state: AppState) -> list[str]:
    """Every served model (or profile: served under its own name) that chats, in the config's
    order."""
    return [name for name, s in state.pool.slots.items() if s.spec.plan.task == "generate"]


def _history(text: str) -> tuple[Turn, ...]:
    try:
        raw = json.loads(text) if text.strip() else []
    except ValueError:
        return ()
    turns = []
    for item in raw if isinstance(raw, list) else []:
        if (
            isinstance(item, dict)
            and item.get("role") in ("user", "assistant")
            and isinstance(item.get("content"), str)
        ):
            turns.append(Turn(item["role"], item["content"]))
    return tuple(turns[-MAX_HISTORY:])


def _number(text: str, kind: type[int] | type[float], what: str, _: Gettext) -> int | float | None:
    if not text.strip():
        return None
    try:
        return kind(text.strip())
    except ValueError:
        raise InvalidRequestError(_("%(field)s must be a number.", field=_(what))) from None


def _body(form: Form, _: Gettext) -> ChatRequest:
    messages: list[dict[str, str]] = []
    if form.system.strip():
        messages.append({"role": "system", "content": form.system})
    messages += [{"role": t.role, "content": t.content} for t in form.history]
    messages.append({"role": "user", "content": form.message})
    fields: dict[str, Any] = {"model": form.model, "messages": messages}
    for name, kind, label in (
        ("temperature", float, "Temperature"),
        ("top_p", float, "Top p"),
        ("max_tokens", int, "Max tokens"),
        ("seed", int, "Seed"),
    ):
        value = _number(getattr(form, name), kind, label, _)
        if value is not None:
            fields[name] = value
    try:
        return ChatRequest.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequestError(validation_text(exc.errors()[0])) from None


def verdict_text(v: Verdict | None, _: Gettext) -> str | None:
    if v is None or not (v.flagged or v.blocked):
        return None
    labels, score, stage = ", ".join(v.labels) or "-", f"{v.score:.2f}", v.stage
    if v.blocked:
        return _(
            "The guard blocked this message (%(labels)s; score %(score)s, %(stage)s stage).",
            labels=labels,
            score=score,
            stage=stage,
        )
    return _(
        "The guard flagged this message as a possible prompt injection (%(labels)s; score %(score)s, "
        "%(stage)s stage).",
        labels=labels,
        score=score,
        stage=stage,
    )


def stats_text(g: Generation, _: Gettext) -> str:
    end = time.monotonic()
    first = g.first_at or end
    tokens = g.answer.completion_tokens
    spent = end - first
    tps = f"{tokens / spent:.1f}" if spent > 0 and tokens else "-"
    ttft = f"{(first - g.t0) * 1000:.0f}"
    return _(
        "%(tps)s tokens/s · first token after %(ttft)s ms · %(tokens)s tokens",
        tps=tps,
        ttft=ttft,
        tokens=tokens,
    )


async def _read_form(request: Request) -> Form:
    f = await request.form()

    def get(name: str) -> str:
        value = f.get(name)
        return value if isinstance(value, str) else ""

    return Form(
        model=get("model"),
        system=get("system"),
        message=get("message"),
        temperature=get("temperature"),
        top_p=get("top_p"),
        max_tokens=get("max_tokens"),
        seed=get("seed"),
        history=_history(get("history")),
    )


@router.get("/chat")
async def chat_page(request: Request, user: Viewer) -> Response:
    models = _choices(request)
    blank = Form(models[0] if models else "", "", "", "", "", "", "", ())
    return page(request, "chat.html", _context(request, blank, None))


@router.post("/chat", dependencies=[CsrfChecked])
async def chat(request: Request, user: Viewer) -> Response:
    _ = request.app.state.console.catalogs.get(language(request)).gettext
    form = await _read_form(request)
    streaming = "text/event-stream" in request.headers.get("accept", "")
    key = api_key_of(request)
    g: Generation | None = None
    try:
        if not form.message.strip():
            raise InvalidRequestError(_("Write a message first."))
        body = _body(form, _)
        check_key(request, key, body.model)
        g = Generation(request, model=body.model, endpoint="chat", key=key)
        internal = body.to_request(g.profile_defaults())
        internal = dataclasses.replace(internal, messages=g.with_system(internal.messages))
        await g.check_guard([(m.role, m.text()) for m in body.messages])
        first, rest = await g.open(internal)
    except (KennelError, ValueError) as exc:
        verdict = g.guard if g is not None else None
        message = exc.message if isinstance(exc, KennelError) else str(exc)
        if streaming:
            return _error_stream(message, verdict_text(verdict, _), blocked=bool(verdict and verdict.blocked))
        result = Result("", "", verdict_text(verdict, _), bool(verdict and verdict.blocked), message)
        return page(request, "chat.html", _context(request, form, result), status_code=_status(exc))
    if not streaming:
        answer = await g.collect(first, rest)
        result = Result(answer.text, stats_text(g, _), verdict_text(g.guard, _), False, None)
        return page(request, "chat.html", _context(request, form, result))
    gen = g

    async def events() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "start", "id": gen.id, "verdict": verdict_text(gen.guard, _)}
        async for d in gen.pieces(first, rest):
            if d.reasoning:
                yield {"type": "reasoning", "text": d.reasoning}
            if d.text:
                yield {"type": "text", "text": d.text}
        yield {"type": "done", "stats": stats_text(gen, _), "finish_reason": gen.answer.finish_reason}

    framing = Framing(named=True, done=None, error_body=lambda exc: {"type": "error", "message": exc.message})
    return gen.stream(events(), framing)


def _status(exc: Exception) -> int:
    return status_of_error(exc) if isinstance(exc, KennelError) else 400


def _error_stream(message: str, verdict: str | None, *, blocked: bool) -> Response:
    """A refusal before any token (bad form, guard block, a model the key may not use), as one
    event: the page shows it where the answer would have been."""
    event = {"type": "error", "message": message, "verdict": verdict, "blocked": blocked}
    text = f"event: error\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
    return Response(text, media_type="text/event-stream", headers={"cache-control": "no-store"})


def _choices(request: Request) -> list[str]:
    """The served models this viewer's key may chat with: ``check_key`` refuses the others."""
    key = api_key_of(request)
    return [m for m in served_models(request.app.state.kennel) if key is None or key.allows(m)]


def _context(request: Request, form: Form, result: Result | None) -> dict[str, object]:
    history = list(form.history)
    if result is not None and result.error is None and form.message:
        history += [Turn("user", form.message), Turn("assistant", result.text)]
    return {
        "models": _choices(request),
        "served_any": bool(served_models(request.app.state.kennel)),
        "form": form,
        "result": result,
        "turns": history,
        "history_json": json.dumps([dataclasses.asdict(t) for t in history], ensure_ascii=False),
    }
