"""The console's router (prefix /ui) and its installation on the app: page routers, static
files, the redirect and 403 answers of the session checks."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from kennel.console import chat, keys_page, overview, signin
from kennel.console.render import finish, page
from kennel.console.session import ConsoleForbidden, ConsoleRedirect

STATIC = Path(__file__).parent / "static"

router = APIRouter(prefix="/ui")
router.include_router(signin.router)
router.include_router(overview.router)
router.include_router(chat.router)
router.include_router(keys_page.router)

# --- pages routers ---
from kennel.console import checkups_page, fit_page, models_page  # noqa: E402  (PAGES' lines)

router.include_router(models_page.router)
router.include_router(fit_page.router)
router.include_router(checkups_page.router)
# --- end pages routers ---


def install(app: FastAPI) -> None:
    """Mount the console on the app (called by create_app)."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")

    @app.exception_handler(ConsoleRedirect)
    async def _redirect(request: Request, exc: ConsoleRedirect) -> Response:
        response = RedirectResponse(exc.location, status_code=303)
        finish(request, response)
        return response

    @app.exception_handler(ConsoleForbidden)
    async def _forbidden(request: Request, exc: ConsoleForbidden) -> Response:
        return page(request, "forbidden.html", {"reason": exc.reason}, status_code=403)
