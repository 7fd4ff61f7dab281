"""Live publishing of a scenario over MQTT, and the paho connection pool the load tester shares.

Why paho with a loop of our own: the publisher only produces, at up to tens of thousands of QoS 1
messages per second, and paho's ``loop_read``/``loop_write``/``loop_misc`` let one ``select``
loop in the caller's thread drive several connections with no hidden threads.  Units are
multiplexed over a few connections (a connection per unit is available for ACL realism, at a
cost in sockets).  The pool keeps at most ``max_inflight`` unacknowledged QoS 1 messages per
connection on average; callers check :attr:`PublisherPool.outstanding` before publishing more
(backpressure).

Targets are loopback addresses or the broker the caller explicitly allows (its configured
one): a simulator must never flood somebody else's server.
"""

from __future__ import annotations

import abc
import datetime as dt
import ipaddress
import re
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest.nmea_encode import checksum, frame
from simulators.formats import merged_payloads, parse_iso_us, unit_files


class TargetRefused(ValueError):
    """The broker is neither on loopback nor the configured one."""


class BrokerUnavailable(ConnectionError):
    """Connecting or publishing to the broker failed (the message says which and why)."""


def check_target(host: str, port: int, allowed: Sequence[tuple[str, int]] = ()) -> None:
    """Refuse anything but loopback or an explicitly allowed ``(host, port)``."""
    if (host, port) in allowed:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"cannot resolve broker host {host!r}: {exc}") from None
    addrs = {str(info[4][0]).split("%")[0] for info in infos}
    if not addrs or not all(ipaddress.ip_address(a).is_loopback for a in addrs):
        raise TargetRefused(
            f"broker {host}:{port} is not on loopback and not the configured broker "
            "(set FLEETWATCH_MQTT_URL to it if it really is yours)"
        )


@dataclass(slots=True)
class PoolStats:
    published: int = 0  # handed to paho
    acked: int = 0  # PUBACK received


class Pool(Protocol):
    """What a run needs from a set of MQTT connections (paho-based or raw)."""

    stats: PoolStats
    max_inflight: int

    @property
    def connections(self) -> int: ...
    @property
    def outstanding(self) -> int: ...
    def connect(self, *, timeout_s: float = ...) -> None: ...
    def publish(self, conn: int, topic: str, payload: bytes) -> None: ...
    def pump(self, timeout_s: float) -> None: ...
    def wait_room(self, *, max_outstanding: int, deadline: float) -> None: ...
    def drain(self, *, timeout_s: float) -> bool: ...
    def close(self) -> None: ...


class AckWaits(abc.ABC):
    """The waits both pools share: they only pump their sockets until enough PUBACKs came."""

    host: str
    port: int

    @property
    @abc.abstractmethod
    def outstanding(self) -> int: ...

    @abc.abstractmethod
    def pump(self, timeout_s: float) -> None: ...

    def wait_room(self, *, max_outstanding: int, deadline: float) -> None:
        """Backpressure: pump until at most ``max_outstanding`` messages are unacknowledged."""
        while self.outstanding > max_outstanding:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"{self.outstanding} messages still unacknowledged by {self.host}:{self.port}"
                )
            self.pump(0.01)

    def drain(self, *, timeout_s: float) -> bool:
        """Wait for every PUBACK; False if some are still missing after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.outstanding > 0 and time.monotonic() < deadline:
            self.pump(0.02)
        return self.outstanding == 0


class PublisherPool(AckWaits):
    """``connections`` paho clients driven by :meth:`pump` (a ``select`` round)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connections: int,
        client_id_prefix: str,
        username: str | None = None,
        password: str | None = None,
        credentials: Callable[[int], tuple[str, str]] | None = None,
        max_inflight: int = 1000,
        keepalive_s: int = 30,
    ) -> None:
        if connections < 1:
            raise ValueError(f"need at least one connection, got {connections}")
        self.host, self.port = host, port
        self.stats = PoolStats()
        self.max_inflight = max_inflight
        self._clients: list[mqtt.Client] = []
        self._connected = [False] * connections
        self._errors: list[str] = []
        for i in range(connections):
            c = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=f"{client_id_prefix}-{i}",
                clean_session=True,
                protocol=mqtt.MQTTv311,
            )
            # paho's own inflight limit rescans its whole message table on every PUBACK
            # (quadratic at thousands in flight): leave it unlimited and bound the window here
            c.max_inflight_messages_set(0)
            c.max_queued_messages_set(0)
            user, pw = credentials(i) if credentials else (username, password)
            if user is not None:
                c.username_pw_set(user, pw)
            c.on_connect = self._on_connect(i)
            c.on_publish = self._on_publish
            c.on_disconnect = self._on_disconnect(i)
            self._clients.append(c)
        self._keepalive = keepalive_s

    def _on_connect(self, i: int) -> Callable[..., None]:
        def cb(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if getattr(reason, "is_failure", False):
                self._errors.append(f"connection {i} refused by the broker: {reason}")
            else:
                self._connected[i] = True

        return cb

    def _on_disconnect(self, i: int) -> Callable[..., None]:
        def cb(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self._connected[i] = False

        return cb

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.stats.acked += 1

    @property
    def connections(self) -> int:
        return len(self._clients)

    @property
    def outstanding(self) -> int:
        return self.stats.published - self.stats.acked

    def connect(self, *, timeout_s: float = 10.0) -> None:
        for c in self._clients:
            try:
                c.connect(self.host, self.port, keepalive=self._keepalive)
            except OSError as exc:
                raise BrokerUnavailable(
                    f"cannot connect to {self.host}:{self.port}: {exc}"
                ) from None
        deadline = time.monotonic() + timeout_s
        while not all(self._connected):
            if self._errors:
                raise BrokerUnavailable("; ".join(self._errors))
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"no CONNACK from {self.host}:{self.port} within {timeout_s:g} s"
                )
            self.pump(0.05)

    def publish(self, conn: int, topic: str, payload: bytes) -> None:
        info = self._clients[conn].publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(
                f"publish on connection {conn} failed: {mqtt.error_string(info.rc)}"
            )
        self.stats.published += 1

    def pump(self, timeout_s: float) -> None:
        """One round of network I/O on every connection (waits up to ``timeout_s``)."""
        socks: dict[Any, mqtt.Client] = {}
        for c in self._clients:
            s = c.socket()
            if s is not None:
                socks[s] = c
        if not socks:
            raise BrokerUnavailable(f"every connection to {self.host}:{self.port} is closed")
        want_w = [s for s, c in socks.items() if c.want_write()]
        r, w, _ = select.select(list(socks), want_w, [], max(0.0, timeout_s))
        for s in r:
            socks[s].loop_read(100)
        for s in w:
            socks[s].loop_write()
        for c in self._clients:
            c.loop_misc()
        if self._errors:
            raise BrokerUnavailable("; ".join(self._errors))

    def close(self) -> None:
        for c in self._clients:
            if c.socket() is not None:
                c.disconnect()
                c.loop_write()


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishReport:
    units: int
    payloads: int
    acked: int
    seconds: float
    connections: int

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "payloads": self.payloads,
            "acked": self.acked,
            "seconds": round(self.seconds, 3),
            "payloads_per_s": round(self.payloads / self.seconds, 1) if self.seconds else None,
            "connections": self.connections,
        }


_TIMED = re.compile(rb"^\$(?P<talker>[A-Z]{2})(?P<kind>RMC|GGA),(?P<hms>\d{6}\.\d{2}),")


def retime_payload(payload: bytes, shift_s: int) -> bytes:
    """The payload with every intact RMC/GGA moved ``shift_s`` seconds (time and RMC date).

    Bad sentences (wrong checksum, truncated, garbage) are left as they are: they stay bad.
    """
    if shift_s == 0:
        return payload
    out = []
    for line in payload.split(b"\r\n"):
        m = _TIMED.match(line)
        star = line.rfind(b"*")
        if m is None or star < 0 or line[star + 1 :] != b"%02X" % checksum(line[1:star]):
            out.append(line)
            continue
        f = line[1:star].split(b",")
        hms = f[1].decode()
        if m["kind"] == b"RMC":
            d = f[9].decode()
            day = dt.date(2000 + int(d[4:6]), int(d[2:4]), int(d[0:2]))
        else:
            day = dt.date(2000, 1, 1)  # GGA has no date: only its time of day moves
        t = dt.datetime(day.year, day.month, day.day, int(hms[:2]), int(hms[2:4]), int(hms[4:6]))
        t += dt.timedelta(seconds=shift_s)
        f[1] = f"{t:%H%M%S}{hms[6:]}".encode()
        if m["kind"] == b"RMC":
            f[9] = f"{t:%d%m}{t.year % 100:02d}".encode()
        out.append(frame(b",".join(f).decode("ascii"))[:-2])
    return b"\r\n".join(out)


def last_receive_us(scenario_dir: Path) -> int:
    """The latest ``#recv`` of a scenario (each file's last payload is its latest)."""
    latest = 0
    for path in unit_files(scenario_dir).values():
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - (1 << 20)))
            tail = f.read()
        i = tail.rfind(b"#recv ")
        if i >= 0:
            stamp = tail[i + 6 : tail.index(b"\n", i)].decode("ascii")
            latest = max(latest, parse_iso_us(stamp))
    return latest


def publish_scenario(
    scenario_dir: Path,
    pool: Pool,
    *,
    speed: float | None,
    unit_connection: Callable[[str], int],
    clock: Callable[[], float] = time.monotonic,
    drain_timeout_s: float = 60.0,
    progress: Callable[[int, float], None] | None = None,
    shift_s: int = 0,
) -> PublishReport:
    """Publish every payload to ``fleet/<unit>/nmea`` at QoS 1, paced by receive time / speed.

    ``speed=None`` publishes as fast as the broker acknowledges.  Fix times inside the
    sentences are the scenario's, moved by ``shift_s`` (see :func:`retime_payload`).
    """
    units: set[str] = set()
    n = 0
    start = clock()
    first: int | None = None
    window = pool.max_inflight * pool.connections
    last_progress = start
    for recv_us, unit, payload in merged_payloads(scenario_dir):
        if first is None:
            first = recv_us
        if speed is not None:
            due = start + (recv_us - first) / 1e6 / speed
            while (now := clock()) < due:
                pool.pump(min(due - now, 0.05))
        pool.wait_room(max_outstanding=window, deadline=clock() + drain_timeout_s)
        pool.publish(unit_connection(unit), f"fleet/{unit}/nmea", retime_payload(payload, shift_s))
        units.add(unit)
        n += 1
        if n % 256 == 0:
            pool.pump(0.0)
        if progress is not None and clock() - last_progress >= 1.0:
            last_progress = clock()
            progress(n, last_progress - start)
    ok = pool.drain(timeout_s=drain_timeout_s)
    seconds = clock() - start
    if not ok:
        raise BrokerUnavailable(
            f"{pool.outstanding} of {n} payloads unacknowledged after {drain_timeout_s:g} s"
        )
    return PublishReport(
        units=len(units),
        payloads=n,
        acked=pool.stats.acked,
        seconds=seconds,
        connections=pool.connections,
    )
