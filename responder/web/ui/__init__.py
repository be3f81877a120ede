"""The web page at /ui/: server-rendered HTML over the store, with a small static script."""

import datetime

import aiohttp_jinja2
import jinja2
from aiohttp import web

from responder.web.ui import pages

# Scripts and styles only from our own static files: an injected inline script or handler never
# runs, even if something outside escaping slipped into a page.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def setup(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("responder.web.ui", "templates"),
        autoescape=True,  # every title, label, output and error comes from outside
        undefined=jinja2.StrictUndefined,
        filters={"when": when, "duration": duration},
    )
    app.add_routes(pages.routes)
    app.on_response_prepare.append(_security_headers)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(pages.UI_PREFIX):
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith(pages.STATIC_PREFIX):
            response.headers["Cache-Control"] = "no-store"  # pages show live state, maybe secret


def when(ts: float | None) -> str:
    """A time as UTC, to the second."""
    if ts is None:
        return "—"
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """Seconds as the largest two units: `1h 05m`, `3m 20s`, `4.2s`."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
