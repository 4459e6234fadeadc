"""Rendering a console page: ``page(request, "overview.html", {...})``.

Every template extends ``base.html`` and fills ``{% block title %}`` and ``{% block content %}``
(and ``{% block scripts %}`` if it needs to). A template gets its context plus:

- ``_`` — gettext for the request's language. Placeholders are ``%(name)s`` filled by keyword
  arguments: ``{{ _("Loaded %(count)s models", count=n) }}`` (the one way; not ``|format``);
- ``ngettext(singular, plural, n, **values)`` — ``%(num)s`` is ``n``;
- ``lang`` ("en" or "vi"), ``user`` (a ``ConsoleUser`` or None), ``csrf_token`` (put it in every
  form as ``<input type="hidden" name="csrf_token" value="{{ csrf_token }}">``), ``nav`` (the
  entries of ``NAV`` this user may see, as ``NavItem``), ``path`` (the request's path).

No visible text is written in a template outside ``_()``: tests/console/test_i18n.py checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from kennel.console.i18n import ENDONYMS, LANG_COOKIE, N_, negotiate
from kennel.console.session import ANONYMOUS_TTL, SESSION_COOKIE, SIGNED_IN_TTL, Session, session_of, user_of
from kennel.units import fmt_bytes

TEMPLATES = Path(__file__).parent / "templates"

# (path, label msgid, admin only): the one navigation list, in order
NAV: tuple[tuple[str, str, bool], ...] = (
    ("/ui/", N_("Overview"), False),
    ("/ui/chat", N_("Chat"), False),
    ("/ui/models", N_("Models"), False),
    ("/ui/fit", N_("Fit"), False),
    ("/ui/checkups", N_("Checkups"), False),
    ("/ui/keys", N_("API keys"), True),
)


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # translated
    current: bool


def environment() -> Environment:
    """Built once per app (in the lifespan), not at import. Filters: ``memory`` (a Memory as
    "1.2 GiB RAM + 8 GiB VRAM"), ``bytes``, ``clock`` (unix seconds as HH:MM:SS UTC), ``isotime``."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["memory"] = lambda m: m.describe()
    env.filters["bytes"] = fmt_bytes
    env.filters["clock"] = lambda t: datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S UTC")
    env.filters["isotime"] = lambda t: datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return env


def language(request: Request) -> str:
    return negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))


def _current(nav_path: str, path: str) -> bool:
    if nav_path == "/ui/":
        return path in ("/ui", "/ui/")
    return path == nav_path or path.startswith(nav_path + "/")


def page(
    request: Request, template: str, context: Mapping[str, object], *, status_code: int = 200
) -> HTMLResponse:
    console = request.app.state.console
    lang = language(request)
    tr = console.catalogs.get(lang)
    user = user_of(request)
    session = session_of(request)
    path = request.url.path
    nav = [
        NavItem(p, tr.gettext(label), _current(p, path))
        for p, label, admin_only in NAV
        if user is not None and (user.is_admin or not admin_only)
    ]
    values: dict[str, object] = {
        "_": tr.gettext,
        "ngettext": tr.ngettext,
        "lang": lang,
        "user": user,
        "csrf_token": session.csrf,
        "nav": nav,
        "path": path,
        "languages": ENDONYMS,
        **context,
    }
    html = console.templates.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code)
    finish(request, response)
    return response


def finish(request: Request, response: HTMLResponse | object) -> None:
    """Set the session cookie when this request made a new session, and keep pages out of caches.
    The framing, sniffing and Content-Security-Policy headers go on every /ui answer in the front
    (server/front.py ``CONSOLE_HEADERS``), the framework's own error answers included."""
    from starlette.responses import Response

    if not isinstance(response, Response):
        return
    response.headers.setdefault("cache-control", "no-store")
    new = request.scope.get("kennel_console_new_session")
    if isinstance(new, Session):
        set_session_cookie(request, response, new)


def set_session_cookie(request: Request, response: object, session: Session) -> None:
    from starlette.responses import Response

    assert isinstance(response, Response)
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        max_age=int(SIGNED_IN_TTL if session.secret else ANONYMOUS_TTL),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def is_https(request: Request) -> bool:
    """Served over TLS (uvicorn with a certificate, or a proxy the server trusts for forwarded
    headers: uvicorn's --proxy-headers rewrites the scheme then)."""
    return request.url.scheme == "https"
