"""Watch the broker's own counters, so that messages it drops are never silent.

A broker with default queue limits (Mosquitto's ``max_queued_messages 1000``) drops QoS 1
messages for a subscriber that falls behind — during a database outage, fleetwatch stops
acknowledging and the backlog grows in the broker — and only the broker's log says so.
Mosquitto publishes ``$SYS/broker/publish/messages/dropped`` (a counter since the broker
started) and ``$SYS/broker/store/messages/count``; when the broker's ACL lets the ingest user
read ``$SYS/broker/#`` (the shipped ``deploy/mosquitto/acl`` does), this task reads them over a
connection of its own (clean session, QoS 0, client id ``<client_id>-sys``) and turns them into

* ``fleetwatch_broker_dropped_messages_total`` (drops seen while fleetwatch watched) and
  ``fleetwatch_broker_stored_messages``, ``fleetwatch_broker_sys_visible``;
* one WARNING per episode of drops, naming the broker settings to raise;
* the ``FleetwatchBrokerDroppingMessages`` alert (deploy/prometheus/fleetwatch-alerts.yml).

:class:`DropWatch` is the sans-I/O part (readings in, actions out; the policy is the table
:data:`DROP_TRANSITIONS`); :class:`BrokerSysWatcher` is the shell.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("fleetwatch.broker_watch")

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
STORED_TOPIC = "$SYS/broker/store/messages/count"
VERSION_TOPIC = "$SYS/broker/version"
SYS_TOPICS = (DROPPED_TOPIC, STORED_TOPIC, VERSION_TOPIC)

BROKER_SETTINGS_HINT = (
    "raise max_queued_messages and max_queued_bytes (and max_inflight_messages) in the "
    "broker's mosquitto.conf so that it holds the backlog of an outage; the shipped "
    "deploy/mosquitto/mosquitto.conf is the reference (docs/operations.md, 'Broker')"
)


class DropState(enum.Enum):
    UNKNOWN = "unknown"  # no reading yet
    QUIET = "quiet"
    DROPPING = "dropping"


class DropInput(enum.Enum):
    SAME = "same"  # the counter did not rise
    ROSE = "rose"
    QUIET_LONG = "quiet-long"  # no rise for ``quiet_s``


class DropAction(enum.Enum):
    NONE = "none"
    WARN_EARLIER = "warn-earlier"  # first reading: the broker dropped before we watched
    WARN = "warn"  # an episode of drops begins
    RECOVERED = "recovered"  # INFO: no drops for quiet_s


#: (state, input) -> (next state, action): one WARNING per episode, one INFO when it ends.
DROP_TRANSITIONS: dict[tuple[DropState, DropInput], tuple[DropState, DropAction]] = {
    (DropState.UNKNOWN, DropInput.SAME): (DropState.QUIET, DropAction.NONE),
    (DropState.UNKNOWN, DropInput.ROSE): (DropState.DROPPING, DropAction.WARN_EARLIER),
    (DropState.UNKNOWN, DropInput.QUIET_LONG): (DropState.QUIET, DropAction.NONE),
    (DropState.QUIET, DropInput.SAME): (DropState.QUIET, DropAction.NONE),
    (DropState.QUIET, DropInput.ROSE): (DropState.DROPPING, DropAction.WARN),
    (DropState.QUIET, DropInput.QUIET_LONG): (DropState.QUIET, DropAction.NONE),
    (DropState.DROPPING, DropInput.SAME): (DropState.DROPPING, DropAction.NONE),
    (DropState.DROPPING, DropInput.ROSE): (DropState.DROPPING, DropAction.NONE),
    (DropState.DROPPING, DropInput.QUIET_LONG): (DropState.QUIET, DropAction.RECOVERED),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DropStep:
    """What one reading meant: new drops (for the counter) and what to say."""

    new_drops: int
    action: DropAction
    #: the broker's own counter as read
    reading: int


class DropWatch:
    """Readings of the broker's dropped-messages counter in, drops and log actions out.

    The counter restarts at 0 with the broker: a reading below the last one is a restart, and
    the reading itself is the drops since then.  The first reading is the baseline (drops
    before fleetwatch watched are reported once, not counted).
    """

    def __init__(self, *, quiet_s: float = 300.0) -> None:
        self.quiet_s = quiet_s
        self.state = DropState.UNKNOWN
        self._last: int | None = None
        self._last_rise_s: float | None = None

    def observe(self, value: int, now_s: float) -> DropStep:
        if self._last is None:
            new, inp = 0, (DropInput.ROSE if value > 0 else DropInput.SAME)
            if value > 0:
                self._last_rise_s = now_s
        else:
            new = value - self._last if value >= self._last else value
            if new > 0:
                inp = DropInput.ROSE
                self._last_rise_s = now_s
            elif self._last_rise_s is not None and now_s - self._last_rise_s >= self.quiet_s:
                inp = DropInput.QUIET_LONG
            else:
                inp = DropInput.SAME
        self._last = value
        self.state, action = DROP_TRANSITIONS[(self.state, inp)]
        return DropStep(new_drops=new, action=action, reading=value)


def parse_counter(payload: bytes) -> int | None:
    """A $SYS counter payload (ASCII digits, maybe a fraction) -> int; None when it is not."""
    try:
        return int(float(payload.decode("ascii").strip()))
    except (UnicodeDecodeError, ValueError):
        return None


class BrokerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Counter(
            "fleetwatch_broker_dropped_messages",
            "Messages the broker reported dropping ($SYS/broker/publish/messages/dropped) "
            "while fleetwatch watched: its queue limits are too small (see docs/operations.md).",
            registry=registry,
        )
        self.stored = Gauge(
            "fleetwatch_broker_stored_messages",
            "Messages the broker holds ($SYS/broker/store/messages/count), incl. retained.",
            registry=registry,
        )
        self.visible = Gauge(
            "fleetwatch_broker_sys_visible",
            "1 while the broker's $SYS counters reach fleetwatch (ACL allows them), else 0.",
            registry=registry,
        )


class BrokerSysWatcher:
    """The task that reads $SYS over its own connection; :meth:`run` until cancelled."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str,
        version: int,
        metrics: BrokerMetrics,
        visibility_timeout_s: float = 30.0,
        reconnect_max_s: float = 30.0,
        quiet_s: float = 300.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._username, self._password = username, password
        self.client_id = f"{client_id}-sys"
        self.version = version
        self.metrics = metrics
        self.visibility_timeout_s = visibility_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self.watch = DropWatch(quiet_s=quiet_s)
        self._clock = clock
        self._said_invisible = False
        self.readings = 0
        self.seen = asyncio.Event()  # set at the first $SYS reading (tests wait on it)
        self.updated = asyncio.Event()  # set at every reading; waiters clear it
        self.invisible = asyncio.Event()  # set when $SYS did not arrive in time

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._session()
                delay = 1.0
            except (OSError, EOFError, TimeoutError, ConnectionError) as exc:
                log.debug("$SYS watch connection: %s; again in %.0f s", exc, delay)
            self.metrics.visible.set(0)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    async def _session(self) -> None:
        from ingest.mqtt import protocol as p

        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout=10
        )
        keepalive_s = 30
        try:
            writer.write(
                p.encode_connect(
                    client_id=self.client_id, keepalive_s=keepalive_s, clean_start=True,
                    username=self._username, password=self._password, session_expiry_s=0,
                    version=self.version,
                )
            )  # fmt: skip
            for i, topic in enumerate(SYS_TOPICS, start=1):
                writer.write(p.encode_subscribe(i, topic, 0, version=self.version))
            await writer.drain()
            parser = p.Parser(version=self.version)
            started = self._now()
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout=keepalive_s / 2)
                except TimeoutError:
                    writer.write(p.PINGREQ_BYTES)
                    await writer.drain()
                    self._check_visible(started)
                    continue
                if not data:
                    raise EOFError("the broker closed the $SYS connection")
                parser.feed(data)
                for event in parser.next_events():
                    if isinstance(event, p.ConnAck) and event.reason >= 0x80:
                        raise ConnectionError(f"CONNACK reason {event.reason:#x}")
                    if isinstance(event, p.Publish):
                        self._on_publish(event.topic, event.payload)
                self._check_visible(started)
        finally:
            writer.close()

    def _check_visible(self, started: float) -> None:
        if self.readings or self._said_invisible:
            return
        if self._now() - started >= self.visibility_timeout_s:
            self._said_invisible = True
            self.invisible.set()
            log.warning(
                "the broker's $SYS counters do not reach fleetwatch (user %r): messages the "
                "broker drops cannot be watched; allow 'topic read $SYS/broker/#' for this user "
                "in the broker's ACL (deploy/mosquitto/acl), or set FLEETWATCH_MQTT_WATCH_SYS="
                "false to stop watching", self._username,
            )  # fmt: skip

    def _on_publish(self, topic: str, payload: bytes) -> None:
        if topic == VERSION_TOPIC:
            return
        value = parse_counter(payload)
        if value is None:
            return
        self.readings += 1
        self.metrics.visible.set(1)
        self.seen.set()
        self.updated.set()
        if topic == STORED_TOPIC:
            self.metrics.stored.set(value)
            return
        if topic != DROPPED_TOPIC:
            return
        step = self.watch.observe(value, self._now())
        if step.new_drops:
            self.metrics.dropped.inc(step.new_drops)
        if step.action is DropAction.WARN:
            log.warning(
                "the broker is dropping messages: %d since the last reading "
                "($SYS/broker/publish/messages/dropped = %d); messages it drops are lost for "
                "good; %s", step.new_drops, step.reading, BROKER_SETTINGS_HINT,
            )  # fmt: skip
        elif step.action is DropAction.WARN_EARLIER:
            log.warning(
                "the broker has dropped %d messages since it started "
                "($SYS/broker/publish/messages/dropped); if they were fleet data they are lost; "
                "%s", step.reading, BROKER_SETTINGS_HINT,
            )  # fmt: skip
        elif step.action is DropAction.RECOVERED:
            log.info("the broker has dropped no message for %.0f s", self.watch.quiet_s)


def open_sys_watcher(
    *, mqtt_url: str, client_id: str, version: int, registry: CollectorRegistry
) -> BrokerSysWatcher:
    """The watcher for the configured broker, its metrics on *registry*."""
    from ingest.mqtt import parse_mqtt_url

    s = parse_mqtt_url(mqtt_url)
    return BrokerSysWatcher(
        host=s.host, port=s.port, username=s.username, password=s.password,
        client_id=client_id, version=version, metrics=BrokerMetrics(registry),
    )  # fmt: skip
