"""The dispatcher console's page: ``/``, ``/static/...`` and ``/console-config.json``.

Why a router of its own: the page is static files (HTML, plain JavaScript modules, CSS, the
vendored Leaflet) with no build step, shipped inside the ``ws`` package and read through
:mod:`importlib.resources`, so an installed wheel serves exactly what the tests served and no
working directory or CDN is involved.  The wiring adds it to the process's one web shell
(``shell.include_router(page_router(...))``, see ``fleetwatch/web.py``).

The page's few settings (a map tile URL: none by default, because the service must work without
internet; the websocket address; the dispatchers' time zone) come from
``/console-config.json``, made here from keyword arguments, so the static files never need
editing per installation.  Docs: docs/console-page.md.
"""

from __future__ import annotations

import mimetypes
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response

#: where the page's files live inside the package
STATIC_PACKAGE = "ws"
STATIC_DIR = "static"
#: the websocket path of docs/console-protocol.md (same origin as the page)
CONSOLE_WS_PATH = "/ws/console"
#: the dispatchers work in Moscow (design.md); times on the page are shown in this zone
DEFAULT_TIME_ZONE = "Europe/Moscow"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
}
#: the page is small and changes with a release: revalidate instead of serving yesterday's JS
_CACHE = "no-cache"


def static_root() -> Traversable:
    """The package's ``ws/static`` directory (works from a source tree and from a wheel)."""
    return files(STATIC_PACKAGE).joinpath(STATIC_DIR)


def _resolve(path: str) -> Traversable | None:
    """*path* under the static root, or None when it is not a file there.

    Only plain names are followed ("..", "." and empty parts are refused), so a request can
    never leave the static directory whatever the resource backend is.
    """
    parts = path.split("/")
    if not parts or any(p in ("", ".", "..") or "\\" in p for p in parts):
        return None
    node = static_root()
    for part in parts:
        node = node.joinpath(part)
    return node if node.is_file() else None


def _content_type(name: str) -> str:
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot >= 0 else ""
    return _TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def page_router(
    *,
    tile_url: str | None = None,
    tile_attribution: str = "",
    ws_url: str | None = None,
    time_zone: str = DEFAULT_TIME_ZONE,
) -> APIRouter:
    """The console page's routes.

    ``tile_url``: a Leaflet tile URL template (``https://tiles.example/{z}/{x}/{y}.png``) or
    None (default) for no background map: sites, depots, tracks and trucks are vector layers
    and need nothing from the internet.  ``ws_url``: an absolute websocket URL, or None
    (default) for ``/ws/console`` on the page's own origin.  ``time_zone``: an IANA zone the
    page shows times in.
    """
    config: dict[str, Any] = {
        "tile_url": tile_url,
        "tile_attribution": tile_attribution,
        "ws_url": ws_url,
        "ws_path": CONSOLE_WS_PATH,
        "time_zone": time_zone,
    }
    router = APIRouter(tags=["console"])

    async def index() -> Response:
        return _file_response("index.html")

    async def console_config() -> JSONResponse:
        return JSONResponse(config, headers={"Cache-Control": _CACHE})

    async def static(path: str) -> Response:
        return _file_response(path)

    router.add_api_route(
        "/", index, methods=["GET"], response_class=Response, summary="The dispatcher console"
    )
    router.add_api_route(
        "/console-config.json",
        console_config,
        methods=["GET"],
        summary="The console page's settings (tile URL, websocket URL, time zone)",
    )
    router.add_api_route(
        "/static/{path:path}",
        static,
        methods=["GET"],
        response_class=Response,
        summary="The console page's static files (JS modules, CSS, vendored Leaflet)",
    )
    return router


def _file_response(path: str) -> Response:
    node = _resolve(path)
    if node is None:
        raise HTTPException(status_code=404, detail=f"no such file: {path[:200]}")
    return Response(
        node.read_bytes(),
        media_type=_content_type(node.name),
        headers={"Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"},
    )
