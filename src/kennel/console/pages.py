"""What the models, fit and checkups pages share: the request's gettext, the home, redirects."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse

from kennel.console.i18n import Gettext
from kennel.console.render import finish, language
from kennel.server.state import AppState
from kennel.settings import KennelHome


def translator(request: Request) -> Gettext:
    """gettext for the request's language, for messages made in Python (errors, notices)."""
    return request.app.state.console.catalogs.get(language(request)).gettext  # type: ignore[no-any-return]


def home_of(request: Request) -> KennelHome:
    state: AppState = request.app.state.kennel
    return state.home or KennelHome.from_env()


def redirect(request: Request, path: str, **query: str) -> RedirectResponse:
    """303 after a POST, so a reload does not post again; ``query`` carries the notice."""
    target = path + (("?" + urlencode(query)) if query else "")
    response = RedirectResponse(target, status_code=303)
    finish(request, response)
    return response


def short_time(iso: str) -> str:
    """'2026-11-29T23:58:59+00:00' -> '2026-11-29 23:58' (UTC, as the store writes it)."""
    return iso[:16].replace("T", " ") if iso else ""
