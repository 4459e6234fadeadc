"""The keys page (admins): create a key (its secret shown once, on the answer to the form, never
in a URL), list them, revoke one. The same ``KeyStore`` calls as `kennel keys create` / `revoke`,
run in a worker thread with a connection of their own (SQLite's connection belongs to its thread);
``created_by`` is ``console:<the admin key's name>`` so an audit tells the console's keys apart.

A server reading a keys file (``--keys-file``) cannot change it: the page lists the keys and
says where to create them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kennel.console.i18n import Gettext
from kennel.console.render import language, page
from kennel.console.session import Admin, ConsoleUser, CsrfChecked
from kennel.errors import KennelError
from kennel.server.http_errors import status_of_error
from kennel.server.keys import ROLES, ApiKey, KeyStore, parse_expires, utcnow
from kennel.server.state import AppState
from kennel.settings import KennelHome

router = APIRouter()


@dataclass(frozen=True)
class Created:
    key: ApiKey
    secret: str


@dataclass(frozen=True)
class NewKeyForm:
    name: str = ""
    role: str = "user"
    models: str = ""
    rpm: str = ""
    expires: str = ""


def _home(state: AppState) -> KennelHome:
    return state.home or KennelHome.from_env()


def _writable(state: AppState) -> bool:
    return isinstance(state.keys, KeyStore)


def _create(home: KennelHome, form: NewKeyForm, created_by: str) -> Created:
    rpm = int(form.rpm) if form.rpm.strip() else None
    when = parse_expires(form.expires) if form.expires.strip() else None
    with KeyStore.open(home) as keys:
        key, secret = keys.create(
            form.name,
            models=[form.models] if form.models.strip() else [],
            rpm=rpm,
            expires=when,
            role=form.role,
            created_by=created_by,
        )
    return Created(key, secret)


def _revoke(home: KennelHome, name: str) -> ApiKey:
    with KeyStore.open(home) as keys:
        return keys.revoke(name)


def _list(home: KennelHome, include_revoked: bool) -> list[ApiKey]:
    with KeyStore.open(home) as keys:
        return keys.list(include_revoked=include_revoked)


async def _keys(state: AppState, include_revoked: bool) -> list[ApiKey]:
    if _writable(state):
        return await asyncio.to_thread(_list, _home(state), include_revoked)
    return state.keys.list(include_revoked=include_revoked) if state.keys is not None else []


async def _render(
    request: Request,
    *,
    form: NewKeyForm | None = None,
    created: Created | None = None,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    state: AppState = request.app.state.kennel
    include_revoked = request.query_params.get("all") == "1"
    keys = await _keys(state, include_revoked)
    # the first key closes the open console behind a sign-in: as a user key it would lock its
    # creator out of this page, so the first one is an admin unless chosen otherwise
    first = not any(k.state() == "active" for k in keys)
    return page(
        request,
        "keys.html",
        {
            "keys": keys,
            "now": utcnow(),
            "include_revoked": include_revoked,
            "writable": _writable(state),
            "first_key": first,
            "form": form or NewKeyForm(role="admin" if first else "user"),
            "roles": ROLES,
            "created": created,
            "notice": notice,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/keys")
async def keys_page(request: Request, user: Admin) -> Response:
    return await _render(request)


@router.post("/keys", dependencies=[CsrfChecked])
async def create_key(request: Request, user: Admin) -> Response:
    state: AppState = request.app.state.kennel
    _ = request.app.state.console.catalogs.get(language(request)).gettext
    f = await request.form()

    def get(name: str) -> str:
        value = f.get(name)
        return value.strip() if isinstance(value, str) else ""

    form = NewKeyForm(get("name"), get("role") or "user", get("models"), get("rpm"), get("expires"))
    if not _writable(state):
        return await _render(request, form=form, error=_read_only(_), status_code=409)
    try:
        if form.rpm and not form.rpm.isdigit():
            raise ValueError(_("Requests per minute must be a whole number."))
        created = await asyncio.to_thread(_create, _home(state), form, _by(user))
    except KennelError as exc:
        return await _render(request, form=form, error=exc.message, status_code=status_of_error(exc))
    except ValueError as exc:
        return await _render(request, form=form, error=str(exc), status_code=400)
    return await _render(request, created=created)


@router.post("/keys/{name}/revoke", dependencies=[CsrfChecked])
async def revoke_key(request: Request, name: str, user: Admin) -> Response:
    state: AppState = request.app.state.kennel
    _ = request.app.state.console.catalogs.get(language(request)).gettext
    if not _writable(state):
        return await _render(request, error=_read_only(_), status_code=409)
    try:
        key = await asyncio.to_thread(_revoke, _home(state), name)
    except KennelError as exc:
        return await _render(request, error=exc.message, status_code=status_of_error(exc))
    notice = _("Revoked the key %(name)s: requests with it now get 401.", name=key.name)
    return await _render(request, notice=notice)


def _by(user: ConsoleUser) -> str:
    return f"console:{user.name}"


def _read_only(_: Gettext) -> str:
    return _(
        "This server reads its keys from a keys file. Create and revoke keys with `kennel keys` "
        "where keys.db is, then `kennel keys export` the file again."
    )
