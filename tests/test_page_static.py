"""ws/pages.py and the files it serves, without a browser: what is served, with which type,
what is refused, the page's settings, the vendored Leaflet being the one its README names,
both languages holding the same keys, and every static file shipped in the wheel."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import get_args

import pytest

from alerts.records import AlertKind, AlertStatus, Severity
from fleetwatch.web import WebShell, open_web_server
from schedule.stop_events import StopState
from ws.pages import _resolve, page_router, static_root

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "ws" / "static"


async def fetch(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection: (status, lower-cased headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


async def serve_and_get(
    paths: list[str], **router_kw: object
) -> list[tuple[int, dict[str, str], bytes]]:
    shell = WebShell()
    shell.include_router(page_router(**router_kw))  # type: ignore[arg-type]
    server = open_web_server(shell, host="127.0.0.1", port=0)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.serve(), name="web")
        async with asyncio.timeout(10):
            await server.wait_started()
            out = [await fetch(server.port, p) for p in paths]
        server.request_stop()
        await task
    return out


async def test_index_static_files_and_config_are_served_with_their_types() -> None:
    index, app, css, leaflet, png, ru, config = await serve_and_get(
        [
            "/",
            "/static/app.js",
            "/static/style.css",
            "/static/vendor/leaflet/leaflet.js",
            "/static/vendor/leaflet/images/layers.png",
            "/static/i18n/ru.json",
            "/console-config.json",
        ]
    )
    assert index[0] == 200
    assert index[1]["content-type"].startswith("text/html")
    assert index[2] == (STATIC / "index.html").read_bytes()
    assert app[0] == 200
    assert app[1]["content-type"].startswith("text/javascript")  # modules need a JS type
    assert app[2] == (STATIC / "app.js").read_bytes()
    assert css[1]["content-type"].startswith("text/css")
    assert leaflet[0] == 200
    assert png[1]["content-type"] == "image/png"
    assert json.loads(ru[2])["alerts.title"] == "Тревоги"
    assert app[1]["x-content-type-options"] == "nosniff"
    # no tiles, the same-origin websocket and Moscow time unless configured
    assert json.loads(config[2]) == {
        "tile_url": None,
        "tile_attribution": "",
        "ws_url": None,
        "ws_path": "/ws/console",
        "time_zone": "Europe/Moscow",
    }


async def test_configured_tiles_and_websocket_reach_the_page() -> None:
    [(status, _, body)] = await serve_and_get(
        ["/console-config.json"],
        tile_url="https://tiles.example/{z}/{x}/{y}.png",
        tile_attribution="© example",
        ws_url="wss://console.example/ws/console",
        time_zone="Asia/Yekaterinburg",
    )
    assert status == 200
    cfg = json.loads(body)
    assert cfg["tile_url"] == "https://tiles.example/{z}/{x}/{y}.png"
    assert cfg["ws_url"] == "wss://console.example/ws/console"
    assert cfg["time_zone"] == "Asia/Yekaterinburg"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../pages.py",
        "/static/%2e%2e/pages.py",
        "/static/js/../../pages.py",
        "/static/nope.js",
        "/static/js",  # a directory
        "/static/",
        "/static/vendor//leaflet/leaflet.js",
        "/static/..%5cpages.py",
    ],
)
async def test_nothing_outside_the_static_files_is_served(path: str) -> None:
    [(status, _, body)] = await serve_and_get([path])
    assert status == 404
    assert b"import" not in body


def test_every_page_file_is_shipped_in_the_wheel() -> None:
    """pyproject's package-data globs cover every file under ws/static (a new file in a new
    folder would otherwise work from the source tree and 404 once installed)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = cfg["tool"]["setuptools"]["package-data"]["ws"]
    files = {p for p in STATIC.rglob("*") if p.is_file()}
    assert len(files) > 10
    shipped = {p for g in globs for p in (REPO / "ws").glob(g) if p.is_file()}
    missing = sorted(p.relative_to(STATIC).as_posix() for p in files - shipped)
    assert not missing, f"not in [tool.setuptools.package-data] ws: {missing}"
    assert static_root().joinpath("index.html").is_file()


def test_vendored_leaflet_is_the_release_its_readme_names() -> None:
    vendor = STATIC / "vendor" / "leaflet"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    named = dict(re.findall(r"`dist/([\w.]+)` \(sha256 `([0-9a-f]{64})`\)", flat))
    assert set(named) == {"leaflet.js", "leaflet.css"}
    for name, digest in named.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "Leaflet 1.9.4" in (vendor / "leaflet.js").read_text(encoding="utf-8")[:200]
    assert "BSD 2-Clause" in (vendor / "LICENSE").read_text(encoding="utf-8")


def test_both_languages_hold_the_same_keys_and_every_key_the_page_uses() -> None:
    ru = json.loads((STATIC / "i18n" / "ru.json").read_text(encoding="utf-8"))
    en = json.loads((STATIC / "i18n" / "en.json").read_text(encoding="utf-8"))
    assert set(ru) == set(en)
    assert all(v.strip() for v in [*ru.values(), *en.values()])
    # static keys (data-i18n*) and literal t("...") calls in the scripts
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-placeholder|-title)?="([\w.]+)"', html))
    for js in [STATIC / "app.js", *sorted((STATIC / "js").glob("*.js"))]:
        used |= set(re.findall(r'\bt\("([\w.]+)"', js.read_text(encoding="utf-8")))
    assert used, "no i18n key found: the pattern above is stale"
    assert not used - set(ru), f"keys used by the page but not translated: {sorted(used - set(ru))}"
    # keys built from protocol values: every value the records can hold has a text
    for prefix, values in [
        ("kind", get_args(AlertKind)),
        ("severity", get_args(Severity)),
        ("status", get_args(AlertStatus)),
        ("stop", get_args(StopState)),
        ("vehicle", ("moving", "stopped", "at_site", "silent")),
        ("role", ("viewer", "dispatcher", "head_dispatcher")),
        ("conn", ("idle", "connecting", "open", "reconnecting", "unauthorized", "forbidden")),
        ("conn", ("closed",)),
    ]:
        missing = [f"{prefix}.{v}" for v in values if f"{prefix}.{v}" not in ru]
        assert not missing, missing


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("app.js", True),
        ("vendor/leaflet/LICENSE", True),
        ("../pages.py", False),
        ("js/../app.js", False),
        ("./app.js", False),
        ("js//state.js", False),
        ("..\\pages.py", False),
        ("js", False),
        ("", False),
    ],
)
def test_only_plain_paths_to_files_resolve(path: str, served: bool) -> None:
    """The guard itself, below any URL normalisation the HTTP stack may do."""
    assert (_resolve(path) is not None) is served
