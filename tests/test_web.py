"""The one web shell: metrics, health, routes and websockets on one uvicorn server run inside
the caller's task group, with one-line errors and a bounded shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket

import numpy as np
import pytest
from fastapi import APIRouter, WebSocket
from websockets.asyncio.client import connect

from fleetwatch.health import Check, HealthReport
from fleetwatch.web import HttpPortInUse, WebOptions, WebServer, WebShell, open_web_server
from ingest.metrics import IngestMetrics

pytestmark = pytest.mark.anyio


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a fresh connection; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(x for x in lines if x.lower().startswith(b"content-length"))[15:])
    body = await reader.readexactly(length)
    writer.close()
    await writer.wait_closed()
    return int(head.split()[1]), body


class FakeHealth:
    def __init__(self) -> None:
        self.live = True
        self.ready = True

    def liveness(self) -> HealthReport:
        return HealthReport(ok=self.live, checks={"pipeline": Check(ok=self.live, detail="x")})

    def readiness(self) -> HealthReport:
        return HealthReport(ok=self.ready, checks={"database": Check(ok=self.ready, detail="y")})


async def serving(shell: WebShell, tg: asyncio.TaskGroup, **kw: object) -> WebServer:
    server = open_web_server(shell, host="127.0.0.1", port=0, **kw)  # type: ignore[arg-type]
    tg.create_task(server.serve(), name="web")
    async with asyncio.timeout(5):
        await server.wait_started()
    return server


async def test_metrics_of_a_stage_and_health_are_served() -> None:
    shell = WebShell()
    metrics = IngestMetrics(shell.registry)  # a stage gets the process's registry
    metrics.fixes_inserted.inc(20)
    metrics.receive_to_commit.observe_many(np.full(20, 0.01))
    health = FakeHealth()
    shell.set_health(health)  # type: ignore[arg-type]
    async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
        server = await serving(shell, tg)
        status, body = await http_get(server.port, "/metrics")
        assert status == 200
        assert b"fleetwatch_ingest_fixes_inserted_total 20.0" in body
        assert b"fleetwatch_ingest_receive_to_commit_seconds_count 20.0" in body
        assert (await http_get(server.port, "/healthz"))[0] == 200
        status, body = await http_get(server.port, "/readyz")
        assert (status, b'"database"' in body) == (200, True)
        health.ready = False
        assert (await http_get(server.port, "/readyz"))[0] == 503
        assert (await http_get(server.port, "/healthz"))[0] == 200  # liveness is separate
        health.live = False
        assert (await http_get(server.port, "/healthz"))[0] == 503
        assert (await http_get(server.port, "/nope"))[0] == 404
        server.request_stop()


async def test_health_says_starting_until_it_is_wired() -> None:
    shell = WebShell()
    async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
        server = await serving(shell, tg)
        status, body = await http_get(server.port, "/readyz")
        assert status == 503
        assert b"starting" in body
        server.request_stop()


async def test_a_router_and_a_websocket_are_one_call_each_and_appear_in_openapi() -> None:
    shell = WebShell()
    router = APIRouter()

    @router.get("/feed", summary="the CRM feed")
    async def feed(after: int = 0) -> dict[str, int]:
        return {"after": after}

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        text = await ws.receive_text()
        await ws.send_text(text.upper())
        await ws.close()

    shell.include_router(router, prefix="/api")
    shell.add_websocket_route("/ws/echo", echo)
    async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
        server = await serving(shell, tg)
        status, body = await http_get(server.port, "/api/feed?after=7")
        assert (status, body) == (200, b'{"after":7}')
        status, body = await http_get(server.port, "/openapi.json")
        assert status == 200
        assert b'"/api/feed"' in body
        assert b'"/metrics"' in body
        assert b'"/readyz"' in body
        async with connect(f"ws://127.0.0.1:{server.port}/ws/echo") as ws:
            await ws.send("hello")
            assert await ws.recv() == "HELLO"
        server.request_stop()


async def test_port_in_use_is_one_line_naming_the_setting() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        with pytest.raises(HttpPortInUse) as info:
            open_web_server(WebShell(), host="127.0.0.1", port=port)
    finally:
        taken.close()
    msg = str(info.value)
    assert "\n" not in msg
    assert f"FLEETWATCH_HTTP_PORT={port}" in msg
    assert "in use" in msg


async def test_stop_is_bounded_even_with_a_websocket_that_never_closes() -> None:
    shell = WebShell()
    gate = asyncio.Event()

    async def hold(ws: WebSocket) -> None:
        await ws.accept()
        await gate.wait()  # a handler that ignores the close

    shell.add_websocket_route("/ws/hold", hold)
    loop = asyncio.get_running_loop()
    server = open_web_server(
        shell, host="127.0.0.1", port=0, options=WebOptions(shutdown_timeout_s=0.5)
    )
    async with asyncio.timeout(20):
        task = asyncio.create_task(server.serve(), name="web")
        await server.wait_started()
        async with connect(f"ws://127.0.0.1:{server.port}/ws/hold"):
            t0 = loop.time()
            server.request_stop()
            await asyncio.wait_for(task, 5)  # returns by itself, within the bound
            assert loop.time() - t0 < 3
    with pytest.raises(ConnectionRefusedError):
        await http_get(server.port, "/metrics")


async def test_cancelled_server_releases_its_port_and_installs_no_signal_handler() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    shell = WebShell()
    seen: list[WebServer] = []

    async def a_task_fails_beside_the_server() -> None:
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            server = await serving(shell, tg)
            seen.append(server)
            assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
            raise RuntimeError("another task failed")

    with pytest.raises(ExceptionGroup) as info:
        await a_task_fails_beside_the_server()
    assert info.group_contains(RuntimeError, match="another task failed")
    server = seen[0]
    # the port is free again at once
    again = socket.create_server(("127.0.0.1", server.port))
    again.close()


def test_the_listening_socket_is_tcp_so_responses_are_not_delayed_by_nagle() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket's
    protocol is IPPROTO_TCP; with 0, each kept-alive response waited ~40 ms (measured)."""
    server = open_web_server(WebShell(), host="127.0.0.1", port=0)
    try:
        assert server._sock.proto == socket.IPPROTO_TCP
    finally:
        server.close()
