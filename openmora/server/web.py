"""The web page of ``openmora serve`` and the endpoints only it needs: ``GET /`` (the page, from ``static/``),
``POST /plan`` (a request's checked plan and estimate, before it is submitted), ``POST /login`` and
``POST /logout`` (a session cookie for a server with a token: a browser's ``EventSource`` and ``<video>`` cannot
send an ``Authorization`` header).

The page and its two assets are the only paths served without the token: they hold no data. The cookie holds
an HMAC of the token (not the token itself), is ``HttpOnly`` and ``SameSite=Strict`` (another site's page cannot
make the browser send it), and ``Secure`` when the request came over HTTPS.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from openmora.errors import InputError, first_line

if TYPE_CHECKING:
    from openmora.engine import Orchestrator

STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "openmora_session"
# The page's files: path -> (file under static/, media type). Served without the token.
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
# Paths that take no token: the page (GET) and the login itself (POST).
PUBLIC = {("GET", p) for p in PAGE_FILES} | {("HEAD", p) for p in PAGE_FILES} | {("POST", "/login")}
# Only this server's own files, scripts and styles; previews are data: URIs. Nothing from another origin.
CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
MAX_VIDEOS = 2
_FIELDS = ("request", "task", "segments", "best_of", "image", "videos")


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: an HMAC of it, so the cookie never holds the token."""
    return hmac.new(token.encode(), b"openmora web session", hashlib.sha256).hexdigest()


def cookie_ok(cookie_header: str, token: str) -> bool:
    """Whether a ``Cookie`` header carries this token's session cookie."""
    want = session_value(token).encode()
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and hmac.compare_digest(value.strip().encode(), want):
            return True
    return False


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


async def _fields(request: Request) -> dict[str, str]:
    """A JSON object's or a form's fields as strings (JSON numbers and booleans as their text)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise _error(400, 'the body is not JSON; send an object like {"request": "a red kite"}') from None
        if not isinstance(body, dict):
            raise _error(400, 'the body must be a JSON object like {"request": "a red kite"}')
        items: Iterable[tuple[str, Any]] = body.items()
    elif kind in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        items = (await request.form()).items()
    else:
        raise _error(415, f"content type {kind!r} is not accepted; send JSON or a form")
    out: dict[str, str] = {}
    for key, value in items:
        if key not in _FIELDS:
            continue
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        else:
            raise _error(400, f"{key} must be text or a number; /plan takes no uploads (say image/videos instead)")
    return out


def _whole(raw: str | None, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    if raw is None or not raw.strip():
        return default
    accepted = f"a whole number from {low} to {high}" if high is not None else f"a whole number >= {low}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise _error(400, f"{name} must be {accepted}, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise _error(400, f"{name} must be {accepted}, got {raw!r}")
    return value


def _flag(raw: str | None, name: str) -> bool:
    text = (raw or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise _error(400, f"{name} must be true or false, got {raw!r}")


def add_web(app: FastAPI, planner: Orchestrator, token: str | None) -> None:
    """Add the page, ``/plan``, ``/login`` and ``/logout`` to ``app``. ``planner``: the orchestrator that plans
    (of the worker's profile and LLM, but not the worker's own: the worker changes its takes per job)."""
    lock = asyncio.Lock()  # one plan at a time: planning sets the orchestrator's takes per request

    def page_file(path: str) -> Response:
        name, media = PAGE_FILES[path]
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if name.endswith(".html"):
            headers |= {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"}
        return FileResponse(STATIC_DIR / name, media_type=media, headers=headers)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return page_file("/")

    @app.get("/static/app.js", include_in_schema=False)
    def app_js() -> Response:
        return page_file("/static/app.js")

    @app.get("/static/app.css", include_in_schema=False)
    def app_css() -> Response:
        return page_file("/static/app.css")

    @app.post("/plan")
    async def plan(request: Request) -> dict[str, Any]:
        """The checked plan of a request and its estimated seconds on this server's profile, without running it.
        A form or JSON: ``request`` (the words), ``task`` (default auto), ``segments``, ``best_of``, and what would be
        uploaded with it: ``image`` (true/false) and ``videos`` (0 to 2). Returns ``{"steps", "estimate_s",
        "source", "task", "profile"}`` (steps: ``id``, ``agent``, ``tool``, ``args``)."""
        from openmora.chat import PlannedRun, _plan
        from openmora.group_chat.plans import check_task_inputs
        from openmora.quality.gate import GateSettings, check_best_of
        from openmora.server.app import _api_words

        f = await _fields(request)
        words = f.get("request", "").strip()
        task = f.get("task", "").strip() or "auto"
        segments = _whole(f.get("segments"), "segments", None, 1)
        best_of = _whole(f.get("best_of"), "best_of", 1, 1) or 1
        has_image = _flag(f.get("image"), "image")
        n_videos = _whole(f.get("videos"), "videos", 0, 0, MAX_VIDEOS) or 0
        try:
            check_task_inputs(task, words or None, "image" if has_image else None, [None] * n_videos, segments)
            check_best_of(best_of, "best_of")
        except InputError as err:
            raise _error(400, _api_words(first_line(err))) from None
        if segments is None and n_videos and task in ("edit", "digital-world"):
            raise _error(400, f"the plan of {task} depends on the uploaded video's length; give segments to see it")
        profile = planner.profile
        async with lock:
            planner.gate = GateSettings(
                best_of=best_of,
                per_tool=dict(profile.best_of),
                min_quality=profile.min_quality,
                max_retakes=profile.max_retakes,
            )
            try:
                planned: PlannedRun = await _plan(planner, task, words, [], has_image, n_videos, segments)
            except InputError as err:
                raise _error(400, _api_words(first_line(err))) from None
        out = planned.to_json()
        out.update(task=task, profile=planned.profile, best_of=best_of)
        return out

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> JSONResponse:
        """``{"token": TOKEN}``: set the session cookie (the page's way in). Without a token on the server there is
        nothing to log in to."""
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        given = body.get("token") if isinstance(body, dict) else None
        if not isinstance(given, str):
            raise _error(400, 'send JSON like {"token": "TOKEN"}')
        if token is None:
            return JSONResponse({"login": "not needed: this server has no token"})
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise _error(401, "wrong token; give the one the server was started with (--token)")
        response = JSONResponse({"login": "ok"})
        response.set_cookie(
            SESSION_COOKIE,
            session_value(token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> JSONResponse:
        """Drop the session cookie."""
        response = JSONResponse({"logout": "ok"})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response
