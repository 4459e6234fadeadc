"""Who is using the console, and the checks every page and form goes through.

A session is a random id in an HttpOnly, SameSite=Strict cookie; what it stands for lives in the
server's memory only (``SessionStore`` on the ``ConsoleState``, built in the app's lifespan), so a
restart signs everyone out. A signed-in session keeps the key it was opened with and the key is
checked again on every request: revoking or expiring a key ends its sessions at once.

Every visitor gets a session, signed in or not, because the CSRF token of a form is bound to one
(the sign-in form too: a page elsewhere must not sign a browser in under its own key). Signing in
gives a new session id, so an id planted before sign-in is worth nothing after it.

With no keys on a loopback server the console is open, as the API is: everyone is
``ConsoleUser("local", "admin")``.

Dependencies for page modules: ``Viewer`` (signed in or open; a GET without a session is sent to
the sign-in page), ``Admin`` (403 page for a user key, GET or POST), ``CsrfChecked`` for every POST
(``csrf_token`` form field or ``X-CSRF-Token`` header)."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, Request

from kennel.console.i18n import N_
from kennel.errors import AuthError
from kennel.server.keys import ApiKey
from kennel.server.state import AppState

SESSION_COOKIE = "kennel_session"
SIGNED_IN_TTL = 12 * 3600.0  # a working day; then the key is asked for again
ANONYMOUS_TTL = 3600.0  # a visitor's session (only a CSRF token for the sign-in form)
# Each kind has its own cap, oldest dropped first, so memory stays bounded. They are apart because
# anyone can make a visitor's session (one GET without a cookie): a flood of those must not push
# out the signed-in ones, which only a key holder can make.
MAX_ANONYMOUS = 10_000
MAX_SIGNED_IN = 10_000

Role = Literal["admin", "user"]


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class Session:
    id: str
    csrf: str
    expires: float  # time.monotonic()
    # the API key it was signed in with (None: not signed in); never in a repr, so never in a log
    secret: str | None = field(default=None, repr=False)


@dataclass
class SessionStore:
    """Sessions by id, in memory: visitors' and signed-in ones apart, each oldest first. Within one
    kind every session lives as long, so the oldest is also the first to expire and pruning only
    ever looks at the front."""

    anonymous: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    signed_in: OrderedDict[str, Session] = field(default_factory=OrderedDict)

    def now(self) -> float:
        return time.monotonic()

    def new(self, secret: str | None = None) -> Session:
        now = self.now()
        ttl, kind, cap = (
            (SIGNED_IN_TTL, self.signed_in, MAX_SIGNED_IN)
            if secret
            else (ANONYMOUS_TTL, self.anonymous, MAX_ANONYMOUS)
        )
        while kind and (next(iter(kind.values())).expires <= now or len(kind) >= cap):
            kind.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + ttl, secret)
        kind[session.id] = session
        return session

    def __len__(self) -> int:
        return len(self.anonymous) + len(self.signed_in)

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self.signed_in.get(sid) or self.anonymous.get(sid)
        if session is None:
            return None
        if session.expires <= self.now():
            self.drop(sid)
            return None
        return session

    def drop(self, sid: str) -> None:
        self.signed_in.pop(sid, None)
        self.anonymous.pop(sid, None)

    def drop_key(self, secret: str) -> None:
        """End every session opened with this key (it was revoked from the console)."""
        for sid in [s.id for s in self.signed_in.values() if s.secret == secret]:
            del self.signed_in[sid]


class ConsoleRedirect(Exception):
    """Answered with a 303 to ``location`` (the console's exception handler)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class ConsoleForbidden(Exception):
    """Answered with the 403 page; ``reason`` is a msgid."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_open(state: AppState) -> bool:
    """No keys exist on a loopback server: the console is open, as the API is. A keyless server on
    a network (--insecure) keeps its console shut: a page on a rebound DNS name would be
    same-origin with it, so only a key may open it."""
    no_keys = state.keys is None or not state.keys.list()
    return no_keys and state.settings.is_loopback()


def session_of(request: Request) -> Session:
    """The request's session, made (and its cookie set by the response) when there is none."""
    cached = request.scope.get("kennel_console_session")
    if isinstance(cached, Session):
        return cached
    store: SessionStore = request.app.state.console.sessions
    session = store.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        session = store.new()
        request.scope["kennel_console_new_session"] = session
    request.scope["kennel_console_session"] = session
    return session


def replace_session(request: Request, secret: str | None) -> Session:
    """A fresh session id (sign-in, sign-out): the old one is dropped."""
    store: SessionStore = request.app.state.console.sessions
    old = store.get(request.cookies.get(SESSION_COOKIE))
    if old is not None:
        store.drop(old.id)
    session = store.new(secret)
    request.scope["kennel_console_session"] = session
    request.scope["kennel_console_new_session"] = session
    return session


def user_of(request: Request) -> ConsoleUser | None:
    """The signed-in user (the key checked again now), the open console's "local" admin, or None.
    Runs on the event loop: keys.db's connection belongs to the loop's thread."""
    cached = request.scope.get("kennel_console_user", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    state: AppState = request.app.state.kennel
    user: ConsoleUser | None = None
    if is_open(state):
        user = ConsoleUser("local", "admin")
    else:
        session = session_of(request)
        if session.secret is not None and state.keys is not None:
            try:
                key = state.keys.verify(session.secret)
            except AuthError:
                request.app.state.console.sessions.drop(session.id)  # revoked or expired: it ends
                request.scope.pop("kennel_console_session", None)
                session_of(request)
            else:
                user = ConsoleUser(key.name, "admin" if key.is_admin else "user")
                request.scope["kennel_console_key"] = key
    request.scope["kennel_console_user"] = user
    return user


def api_key_of(request: Request) -> ApiKey | None:
    """The API key behind the signed-in session (None on the open console): what the console's
    own requests (chat) are made as, with that key's model list, rate limit and guard mode."""
    user_of(request)
    key = request.scope.get("kennel_console_key")
    return key if isinstance(key, ApiKey) else None


def sees_all(request: Request) -> bool:
    """Admins, the open console and keys without a model list see every model."""
    user, key = user_of(request), api_key_of(request)
    return key is None or not key.models or (user is not None and user.is_admin)


def may_see(request: Request, model: str) -> bool:
    """Whether this viewer is shown ``model`` on the console's pages. A user key limited to some
    models sees those only, as /v1/models and /kennel/ps show it; the chat also checks the key
    on every message, as the API does (``check_key``)."""
    key = api_key_of(request)
    return sees_all(request) or (key is not None and key.allows(model))


async def require_viewer(request: Request) -> ConsoleUser:
    user = user_of(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise ConsoleRedirect(f"/ui/signin?next={quote(target, safe='')}")
    return user


async def require_admin(request: Request) -> ConsoleUser:
    user = await require_viewer(request)
    if not user.is_admin:
        raise ConsoleForbidden(N_("This page is for administrators. Sign in with an admin key to use it."))
    return user


async def check_csrf(request: Request) -> None:
    """The form's ``csrf_token`` (or the ``X-CSRF-Token`` header) must be this session's token."""
    session = session_of(request)
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise ConsoleForbidden(
            "The form expired or did not come from this console. Reload the page and try again."
        )


Viewer = Annotated[ConsoleUser, Depends(require_viewer)]
Admin = Annotated[ConsoleUser, Depends(require_admin)]
CsrfChecked = Depends(check_csrf)
