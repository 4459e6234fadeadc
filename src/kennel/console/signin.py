"""Sign-in with an API key, sign-out, and the language switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from kennel.console.i18n import LANG_COOKIE, LANGUAGES, N_
from kennel.console.render import finish, is_https, page
from kennel.console.session import CsrfChecked, is_open, replace_session, user_of
from kennel.errors import AuthError
from kennel.server.front import log_request
from kennel.server.state import AppState

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only a path of this console: never another host (``//evil``) or scheme."""
    if not target or not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    if user_of(request) is not None:
        return _redirect(request, safe_next(next))
    return page(request, "signin.html", {"next": safe_next(next), "error": None})


@router.post("/signin", dependencies=[CsrfChecked])
async def signin(
    request: Request, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/ui/"
) -> Response:
    state: AppState = request.app.state.kennel
    target = safe_next(next)
    if is_open(state):
        return _redirect(request, target)
    secret = key.strip()
    try:
        if state.keys is None:
            raise AuthError("no keys", reason="missing")
        api_key = state.keys.verify(secret or None)
    except AuthError as exc:
        # the same words for a wrong, revoked or expired key, as the API's 401; the request log
        # says which, as it does for the API, so key guessing shows there too
        log_request(
            request.scope.setdefault("state", {}),
            {"endpoint": "/ui/signin", "key": None, "status": 401, "auth": exc.reason},
        )
        error = N_("That key was not accepted. Check it and try again.")
        return page(request, "signin.html", {"next": target, "error": error}, status_code=401)
    replace_session(request, secret)
    request.scope["kennel_console_user"] = None  # re-read on the next request
    # who signed in, by key name (never the secret): the console's changes are made as that key
    log_request(
        request.scope.setdefault("state", {}),
        {"endpoint": "/ui/signin", "key": api_key.name, "status": 303},
    )
    return _redirect(request, target)


@router.post("/signout", dependencies=[CsrfChecked])
async def signout(request: Request) -> Response:
    replace_session(request, None)
    return _redirect(request, "/ui/signin")


@router.get("/lang")
async def set_language(request: Request, set: str = "en", next: str | None = None) -> Response:
    """A link per language (works without JS): the choice is kept in a cookie for a year."""
    response = _redirect(request, safe_next(next))
    if set in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, set, max_age=365 * 86400, path="/ui", samesite="lax", secure=is_https(request)
        )
    return response


def _redirect(request: Request, location: str) -> Response:
    response = RedirectResponse(location, status_code=303)
    finish(request, response)
    return response
