"""Liveness and readiness that tell the truth within seconds, and one log line per outage.

Two questions, as orchestrators ask them:

* **liveness** (``/healthz``): is the process doing its work, or stuck so that only a restart
  helps?  It fails only when messages wait and nothing has been committed for
  ``stall_s`` while the database answers (the pipeline is wedged), never merely because a
  dependency is down: restarting fleetwatch does not bring PostgreSQL back.
* **readiness** (``/readyz``): is everything it depends on working right now?  The database
  (actively probed every ``probe_interval_s`` with ``SELECT 1``, *whether or not a write is
  due*: an idle service learns of an outage within one interval, and the writer's own view is
  folded in), the broker connection, the engine keeping up, the last commit when messages wait.

:func:`evaluate` is pure (inputs and ``now`` in, a :class:`HealthReport` out), so every
combination is tested without a database.  :class:`Health` is the thin shell that gathers the
inputs from the running parts and owns the probe task.

:class:`DependencyLog` is the one retry-logging policy for both dependencies: one WARNING when a
dependency goes down (what failed, the cause, when the next attempt is), one WARNING when it
is back (after how long), nothing in between, whatever the retry cadence.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge

if TYPE_CHECKING:
    from fleetwatch.config import Settings

log = logging.getLogger("fleetwatch.health")


# -- one log line per dependency state change ------------------------------------------------
class DepState(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class DepInput(enum.Enum):
    OK = "ok"
    FAILED = "failed"


class DepAction(enum.Enum):
    NONE = "none"
    LOG_FIRST_UP = "log-first-up"  # INFO: connected
    LOG_DOWN = "log-down"  # WARNING: unavailable, cause, next attempt
    LOG_BACK = "log-back"  # WARNING: available again after N s


#: (state, input) -> (next state, action): the whole policy, in one place.
DEP_TRANSITIONS: dict[tuple[DepState, DepInput], tuple[DepState, DepAction]] = {
    (DepState.UNKNOWN, DepInput.OK): (DepState.UP, DepAction.LOG_FIRST_UP),
    (DepState.UNKNOWN, DepInput.FAILED): (DepState.DOWN, DepAction.LOG_DOWN),
    (DepState.UP, DepInput.OK): (DepState.UP, DepAction.NONE),
    (DepState.UP, DepInput.FAILED): (DepState.DOWN, DepAction.LOG_DOWN),
    (DepState.DOWN, DepInput.OK): (DepState.UP, DepAction.LOG_BACK),
    (DepState.DOWN, DepInput.FAILED): (DepState.DOWN, DepAction.NONE),
}


class DependencyLog:
    """Feed it every attempt's outcome; it logs only state changes (see :data:`DEP_TRANSITIONS`).

    ``name`` is what an operator calls the dependency ("database", "broker"), ``setting`` the
    variable that points at it, so the WARNING says where to look.
    """

    def __init__(
        self,
        name: str,
        setting: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.name = name
        self.setting = setting
        self.state = DepState.UNKNOWN
        self.changes = 0
        self._clock = clock
        self._log = logger
        self._down_since: float | None = None

    def ok(self, operation: str) -> DepAction:
        return self._step(DepInput.OK, operation, None, None)

    def failed(self, operation: str, cause: str, next_attempt_s: float | None) -> DepAction:
        return self._step(DepInput.FAILED, operation, cause, next_attempt_s)

    def _step(
        self, inp: DepInput, operation: str, cause: str | None, next_s: float | None
    ) -> DepAction:
        state, action = DEP_TRANSITIONS[(self.state, inp)]
        if state is not self.state:
            self.changes += 1
        self.state = state
        now = self._clock()
        if action is DepAction.LOG_FIRST_UP:
            self._log.info("%s available (%s)", self.name, operation)
        elif action is DepAction.LOG_DOWN:
            self._down_since = now
            nxt = f"next attempt in {next_s:.1f} s" if next_s is not None else "retrying"
            self._log.warning(
                "%s unavailable: %s failed: %s; %s, and until it answers (check %s)",
                self.name, operation, _one_line(cause or "?"), nxt, self.setting,
            )  # fmt: skip
        elif action is DepAction.LOG_BACK:
            down_s = now - self._down_since if self._down_since is not None else 0.0
            self._down_since = None
            self._log.warning("%s available again after %.1f s (%s)", self.name, down_s, operation)
        return action


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the pure evaluation ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class HealthLimits:
    """When a reading counts as unhealthy.  See docs/operations.md."""

    #: the database probe runs this often (an idle service notices an outage this fast)
    probe_interval_s: float = 2.0
    #: a probe result older than this is "unknown" (the probe itself is stuck)
    max_probe_age_s: float = 10.0
    #: messages waiting and no commit for this long -> not ready
    max_commit_age_s: float = 30.0
    #: the engine this far behind the newest data -> not ready
    max_engine_lag_s: float = 30.0
    #: messages waiting, database up, no commit for this long -> not live (restart helps)
    stall_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("probe_interval_s", "max_probe_age_s", "max_commit_age_s",
                     "max_engine_lag_s", "stall_s"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"HealthLimits.{name} must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthInputs:
    """One reading of the running parts (times: seconds on one monotonic clock)."""

    now_s: float
    #: result of the last database probe; None = not probed yet
    database_ok: bool | None
    database_checked_s: float | None
    database_error: str | None = None
    #: the writer's own view (a failed write says "down" before the next probe)
    writer_store_up: bool = True
    broker_connected: bool
    #: messages received and not yet acknowledged
    unacked_messages: int = 0
    #: seconds since the last commit; None = none yet
    last_commit_age_s: float | None = None
    #: how far the engine is behind the data it was given; None = no engine or unknown
    engine_lag_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    ok: bool
    checks: dict[str, Check]

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "fail",
            "checks": {k: {"ok": c.ok, "detail": c.detail} for k, c in self.checks.items()},
        }


def evaluate_readiness(i: HealthInputs, limits: HealthLimits) -> HealthReport:
    """Readiness from one reading: every check, with a detail an operator can act on."""
    checks: dict[str, Check] = {}
    if i.database_ok is None or i.database_checked_s is None:
        checks["database"] = Check(ok=False, detail="not probed yet")
    elif i.now_s - i.database_checked_s > limits.max_probe_age_s:
        age = i.now_s - i.database_checked_s
        checks["database"] = Check(ok=False, detail=f"no probe answer for {age:.0f} s")
    elif not i.database_ok:
        checks["database"] = Check(ok=False, detail=_one_line(i.database_error or "unavailable"))
    elif not i.writer_store_up:
        checks["database"] = Check(ok=False, detail="the last write failed; retrying")
    else:
        checks["database"] = Check(ok=True, detail="answers")
    checks["broker"] = Check(
        ok=i.broker_connected,
        detail="connected and subscribed" if i.broker_connected else "not connected; retrying",
    )
    checks["commits"] = _commit_check(i, limits.max_commit_age_s)
    if i.engine_lag_s is None:
        checks["engine"] = Check(ok=True, detail="no lag reported")
    elif i.engine_lag_s > limits.max_engine_lag_s:
        checks["engine"] = Check(
            ok=False,
            detail=f"{i.engine_lag_s:.0f} s behind (limit {limits.max_engine_lag_s:.0f} s)",
        )
    else:
        checks["engine"] = Check(ok=True, detail=f"{i.engine_lag_s:.1f} s behind")
    return HealthReport(ok=all(c.ok for c in checks.values()), checks=checks)


def evaluate_liveness(i: HealthInputs, limits: HealthLimits) -> HealthReport:
    """Liveness: fails only for a wedged pipeline (work waiting, database up, no progress)."""
    db_up = bool(i.database_ok) and i.writer_store_up
    stalled = _commit_check(i, limits.stall_s)
    wedged = db_up and not stalled.ok
    check = Check(ok=not wedged, detail=stalled.detail if wedged else "running")
    return HealthReport(ok=check.ok, checks={"pipeline": check})


def _commit_check(i: HealthInputs, max_age_s: float) -> Check:
    if i.unacked_messages == 0:
        return Check(ok=True, detail="nothing waiting")
    if i.last_commit_age_s is None:
        return Check(ok=True, detail=f"{i.unacked_messages} messages waiting, first commit due")
    age = i.last_commit_age_s
    if age > max_age_s:
        return Check(
            ok=False,
            detail=f"{i.unacked_messages} messages waiting, last commit {age:.0f} s ago",
        )
    return Check(ok=True, detail=f"last commit {age:.1f} s ago")


# -- the shell -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineReading:
    """What the wiring reads from the running pipeline for each evaluation."""

    writer_store_up: bool
    broker_connected: bool
    unacked_messages: int
    #: seconds since the last commit; None = none yet
    last_commit_age_s: float | None
    engine_lag_s: float | None = None


DatabaseProbe = Callable[[], Any]  # an async callable: returns on success, raises on failure


class Health:
    """Gathers a :class:`HealthInputs` from the running parts; runs the database probe.

    ``read`` returns the pipeline's current :class:`PipelineReading`; ``probe`` is an async
    callable (``SELECT 1`` on its own connection) that raises when the database does not
    answer.  Run :meth:`run_probe` as a task of the service's task group.
    """

    def __init__(
        self,
        *,
        read: Callable[[], PipelineReading],
        probe: DatabaseProbe,
        limits: HealthLimits | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        database_log: DependencyLog | None = None,
    ) -> None:
        self.limits = limits or HealthLimits()
        self._read = read
        self._probe = probe
        self._clock = clock
        self._db_ok: bool | None = None
        self._db_checked_s: float | None = None
        self._db_error: str | None = None
        self.database_log = database_log or DependencyLog(
            "database", "FLEETWATCH_DATABASE_URL", clock=clock
        )
        self.broker_log = DependencyLog("broker", "FLEETWATCH_MQTT_URL", clock=clock)
        self._probed = asyncio.Event()
        self._g_db: Gauge | None = None
        self._g_ready: Gauge | None = None
        if registry is not None:
            self._g_db = Gauge(
                "fleetwatch_database_up",
                "1 when the last database probe (SELECT 1 every few seconds) answered, else 0.",
                registry=registry,
            )
            self._g_ready = Gauge(
                "fleetwatch_ready", "1 when /readyz says ready, else 0.", registry=registry
            )
            self._g_ready.set_function(lambda: float(self.readiness().ok))

    def inputs(self) -> HealthInputs:
        r = self._read()
        return HealthInputs(
            now_s=self._clock(),
            database_ok=self._db_ok,
            database_checked_s=self._db_checked_s,
            database_error=self._db_error,
            writer_store_up=r.writer_store_up,
            broker_connected=r.broker_connected,
            unacked_messages=r.unacked_messages,
            last_commit_age_s=r.last_commit_age_s,
            engine_lag_s=r.engine_lag_s,
        )

    def readiness(self) -> HealthReport:
        inputs = self.inputs()
        self._note_broker(inputs.broker_connected)  # a short outage seen here is logged too
        return evaluate_readiness(inputs, self.limits)

    def liveness(self) -> HealthReport:
        return evaluate_liveness(self.inputs(), self.limits)

    async def probe_once(self) -> bool:
        """One probe, bounded by ``max_probe_age_s``; records and logs the outcome."""
        interval = self.limits.probe_interval_s
        try:
            async with asyncio.timeout(min(self.limits.max_probe_age_s, 2 * interval + 1)):
                await self._probe()
        except (TimeoutError, OSError, ConnectionError) as exc:
            self._record(False, f"no answer: {exc or type(exc).__name__}", interval)
        except Exception as exc:  # psycopg.OperationalError and friends: the cause is text
            self._record(False, f"{type(exc).__name__}: {exc}", interval)
        else:
            self._record(True, None, interval)
        self._probed.set()
        return bool(self._db_ok)

    async def run_probe(self) -> None:
        """Probe every ``probe_interval_s`` until cancelled; log broker state changes too."""
        while True:
            await self.probe_once()
            self.note_broker()
            await asyncio.sleep(self.limits.probe_interval_s)

    def note_broker(self) -> None:
        """One WARNING when the MQTT session is lost, one when it is back (the MQTT client
        reconnects by itself, with backoff, and logs each attempt's cause at INFO)."""
        self._note_broker(self._read().broker_connected)

    def _note_broker(self, connected: bool) -> None:
        if not connected and self.broker_log.state is DepState.UNKNOWN:
            return  # still making the first connection (the start-up probe reported the broker)
        if connected:
            self.broker_log.ok("MQTT session")
        else:
            self.broker_log.failed(
                "MQTT session", "connection lost or refused (causes: ingest.mqtt.source at INFO)",
                None,
            )  # fmt: skip

    async def wait_probed(self) -> None:
        await self._probed.wait()

    def _record(self, ok: bool, error: str | None, interval: float) -> None:
        self._db_ok = ok
        self._db_error = error
        self._db_checked_s = self._clock()
        if self._g_db is not None:
            self._g_db.set(1 if ok else 0)
        if ok:
            self.database_log.ok("probe SELECT 1")
        else:
            self.database_log.failed("probe SELECT 1", error or "?", interval)


class PostgresProbe:
    """``SELECT 1`` on a connection of its own (not the writer's pool: a probe must not queue
    behind batch writes, nor be answered by a pooled connection that is already dead).

    The connection is kept between probes and reopened after any failure; :meth:`aclose` it.
    """

    def __init__(self, dsn: str, *, connect_timeout_s: float = 3.0) -> None:
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self._conn: Any = None

    async def __call__(self) -> None:
        import psycopg  # lazily: only the service needs it

        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout_s)),
                    application_name="fleetwatch-health",
                )
            await self._conn.execute("SELECT 1")
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # a dead connection may fail to close; it is gone anyway
                log.debug("closing the health probe's connection: %s", exc)


def reading_from(
    *,
    writer_store_up: bool,
    broker_connected: bool,
    unacked_messages: int,
    last_commit_us: int | None,
    now_us: int,
    engine_lag_s: float | None = None,
) -> PipelineReading:
    """A :class:`PipelineReading` from the pipeline's statistics (wall-clock µs stamps)."""
    age = None if last_commit_us is None else max(now_us - last_commit_us, 0) / 1e6
    return PipelineReading(
        writer_store_up=writer_store_up,
        broker_connected=broker_connected,
        unacked_messages=unacked_messages,
        last_commit_age_s=age,
        engine_lag_s=engine_lag_s,
    )


def health_limits(settings: Settings) -> HealthLimits:
    """The limits of the ``health_*`` settings."""
    return HealthLimits(
        probe_interval_s=settings.health_probe_interval_s,
        max_probe_age_s=max(5 * settings.health_probe_interval_s, 10.0),
        max_commit_age_s=settings.health_max_commit_age_s,
        max_engine_lag_s=settings.health_max_engine_lag_s,
    )
