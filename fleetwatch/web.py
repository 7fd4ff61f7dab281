"""The process's one HTTP server: a FastAPI app served by uvicorn inside the service's task group.

Why one shell, and why FastAPI + uvicorn: the dispatcher console needs websockets, the CRM needs
a documented JSON API (OpenAPI generated from the code that serves it, so the description cannot
drift), operators need ``/metrics``, ``/healthz`` and ``/readyz``.  One ASGI app answers all of
them on one port; stages *register* their routes on it (:meth:`WebShell.include_router`,
:meth:`WebShell.add_websocket_route`: one call each) and get the process's Prometheus
:class:`~prometheus_client.CollectorRegistry` handed to them (:attr:`WebShell.registry`) instead
of owning a registry or a server of their own.

uvicorn runs *inside* the service's :class:`asyncio.TaskGroup` (``tg.create_task(server.serve())``):
no thread, no process of its own, and none of its signal handlers (the service owns SIGINT and
SIGTERM and calls :meth:`WebServer.request_stop`).  The listening socket is bound before the
server starts (:func:`open_web_server`), so "port in use" is a one-line :class:`HttpPortInUse`
naming the setting instead of uvicorn's ``sys.exit`` deep inside a task group.  Websockets use
uvicorn's implementation over the ``websockets`` library's sans-I/O protocol, as
:class:`ws.wire.WireProtocol`: permessage-deflate without server context takeover, so the
console server can compress a message once for every console; plain HTTP uses h11.
Access logs are off by default (every scrape would log a line).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from fleetwatch.health import Health, HealthReport
from ws.wire import WireProtocol

log = logging.getLogger(__name__)

#: what the settings call the port, for error messages
PORT_SETTING = "FLEETWATCH_HTTP_PORT"
HOST_SETTING = "FLEETWATCH_HTTP_HOST"


class WebError(Exception):
    """The HTTP server cannot run; the message names the setting to change."""


class HttpPortInUse(WebError):
    """The configured port is taken by another process."""


WebsocketEndpoint = Callable[..., Any]


class WebShell:
    """The routes and the metrics registry of one process; served by :class:`WebServer`.

    Stages add to it before the server starts (and may add later: FastAPI looks routes up per
    request).  ``/metrics`` is registered here; ``/healthz`` and ``/readyz`` by
    :meth:`set_health`.
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, title: str = "fleetwatch"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.app = FastAPI(title=title, version=_version(), docs_url="/docs", redoc_url=None)
        self._health: Health | None = None
        self.app.add_api_route(
            "/metrics",
            self._metrics,
            methods=["GET"],
            response_class=Response,
            summary="Prometheus metrics of the process (names in docs/operations.md)",
            tags=["operations"],
        )
        self.app.add_api_route(
            "/healthz",
            self._healthz,
            methods=["GET"],
            summary="Liveness: 200 while the process's tasks are running",
            tags=["operations"],
        )
        self.app.add_api_route(
            "/readyz",
            self._readyz,
            methods=["GET"],
            summary="Readiness: 200 when database, broker and engine are all working",
            tags=["operations"],
        )

    # -- registration (one call per router / websocket) ----------------------------------------
    def include_router(self, router: APIRouter, *, prefix: str = "") -> None:
        """Serve a stage's routes (the CRM API, the console's page ...)."""
        self.app.include_router(router, prefix=prefix)

    def add_websocket_route(self, path: str, endpoint: WebsocketEndpoint) -> None:
        """Serve a websocket endpoint ``async def endpoint(websocket: WebSocket)`` at *path*."""
        self.app.add_api_websocket_route(path, endpoint)

    def set_health(self, health: Health) -> None:
        """Answer ``/healthz`` and ``/readyz`` from *health* (until then both say 503)."""
        self._health = health

    # -- handlers -------------------------------------------------------------------------------
    async def _metrics(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self) -> JSONResponse:
        return _report(self._health.liveness() if self._health is not None else None)

    async def _readyz(self) -> JSONResponse:
        return _report(self._health.readiness() if self._health is not None else None)


def _report(report: HealthReport | None) -> JSONResponse:
    if report is None:
        return JSONResponse({"status": "starting", "checks": {}}, status_code=503)
    return JSONResponse(report.as_json(), status_code=200 if report.ok else 503)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fleetwatch")
    except Exception:  # not installed (a source checkout on PYTHONPATH)
        return "0"


@dataclass(frozen=True, slots=True, kw_only=True)
class WebOptions:
    """How the server runs; defaults suit a service behind Prometheus and a load balancer."""

    #: log one line per request (uvicorn.access); off: a scrape every 15 s would fill the logs
    access_log: bool = False
    #: on stop: how long open requests and websockets may take to finish before they are cut
    #: (whole seconds, at least 1: uvicorn's unit)
    shutdown_timeout_s: float = 2.0
    #: uvicorn's keep-alive for idle HTTP connections (Prometheus reuses its connection)
    keep_alive_s: float = 30.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on *host*:*port* (0: any free port).

    Raises :class:`HttpPortInUse` or :class:`WebError` with one line naming the setting.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise WebError(
            f"{HOST_SETTING}={host!r}: not an address of this machine ({exc.strerror}); "
            "use 127.0.0.1, 0.0.0.0 or a local interface's address"
        ) from exc
    family, _, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it a kept-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise HttpPortInUse(
                f"{PORT_SETTING}={port}: port in use on {host} by another process; stop it, "
                f"or choose another port (0 picks a free one, 'off' serves no HTTP)"
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise WebError(
                f"{PORT_SETTING}={port}: not allowed to listen there (ports below 1024 need "
                "privileges); choose a port >= 1024"
            ) from exc
        raise WebError(
            f"{HOST_SETTING}={host!r} {PORT_SETTING}={port}: cannot listen ({exc.strerror})"
        ) from exc
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the service owns SIGINT/SIGTERM."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.started_event.set()


class WebServer:
    """One :class:`WebShell` served on one bound socket; make it with :func:`open_web_server`.

    ``await serve()`` runs until :meth:`request_stop` (then closes listeners, lets open
    requests finish for up to ``shutdown_timeout_s``, and returns) or until cancelled (then
    listeners and connections are closed at once and the cancellation propagates).
    """

    def __init__(self, shell: WebShell, sock: socket.socket, options: WebOptions) -> None:
        self.shell = shell
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]
        config = uvicorn.Config(
            shell.app,
            http="h11",
            ws=WireProtocol,
            lifespan="off",
            log_config=None,
            log_level="info" if options.access_log else "warning",
            access_log=options.access_log,
            server_header=False,
            timeout_graceful_shutdown=max(math.ceil(options.shutdown_timeout_s), 1),
            timeout_keep_alive=max(int(options.keep_alive_s), 1),
        )
        self._server = _EmbeddedServer(config)
        self._served = False

    @property
    def started(self) -> bool:
        """True once the server accepts connections."""
        return self._server.started

    async def wait_started(self) -> None:
        """Wait until the server accepts connections (wrap it in a timeout)."""
        await self._server.started_event.wait()

    async def serve(self) -> None:
        if self._served:
            raise RuntimeError("a WebServer serves once; open another")
        self._served = True
        try:
            await self._server.serve(sockets=[self._sock])
        except asyncio.CancelledError:
            self._abort()
            raise
        finally:
            self._sock.close()

    def request_stop(self) -> None:
        """Stop accepting; ``serve()`` returns after the bounded graceful shutdown."""
        self._server.should_exit = True

    def stop_after(self, _task: asyncio.Task[Any]) -> None:
        """``task.add_done_callback(server.stop_after)``: serve as long as *task* runs."""
        self.request_stop()

    def close(self) -> None:
        """Release the socket of a server that never served (``serve`` closes it itself)."""
        if not self._served:
            self._sock.close()

    def _abort(self) -> None:
        self._server.force_exit = True
        for server in getattr(self._server, "servers", []):
            server.close()
        for connection in list(self._server.server_state.connections):
            connection.shutdown()


def open_web_server(
    shell: WebShell, *, host: str, port: int, options: WebOptions | None = None
) -> WebServer:
    """Bind *host*:*port* now (errors are one line), serve later with ``await .serve()``."""
    return WebServer(shell, bind_socket(host, port), options or WebOptions())
