"""The web page's routes: the overview, a job's page, and signing in; rendered by Jinja2 templates."""

import functools
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from responder.logs import get_logger
from responder.sources.parsing import bearer_matches
from responder.web.daemon import DAEMON
from responder.web.errors import ApiError
from responder.web.query import job_id_of
from responder.web.ui import data
from responder.web.ui.session import COOKIE, SESSION_SECONDS, session_value

log = get_logger("responder.ui")

UI_PREFIX = "/ui/"
LOGIN_PATH = "/ui/login"
LOGOUT_PATH = "/ui/logout"
STATIC_PREFIX = "/ui/static/"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = frozenset({"ui.js", "ui.css"})
REFRESH_SECONDS = 2  # how often a page showing running work reloads itself
# Where a sign-in may send the browser back to: a page of ours, never another site ("//host").
_NEXT = re.compile(r"/ui/[A-Za-z0-9/_.-]{0,200}")

routes = web.RouteTableDef()

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def html_errors(view: View) -> View:
    """A page's bad input (an odd or unknown job id) answers an HTML page with the same status
    and message as the JSON API would."""

    @functools.wraps(view)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await view(request)
        except ApiError as e:
            context = {
                "title": f"{e.status}",
                "message": e.message,
                "status": e.status,
                "next_path": _safe_next(request.path),
            }
            return aiohttp_jinja2.render_template("error.html", request, context, status=e.status)

    return wrapped


@routes.get(UI_PREFIX)
@html_errors
async def overview(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    now = daemon.clock()
    view = await data.overview(daemon.store, now)
    context = {"title": "incidents", "view": view, "now": now}
    return _page("overview.html", request, context, refresh=view.active)


@routes.get("/ui/jobs/{id}")
@html_errors
async def job_page(request: web.Request) -> web.Response:
    store = request.app[DAEMON].store
    job = await store.get_job(job_id_of(request))
    if job is None:
        raise ApiError(404, "no such job")
    context = {
        "title": f"job {job.id}",
        "job": job,
        "notes": await store.job_notes(job.id),
        "plan": data.plan_steps(job),
        "outputs": data.pretty_json(job.outputs) if job.outputs else "",
    }
    return _page("job.html", request, context, refresh=job.status in data.ACTIVE)


@routes.get(STATIC_PREFIX + "{name}")
async def static_file(request: web.Request) -> web.FileResponse:
    """The page's script and style: named files only, so no path reaches outside the folder."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise ApiError(404, "no such file")
    return web.FileResponse(STATIC_DIR / name)


@routes.get(LOGIN_PATH)
async def login_form(request: web.Request) -> web.Response:
    return await login_page(request, status=200, next_path=request.query.get("next", UI_PREFIX))


@routes.post(LOGIN_PATH)
async def login(request: web.Request) -> web.Response:
    """Check the API token from the sign-in form (a POST body: never a URL) and answer with the
    session cookie, back to the page the form was on."""
    _from_our_pages(request)
    try:
        form = await request.post()
    # A multipart body without its boundary, or not as its boundary says; a charset Python lacks.
    except (ValueError, LookupError):
        raise ApiError(400, "the sign-in form's body is malformed") from None
    token, next_path = form.get("token"), form.get("next")
    next_path = next_path if isinstance(next_path, str) else UI_PREFIX
    api_token = request.app[DAEMON].credentials.api_token
    if not isinstance(token, str) or not bearer_matches(f"Bearer {token}", api_token):
        log.warning("ui.login_refused")
        return await login_page(request, status=401, next_path=next_path, failed=True)
    log.info("ui.login")
    response = web.HTTPSeeOther(_safe_next(next_path))
    response.set_cookie(
        COOKIE,
        session_value(api_token, time.time()),
        max_age=SESSION_SECONDS,
        path=UI_PREFIX,
        httponly=True,  # no script, ours or injected, can read it
        samesite="Strict",  # no other site can make the browser send it
        secure=request.secure,
    )
    raise response


@routes.post(LOGOUT_PATH)
async def logout(request: web.Request) -> web.Response:
    _from_our_pages(request)
    response = web.HTTPSeeOther(UI_PREFIX)
    response.del_cookie(COOKIE, path=UI_PREFIX)
    raise response


async def login_page(
    request: web.Request, *, status: int, next_path: str, failed: bool = False
) -> web.Response:
    """The sign-in form; answered with 401 in place of any page when read auth is on and the
    request carries neither the token nor a valid session cookie."""
    context = {"title": "sign in", "next_path": _safe_next(next_path), "failed": failed}
    response = aiohttp_jinja2.render_template("login.html", request, context, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="responder"'
    return response


def _from_our_pages(request: web.Request) -> None:
    """Refuse a sign-in or sign-out posted by another site's page (cross-site request forgery).
    Browsers say where a request comes from in `Sec-Fetch-Site`, which pages cannot set, and a
    reverse proxy does not change (unlike `Origin` against `Host`); other clients send none."""
    site = request.headers.get("Sec-Fetch-Site", "same-origin")
    if site != "same-origin":
        raise ApiError(403, "signing in or out only from this daemon's own pages")


def _safe_next(path: str) -> str:
    return path if _NEXT.fullmatch(path) and "//" not in path and ".." not in path else UI_PREFIX


def _page(
    name: str, request: web.Request, context: dict[str, Any], *, refresh: bool
) -> web.Response:
    context = {
        **context,
        "refresh": REFRESH_SECONDS if refresh else 0,
        "next_path": _safe_next(request.path),  # where signing in from this page returns to
    }
    return aiohttp_jinja2.render_template(name, request, context)
