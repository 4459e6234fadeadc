"""The Models pages: the store as `kennel ls` shows it, one model's versions, tags, diff and
history, and the promote / rollback forms.

Promote and rollback call the store's own ``set_tag`` and ``rollback``, the functions behind
`kennel tag` and `kennel rollback`, so the audit row is the same one the CLI writes; only the
actor differs ("console:<key name>" instead of the OS user), so `kennel history` tells a console
change from a shell one. The reason is required here (the CLI's -m is optional): a change made
by clicking deserves a why.

Store work opens its own SQLite connection in a worker thread (``asyncio.to_thread``): a
connection belongs to the thread that made it, and nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from kennel.console.pages import home_of, redirect, short_time, translator
from kennel.console.render import page
from kennel.console.session import Admin, ConsoleUser, CsrfChecked, Viewer, may_see
from kennel.errors import KennelError, NotInStoreError
from kennel.settings import KennelHome
from kennel.store.add import check_gguf, quant_tag
from kennel.store.names import DEFAULT_TAG, Ref, check_name
from kennel.store.registry import AuditEntry, Store, VersionInfo
from kennel.units import fmt_bytes

router = APIRouter()


@dataclass(frozen=True)
class ModelRow:
    """One line of the store listing (the columns of `kennel ls`, plus format, quant, last change)."""

    name: str
    tags: tuple[tuple[str, int], ...]
    versions: int
    size: str
    file: str
    format: str
    quant: str
    changed_at: str
    changed_by: str


@dataclass(frozen=True)
class VersionRow:
    version: int
    tags: tuple[str, ...]
    file: str
    size: str
    quant: str
    created_at: str
    actor: str
    message: str


@dataclass(frozen=True)
class HistoryRow:
    at: str
    actor: str
    action: str
    what: str
    message: str
    detail: str


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add | del | hunk | same
    text: str


@dataclass(frozen=True)
class DiffView:
    a: int
    b: int
    lines: tuple[DiffLine, ...]  # empty: the two profiles are the same


@dataclass(frozen=True)
class ModelView:
    name: str
    versions: tuple[VersionRow, ...]
    tags: tuple[tuple[str, int], ...]
    history: tuple[HistoryRow, ...]
    diff: DiffView | None


# ---- reading the store (worker threads) ---------------------------------------------------------
def _size(store: Store, digests: set[str]) -> int:
    total = 0
    for d in digests:
        with contextlib.suppress(NotInStoreError):  # a removed version's blob may be gone already
            total += store.blob(d).size
    return total


def _quant(store: Store, v: VersionInfo) -> str:
    """The quantization the GGUF header declares (Q4_K_M), or "-" (a folder for vLLM, a lost blob)."""
    if v.profile.format != "gguf":
        return "-"
    try:
        q = quant_tag(check_gguf(store.blobs.path(v.profile.base[0])))
    except (KennelError, OSError):
        return "?"
    return q.upper() if q else "?"


def list_models(home: KennelHome) -> list[ModelRow]:
    """What `kennel ls` lists, model by model (models whose every version was removed are left out)."""
    rows: list[ModelRow] = []
    with Store.open(home) as store:
        for name in store.models():
            live = store.versions(name)
            if not live:
                continue
            tags = store.tags(name)
            latest = store.version(name, tags[DEFAULT_TAG]) if DEFAULT_TAG in tags else live[-1]
            history = store.history(name)
            last = history[-1] if history else None
            rows.append(
                ModelRow(
                    name=name,
                    tags=tuple(tags.items()),
                    versions=len(live),
                    size=fmt_bytes(_size(store, {d for v in live for d, _, _ in v.profile.blobs()})),
                    file=latest.profile.base_file,
                    format=latest.profile.format,
                    quant=_quant(store, latest),
                    changed_at=short_time(last.at if last else live[-1].created_at),
                    changed_by=last.actor if last else live[-1].actor,
                )
            )
    return rows


def _what(e: AuditEntry) -> str:
    """The change in a few symbols, as `kennel history` prints it."""
    if e.tag:
        before = f"@{e.version_before} → " if e.version_before else ""
        after = f"@{e.version_after}" if e.version_after else "×"
        return f"{e.tag}: {before}{after}"
    if e.action == "rm":
        return f"@{e.version_before} ×"
    return f"@{e.version_after}" if e.version_after else ""


def _diff_lines(text: str) -> tuple[DiffLine, ...]:
    out = []
    for line in text.rstrip("\n").splitlines():
        if line.startswith(("+++", "---")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append(DiffLine(kind, line))
    return tuple(out)


def read_model(home: KennelHome, name: str, diff: tuple[int, int] | None) -> ModelView:
    with Store.open(home) as store:
        versions = store.versions(name)
        tags = store.tags(name)
        rows = tuple(
            VersionRow(
                version=v.version,
                tags=v.tags,
                file=v.profile.base_file,
                size=fmt_bytes(_size(store, {d for d, _, _ in v.profile.blobs()})),
                quant=_quant(store, v),
                created_at=short_time(v.created_at),
                actor=v.actor,
                message=v.message,
            )
            for v in versions
        )
        history = tuple(
            HistoryRow(
                at=short_time(e.at),
                actor=e.actor,
                action=e.action,
                what=_what(e),
                message=e.message,
                detail=e.detail if e.action != "rm" else "",
            )
            for e in reversed(store.history(name))  # newest first: the page is read from the top
        )
        view = None
        if diff is not None:
            view = DiffView(diff[0], diff[1], _diff_lines(store.diff(name, *diff)))
    return ModelView(name, rows, tuple(tags.items()), history, view)


# ---- pages ----------------------------------------------------------------------------------------
@router.get("/models")
async def models(request: Request, user: Viewer) -> Response:
    rows = await asyncio.to_thread(list_models, home_of(request))
    # a key limited to some models sees those only, as /api/tags and /v1/models list them
    return page(request, "models.html", {"models": [r for r in rows if may_see(request, r.name)]})


def _version_arg(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


async def _model_page(
    request: Request,
    name: str,
    *,
    diff: tuple[int, int] | None = None,
    error: str | None = None,
    form: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    try:
        model = check_name(name)
        if not may_see(request, model):  # the same answer as a model not in the store
            raise NotInStoreError(f"No model {model!r} in the store.")
        view = await asyncio.to_thread(read_model, home_of(request), model, diff)
    except NotInStoreError as exc:
        if diff is None:
            return page(request, "model.html", _missing(name, exc), status_code=404)
        # a version asked for in the diff form that is not there: the page, with the reason
        view = await asyncio.to_thread(read_model, home_of(request), model, None)
        error, status_code = exc.message, 404
    except KennelError as exc:  # a name that cannot be in the store
        return page(request, "model.html", _missing(name, exc), status_code=404)
    notice = _notice(request)
    numbers = [v.version for v in view.versions]
    defaults = {
        "a": str(diff[0] if diff else (numbers[-2] if len(numbers) > 1 else numbers[0] if numbers else "")),
        "b": str(diff[1] if diff else (numbers[-1] if numbers else "")),
        "version": str(numbers[-1] if numbers else ""),
        "tag": "prod",
        "rollback_tag": DEFAULT_TAG,
        "to": "",
        "reason": "",
        "action": "",
    }
    return page(
        request,
        "model.html",
        {
            "model": view,
            "missing": None,
            "notice": notice,
            "error": error,
            "form": {**defaults, **(form or {})},
        },
        status_code=status_code,
    )


def _missing(name: str, exc: KennelError) -> dict[str, object]:
    return {"model": None, "missing": name, "error": exc.message, "notice": None, "form": {}}


def _notice(request: Request) -> str | None:
    """The line shown after a change (the redirect's query says which), already translated."""
    _ = translator(request)
    q = request.query_params
    done, tag, version = q.get("done"), q.get("tag", ""), q.get("version", "")
    # the query is anyone's to write (a link): only a real tag and version number are said back
    try:
        check_name(tag, what="tag")
    except KennelError:
        return None
    if not version.isdigit():
        return None
    if done == "promoted":
        return _("%(tag)s now points at version %(version)s.", tag=tag, version=version)
    if done == "rolledback":
        return _("%(tag)s rolled back to version %(version)s.", tag=tag, version=version)
    return None


@router.get("/models/{name}")
async def model(
    request: Request, name: str, user: Viewer, a: str | None = None, b: str | None = None
) -> Response:
    va, vb = _version_arg(a), _version_arg(b)
    return await _model_page(request, name, diff=(va, vb) if va is not None and vb is not None else None)


def _actor(user: ConsoleUser) -> str:
    return f"console:{user.name}"


@router.post("/models/{name}/promote", dependencies=[CsrfChecked])
async def promote(
    request: Request,
    name: str,
    user: Admin,
    version: Annotated[str, Form()] = "",
    tag: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Point a tag at a version: `kennel tag NAME@V TAG -m REASON`."""
    _ = translator(request)
    number = _version_arg(version)
    return await _move_tag(
        request,
        name,
        form={"version": version, "tag": tag, "reason": reason, "action": "promote"},
        tag=tag.strip() or "prod",
        reason=reason,
        problem=_("Choose a version.") if number is None else None,
        move=lambda store, why: store.set_tag(
            Ref(check_name(name), version=number), tag.strip() or "prod", actor=_actor(user), message=why
        ),
        done="promoted",
    )


@router.post("/models/{name}/rollback", dependencies=[CsrfChecked])
async def rollback(
    request: Request,
    name: str,
    user: Admin,
    tag: Annotated[str, Form()] = DEFAULT_TAG,
    to: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Move a tag back: `kennel rollback NAME --tag TAG [--to V] -m REASON`."""
    return await _move_tag(
        request,
        name,
        form={"rollback_tag": tag, "to": to, "reason": reason, "action": "rollback"},
        tag=tag.strip() or DEFAULT_TAG,
        reason=reason,
        problem=None,
        move=lambda store, why: store.rollback(
            check_name(name),
            tag=check_name(tag.strip() or DEFAULT_TAG, what="tag"),
            to=_version_arg(to),
            actor=_actor(user),
            message=why,
        ),
        done="rolledback",
    )


async def _move_tag(
    request: Request,
    name: str,
    *,
    form: Mapping[str, str],
    tag: str,
    reason: str,
    problem: str | None,
    move: Callable[[Store, str], tuple[int | None, int]],
    done: str,
) -> Response:
    """The tail promote and rollback share: a reason is required (then any other ``problem`` of
    the form), ``move(store, reason)`` runs off the event loop, and a KennelError shows the page
    again with the form as sent; on success, back to the model's page saying what was ``done``."""
    _ = translator(request)
    why = reason.strip()
    if not why:
        problem = _("Give a reason: it is kept in the history.")
    if problem is not None:
        return await _model_page(request, name, error=problem, form=form, status_code=400)

    def run() -> tuple[int | None, int]:
        with Store.open(home_of(request)) as store:
            return move(store, why)

    try:
        _before, after = await asyncio.to_thread(run)
    except KennelError as exc:
        return await _model_page(request, name, error=exc.message, form=form, status_code=400)
    return redirect(
        request,
        f"/ui/models/{check_name(name)}",
        done=done,
        tag=check_name(tag, what="tag"),
        version=str(after),
    )
