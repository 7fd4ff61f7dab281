"""Start-up policy: one rule for both dependencies, and logging that says what is going on.

The rule (docs/operations.md, "Start-up and retries"):

1. every setting is validated before anything connects, and every problem is reported at once
   (exit code 2);
2. the database and the broker are then each probed once — a ``SELECT 1`` on a fresh
   connection, an MQTT CONNECT/CONNACK with a throwaway clean session — concurrently;
3. with ``startup_wait_s = 0`` (the default) an unreachable dependency ends the program at once
   with one line naming it, the setting, the value (password redacted) and the cause (exit
   code 3): a typo in a host name should not look like a slow network.  With
   ``--wait-for SECONDS`` (``FLEETWATCH_STARTUP_WAIT_S``) each is retried with capped
   exponential backoff for up to that long, with one WARNING when it is found down and one when
   it is back;
4. a refusal that retrying cannot fix (bad credentials, not authorised) is never waited for;
5. once running, both dependencies are retried for as long as the service runs, with the same
   one-WARNING-per-state-change logging (:class:`fleetwatch.health.DependencyLog`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fleetwatch.config import Settings, env_name, redact_url
from fleetwatch.health import DependencyLog

log = logging.getLogger("fleetwatch.startup")

#: exit codes of ``fleetwatch run`` (documented in docs/operations.md)
EXIT_OK = 0
EXIT_ERROR = 1  # a bug: the traceback is printed
EXIT_CONFIG = 2  # bad or missing settings, bad command line
EXIT_UNAVAILABLE = 3  # a dependency (database, broker) unreachable at start or refusing us
EXIT_PORT = 4  # the HTTP port cannot be bound (in use, not allowed)
EXIT_INTERRUPTED = 130


class DependencyUnavailable(Exception):
    """A dependency cannot be used; each of ``lines`` names one and the setting to check."""

    def __init__(self, *lines: str) -> None:
        self.lines: tuple[str, ...] = lines or ("unavailable",)
        super().__init__("; ".join(self.lines))


class DependencyRefused(DependencyUnavailable):
    """The dependency answered and refused us (credentials, ACL): waiting will not help."""


async def probe_database(dsn: str, *, timeout_s: float) -> None:
    """Connect and ``SELECT 1``; raises :class:`DependencyUnavailable` or the refusal."""
    import psycopg

    try:
        async with asyncio.timeout(timeout_s + 1):
            conn = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, connect_timeout=max(1, round(timeout_s)),
                application_name="fleetwatch-startup",
            )  # fmt: skip
            async with conn:
                await conn.execute("SELECT 1")
    except TimeoutError:
        raise DependencyUnavailable(f"no answer within {timeout_s:.0f} s") from None
    except psycopg.OperationalError as exc:
        cause = " ".join(str(exc).split())
        if "password authentication failed" in cause or "does not exist" in cause:
            raise DependencyRefused(cause) from exc
        raise DependencyUnavailable(cause) from exc


async def probe_broker(
    host: str,
    port: int,
    *,
    username: str | None,
    password: str | None,
    client_id: str,
    version: int,
    timeout_s: float,
) -> None:
    """TCP connect, CONNECT with a clean throwaway session, wait for CONNACK, DISCONNECT."""
    await mqtt_connect_once(
        host, port, username=username, password=password,
        client_id=f"{client_id}-probe-{uuid.uuid4().hex[:6]}", version=version,
        timeout_s=timeout_s,
    )  # fmt: skip


async def forget_session(
    host: str, port: int, *, username: str | None, password: str | None, client_id: str,
    version: int, timeout_s: float = 5.0,
) -> None:  # fmt: skip
    """Make the broker discard *client_id*'s persistent session and what it queued for it
    (CONNECT with clean start and session expiry 0).  The demo does this at exit, so that a
    production broker does not queue a fleet's data for a session nobody will resume."""
    await mqtt_connect_once(
        host, port, username=username, password=password, client_id=client_id,
        version=version, timeout_s=timeout_s,
    )  # fmt: skip


async def mqtt_connect_once(
    host: str, port: int, *, username: str | None, password: str | None, client_id: str,
    version: int, timeout_s: float,
) -> None:  # fmt: skip
    """CONNECT (clean start, no session kept) as *client_id*, wait for CONNACK, DISCONNECT."""
    from ingest.mqtt import protocol as p
    from ingest.mqtt.settings import PERMANENT_REFUSALS

    probe_id = client_id
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    p.encode_connect(
                        client_id=probe_id, keepalive_s=10, clean_start=True,
                        username=username, password=password, session_expiry_s=0,
                        version=version,
                    )
                )  # fmt: skip
                await writer.drain()
                parser = p.Parser(version=version)
                connack: p.ConnAck | None = None
                while connack is None:
                    data = await reader.read(4096)
                    if not data:
                        raise DependencyUnavailable("the broker closed the connection")
                    parser.feed(data)
                    connack = next(
                        (e for e in parser.next_events() if isinstance(e, p.ConnAck)), None
                    )
                if connack.reason >= 0x80:
                    what = PERMANENT_REFUSALS.get(connack.reason)
                    if what is not None:
                        raise DependencyRefused(
                            f"refused user {username!r}: {what} (reason {connack.reason:#x})"
                        )
                    raise DependencyUnavailable(f"refused (reason {connack.reason:#x})")
                writer.write(p.DISCONNECT_BYTES)
                await writer.drain()
            finally:
                writer.close()
    except TimeoutError:
        raise DependencyUnavailable(f"no CONNACK within {timeout_s:.0f} s") from None
    except p.ProtocolError as exc:
        raise DependencyUnavailable(f"not an MQTT broker? ({exc})") from exc
    except OSError as exc:
        raise DependencyUnavailable(exc.strerror or str(exc)) from exc


async def wait_until_available(
    probe: Callable[[], Awaitable[None]],
    dep: DependencyLog,
    *,
    operation: str,
    wait_s: float,
    clock: Callable[[], float] = time.monotonic,
    initial_s: float = 0.5,
    max_s: float = 10.0,
) -> None:
    """Probe until it succeeds or *wait_s* has passed (then the last cause is raised)."""
    deadline = clock() + wait_s
    delay = initial_s
    while True:
        try:
            await probe()
        except DependencyRefused:
            raise  # the caller's one line says it all
        except DependencyUnavailable as exc:
            left = deadline - clock()
            if left <= 0:
                raise
            nxt = min(delay, left)
            dep.failed(operation, str(exc), nxt)
            await asyncio.sleep(nxt)
            delay = min(delay * 2, max_s)
        else:
            dep.ok(operation)
            return


async def wait_for_dependencies(settings: Settings) -> None:
    """Probe database and broker concurrently under the start-up rule; raise a one-line error.

    The error names the dependency, the setting and its value (password redacted), the cause,
    and what to do.
    """
    from ingest.mqtt import parse_mqtt_url

    assert settings.database_url, "checked by problems_for_run"
    assert settings.mqtt_url, "checked by problems_for_run"
    db_url, mq_url = settings.database_url, settings.mqtt_url
    mqtt = parse_mqtt_url(mq_url)
    wait_s = settings.startup_wait_s
    timeout_s = settings.database_timeout_s

    async def database() -> None:
        await probe_database(db_url, timeout_s=timeout_s)

    async def broker() -> None:
        await probe_broker(
            mqtt.host, mqtt.port, username=mqtt.username, password=mqtt.password,
            client_id=settings.mqtt_client_id, version=settings.mqtt_version,
            timeout_s=max(timeout_s, 3.0),
        )  # fmt: skip

    checks = (
        ("database", "database_url", db_url, database, "connect and SELECT 1"),
        ("broker", "mqtt_url", mq_url, broker, "MQTT CONNECT"),
    )
    results = await asyncio.gather(
        *(
            wait_until_available(
                fn, DependencyLog(name, env_name(setting)), operation=op, wait_s=wait_s
            )
            for name, setting, _, fn, op in checks
        ),
        return_exceptions=True,
    )
    refused: list[str] = []
    down: list[str] = []
    for (name, setting, value, _, _), result in zip(checks, results, strict=True):
        shown = f"{env_name(setting)}={redact_url(value)}"
        if isinstance(result, DependencyRefused):
            refused.append(f"{name} refused us: {shown}: {result}; fix the credentials or the "
                           "server's access rules")  # fmt: skip
        elif isinstance(result, DependencyUnavailable):
            hint = (
                f"waited {wait_s:.0f} s" if wait_s > 0
                else "start it, or wait for it with --wait-for SECONDS (FLEETWATCH_STARTUP_WAIT_S)"
            )  # fmt: skip
            down.append(f"{name} unavailable: {shown}: {result}; {hint}")
        elif isinstance(result, BaseException):
            raise result
    if refused:
        raise DependencyRefused(*refused, *down)
    if down:
        raise DependencyUnavailable(*down)


def quiet_library_logs() -> None:
    """The log policy of a running service (docs/operations.md, "Logs").

    stamina's own WARNING per retry names neither the operation nor the delay, and the real
    cause was at INFO: its hook is removed, and our :class:`DependencyLog` logs state changes.
    psycopg_pool logs two WARNINGs a second during an outage: only its errors remain.
    uvicorn's start/stop chatter and access lines are off (``http_access_log`` turns the
    access lines on).
    """
    import stamina.instrumentation

    stamina.instrumentation.set_on_retry_hooks([])
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
