"""Check that the broker will hold the backlog of an outage for the configured fleet.

While the database is down (or fleetwatch is stopped), the broker keeps every QoS 1 message for
fleetwatch's persistent session; a broker whose queue limits are too small drops the excess
and the data is lost for good.  This probe measures what the broker really holds: it opens a
persistent session of its own on a test topic (fleetwatch-check/<random>), goes away, publishes
UNITS x RATE x MINUTES x 60 messages of the fleet's size, comes back and counts what was kept,
then removes its session.  Exit 0: the broker held everything; 1: it did not (the output names
the broker settings to raise); 3: the broker is unreachable or refused the probe.

The user of the URL must be allowed to publish and subscribe to fleetwatch-check/# (the shipped
deploy/mosquitto/acl grants it to the fleetwatch user).  It never touches fleet/... topics.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetwatch.cli_types import positive_float, positive_int

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessageInfo

from fleetwatch.startup import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE

EXIT_TOO_SMALL = 1

#: at most this many probe messages unacknowledged at once.  MQTT packet ids are 16 bits: paho
#: refuses a publish whose id is still in flight (MQTT_ERR_QUEUE_SIZE), so queueing the default
#: probe (150 units x 15 min = 135,000 messages) in one go failed on its 65,536th message
#: whenever the broker acknowledged more slowly than paho queued.
MAX_UNACKED = 10_000

EPILOG = """\
examples:
  fleetwatch check-broker --units 150 --rate 1 --minutes 15
  FLEETWATCH_MQTT_URL=mqtt://fleetwatch:PW@broker:1883 fleetwatch check-broker --minutes 60
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML settings file (default: $FLEETWATCH_CONFIG)")  # fmt: skip
    parser.add_argument("--mqtt-url", metavar="URL",
                        help="broker (default: FLEETWATCH_MQTT_URL)")  # fmt: skip
    parser.add_argument("--units", type=positive_int, default=150, metavar="N",
                        help="units in the fleet (default 150)")  # fmt: skip
    parser.add_argument("--rate", type=positive_float, default=1.0, metavar="HZ",
                        help="messages per unit per second (default 1)")  # fmt: skip
    parser.add_argument("--minutes", type=positive_float, default=15.0, metavar="M",
                        help="outage the broker must bridge (default 15)")  # fmt: skip
    parser.add_argument("--payload-bytes", type=positive_int, default=150, metavar="B",
                        help="size of one message (default 150: an RMC and a GGA)")  # fmt: skip
    parser.add_argument("--max-probe", type=positive_int, default=300_000, metavar="N",
                        help="publish at most N messages (default 300000); above it the "
                             "verdict is a lower bound")  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    needed: int
    published: int
    held: int
    seconds: float

    @property
    def holds(self) -> bool:
        return self.held >= self.published


def verdict(r: ProbeResult, *, payload_bytes: int) -> tuple[int, str]:
    """(exit code, one line) from a probe's counts (pure)."""
    if r.holds and r.published >= r.needed:
        return EXIT_OK, (
            f"OK: the broker held all {r.held} messages of the probe, the backlog of the "
            "configured fleet for the whole outage"
        )
    if r.holds:
        return EXIT_OK, (
            f"OK so far: the broker held all {r.published} messages probed, of {r.needed} "
            f"needed; run with --max-probe {r.needed} to prove the whole backlog"
        )
    return EXIT_TOO_SMALL, (
        f"NOT ENOUGH: the broker held {r.held} of {r.published} messages and dropped the rest; "
        f"set max_queued_messages >= {r.needed} and max_queued_bytes >= "
        f"{r.needed * (payload_bytes + 64)} (0 = no limit) in mosquitto.conf, as the shipped "
        "deploy/mosquitto/mosquitto.conf does, and check persistence"
    )


def publish_backlog(
    pub: Client,
    topic: str,
    payload: bytes,
    n: int,
    *,
    window: int = MAX_UNACKED,
    ack_timeout_s: float = 60.0,
) -> None:
    """Publish *n* QoS 1 messages with at most *window* unacknowledged (see MAX_UNACKED).

    Raises ConnectionError when the broker refuses a message or stops acknowledging for
    *ack_timeout_s*: the probe then has no verdict, and saying "unavailable" beats a traceback.
    """
    pending: deque[MQTTMessageInfo] = deque()

    def settle(info: MQTTMessageInfo) -> None:
        try:
            info.wait_for_publish(timeout=ack_timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise ConnectionError(f"the broker refused a probe message: {exc}") from None
        if not info.is_published():
            raise ConnectionError(f"the broker acknowledged nothing for {ack_timeout_s:.0f} s")

    for _ in range(n):
        info = pub.publish(topic, payload, qos=1)
        if info.rc != 0:
            raise ConnectionError(f"publishing the probe failed (paho error {info.rc})")
        pending.append(info)
        if len(pending) >= window:
            settle(pending.popleft())
    while pending:
        settle(pending.popleft())


def probe(
    *,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    n: int,
    payload_bytes: int,
    idle_s: float = 3.0,
) -> tuple[int, int, float]:
    """(published, held, seconds) of one backlog probe; raises ConnectionError on refusal."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    token = uuid.uuid4().hex[:10]
    topic = f"fleetwatch-check/{token}"
    sub_id = f"fleetwatch-check-{token}"

    def client(cid: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        if username is not None:
            c.username_pw_set(username, password)
        return c

    def connect(c: mqtt.Client, *, clean: bool, expiry_s: int) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry_s
        rc = c.connect(host, port, keepalive=30, clean_start=clean, properties=props)
        if rc != 0:
            raise ConnectionError(f"connect failed ({rc})")

    t0 = time.monotonic()
    sub = client(sub_id)
    granted: list[Any] = []
    sub.on_subscribe = lambda _c, _u, _mid, codes, _p: granted.extend(codes)
    connect(sub, clean=True, expiry_s=600)
    sub.subscribe(topic, qos=1)
    deadline = time.monotonic() + 10
    while not granted and time.monotonic() < deadline:
        sub.loop(0.2)
    if not granted or any(getattr(c, "is_failure", False) for c in granted):
        raise ConnectionError(f"subscription to {topic} refused: allow readwrite "
                              "fleetwatch-check/# for this user in the broker's ACL")  # fmt: skip
    sub.disconnect()

    pub = client(f"fleetwatch-check-pub-{token}")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    connect(pub, clean=True, expiry_s=0)
    pub.loop_start()
    payload = b"$" + b"x" * max(payload_bytes - 1, 0)
    try:
        publish_backlog(pub, topic, payload, n)
    finally:
        pub.loop_stop()
    pub.disconnect()

    held = 0
    done = threading.Event()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal held
        held += 1
        if held >= n:
            done.set()

    sub = client(sub_id)
    sub.on_message = on_message
    connect(sub, clean=False, expiry_s=600)
    last_count, last_change = -1, time.monotonic()
    while not done.is_set() and time.monotonic() - last_change < idle_s:
        sub.loop(0.2)
        if held != last_count:
            last_count, last_change = held, time.monotonic()
    sub.disconnect()
    cleanup = client(sub_id)  # clean start + expiry 0: the broker forgets the probe session
    connect(cleanup, clean=True, expiry_s=0)
    cleanup.loop(0.2)
    cleanup.disconnect()
    return n, held, time.monotonic() - t0


def run(args: argparse.Namespace) -> int:
    from fleetwatch.config import ConfigError, Settings

    try:
        settings = Settings.load(config_file=args.config, overrides={"mqtt_url": args.mqtt_url})
    except ConfigError as exc:
        for p in exc.problems:
            print(f"fleetwatch check-broker: {p}", file=sys.stderr)
        return EXIT_CONFIG
    if not settings.mqtt_url:
        print("fleetwatch check-broker: no broker configured: set FLEETWATCH_MQTT_URL or give "
              "--mqtt-url", file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    bad = [f"--{k.replace('_', '-')} must be > 0" for k in ("units", "rate", "minutes",
           "payload_bytes", "max_probe") if not getattr(args, k) > 0]  # fmt: skip
    if bad:
        for line in bad:
            print(f"fleetwatch check-broker: {line}", file=sys.stderr)
        return EXIT_CONFIG
    from fleetwatch.config import redact_url
    from ingest.mqtt import parse_mqtt_url

    s = parse_mqtt_url(settings.mqtt_url)
    needed = round(args.units * args.rate * args.minutes * 60)
    n = min(needed, args.max_probe)
    try:
        published, held, seconds = probe(
            host=s.host, port=s.port, username=s.username, password=s.password, n=n,
            payload_bytes=args.payload_bytes,
        )  # fmt: skip
    except (OSError, ConnectionError) as exc:
        print(f"fleetwatch check-broker: broker unavailable: FLEETWATCH_MQTT_URL="
              f"{redact_url(settings.mqtt_url)}: {exc}", file=sys.stderr)  # fmt: skip
        return EXIT_UNAVAILABLE
    result = ProbeResult(needed=needed, published=published, held=held, seconds=seconds)
    code, line = verdict(result, payload_bytes=args.payload_bytes)
    print(json.dumps({**asdict(result), "seconds": round(seconds, 1), "holds": result.holds}))
    print(line, file=sys.stderr if code else sys.stdout)
    return code
