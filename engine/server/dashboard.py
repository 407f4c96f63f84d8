"""The live page: `GET /dashboard` (HTML, JavaScript and CSS shipped in engine/server/static/, no
CDN) and the JSON it polls, `GET /v2/stats/live` (engine/server/live.py), which scripts can read
too.

With `pipectl serve --api-key KEY`, the page and its static files carry no data and need no key;
`/v2/stats/live` needs `Authorization: Bearer KEY` like every other route. A browser gives the
page the key in the URL fragment, `http://HOST:8000/dashboard#key=KEY` (a fragment never leaves
the browser: it is not sent to the server, so it stays out of access logs and proxies); the page
keeps it in sessionStorage for that tab and sends it as the Authorization header.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from engine.errors import InvalidInput
from engine.server.live import WINDOW_S, LiveStats
from engine.server.repository import Repository
from engine.server.traces import RecentTraces

STATIC = Path(__file__).parent / "static"
PAGE_PREFIX = "/dashboard"  # needs no key: see the module docstring
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def routes(repo: Repository) -> list[web.RouteDef]:
    """The page, its static files and `/v2/stats/live`; registers the timeline's sampler."""
    traces = RecentTraces()
    repo.add_tracer(traces)
    live = LiveStats(repo, traces)

    async def page(request: web.Request) -> web.Response:
        return _file("index.html")

    async def static(request: web.Request) -> web.Response:
        return _file(request.match_info["name"])

    async def stats_live(request: web.Request) -> web.Response:
        raw = request.query.get("window_s", "")
        try:
            window = float(raw) if raw else WINDOW_S
        except ValueError:
            raise InvalidInput(f"query parameter 'window_s': {raw!r} is not a number") from None
        if not 0 < window <= 3600:
            raise InvalidInput(f"query parameter 'window_s': {window:g} is not in (0, 3600]")
        return web.json_response(live.document(window), headers={"Cache-Control": "no-store"})

    return [
        web.get(PAGE_PREFIX, page),
        web.get(PAGE_PREFIX + "/", page),
        web.get(PAGE_PREFIX + "/static/{name}", static),
        web.get("/v2/stats/live", stats_live),
    ]


def _file(name: str) -> web.Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound(text=f"no file {name!r} in the dashboard")
    return web.Response(
        body=path.read_bytes(),
        content_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "no-cache"},
    )
