"""MqttSource against a real private broker: delivery, acks vs redelivery, restarts, backpressure.

Every wait is an event or a condition polled under ``anyio.fail_after``; the publishers are
paho clients run in worker threads (test helpers only: fleetwatch itself never imports paho).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt import (
    MqttRefusedError,
    MqttSettings,
    MqttSource,
    Received,
    parse_mqtt_url,
    unit_id_from_topic,
)
from tests.support.broker import AclBroker, Broker

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WAIT_S = 15.0


def settings_for(broker: Broker, client_id: str, **kw: object) -> MqttSettings:
    base = MqttSettings(
        client_id=client_id,
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
        connect_timeout_s=5.0,
        keepalive_s=10,
        mqtt_version=5 if broker.kind == "mosquitto" else 4,
    )
    return dataclasses.replace(parse_mqtt_url(broker.url, base), **kw)  # type: ignore[arg-type]


def needs_mosquitto(broker: Broker) -> None:
    """Session persistence across reconnects and restarts is a Mosquitto feature here: the
    embedded amqtt broker (3.1.1) does not redeliver a resumed session's unacked messages, so
    on it these promises are not kept -- and the test says so instead of skipping."""
    if broker.kind != "mosquitto":
        pytest.fail(
            "this promise needs Mosquitto (install the mosquitto package): the "
            "embedded amqtt broker does not keep it"
        )


def publish_sync(
    port: int,
    messages: Sequence[tuple[str, bytes]],
    *,
    user: tuple[str, str] | None = None,
    client_id: str = "test-pub",
) -> None:
    """Publish at QoS 1 and wait until the broker acknowledged every message."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if user:
        c.username_pw_set(*user)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(WAIT_S)
            if not info.is_published():
                raise AssertionError(f"broker did not ack publish {info.mid}")
    finally:
        c.disconnect()
        c.loop_stop()


async def publish(port: int, messages: Sequence[tuple[str, bytes]], **kw: object) -> None:
    await anyio.to_thread.run_sync(lambda: publish_sync(port, messages, **kw))  # type: ignore[arg-type]


def numbered(n: int, unit: str = "u1", start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"fleet/{unit}/nmea", b"msg-%06d" % i) for i in range(start, start + n)]


async def take(src: MqttSource, n: int) -> list[Received]:
    out: list[Received] = []
    with anyio.fail_after(WAIT_S):
        while len(out) < n:
            out += await src.receive_batch(n - len(out))
    return out


async def wait_until(cond: Callable[[], bool], what: str) -> None:
    """Poll a condition under a deadline: counters and the broker's autosave file offer no
    event to wait on."""
    try:
        with anyio.fail_after(WAIT_S):
            while not cond():  # noqa: ASYNC110
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


async def test_messages_arrive_with_topic_unit_and_receive_time(mqtt_broker: Broker) -> None:
    s = settings_for(mqtt_broker, "t-arrive")
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        before_us = time.time_ns() // 1000
        await publish(
            mqtt_broker.port,
            [("fleet/truck-7/nmea", b"$GPRMC,a"), ("fleet/truck-8/nmea", b"$GPGGA,b")],
        )
        got = await take(src, 2)
        assert [(m.topic, m.payload) for m in got] == [
            ("fleet/truck-7/nmea", b"$GPRMC,a"),
            ("fleet/truck-8/nmea", b"$GPGGA,b"),
        ]
        assert [unit_id_from_topic(m.topic) for m in got] == ["truck-7", "truck-8"]
        assert all(m.recv_us >= before_us for m in got)
        assert all(m.token.qos == 1 and m.token.mid > 0 for m in got)
        st = src.statistics()
        assert st.received == 2
        assert st.connected


async def test_unacked_messages_are_redelivered_to_the_same_client_id(mqtt_broker: Broker) -> None:
    needs_mosquitto(mqtt_broker)
    s = settings_for(mqtt_broker, "t-noack")
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        await publish(mqtt_broker.port, numbered(20))
        first = await take(src, 20)
        # no ack: the data was never made durable
    async with MqttSource(s) as src:
        again = await take(src, 20)
        assert [m.payload for m in again] == [m.payload for m in first]
        assert src.statistics().redelivered == 20
        src.ack([m.token for m in again])


async def test_acked_messages_are_not_redelivered(mqtt_broker: Broker) -> None:
    needs_mosquitto(mqtt_broker)
    s = settings_for(mqtt_broker, "t-ack")
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        await publish(mqtt_broker.port, numbered(20))
        got = await take(src, 20)
        src.ack([m.token for m in got])
        assert src.statistics().acked == 20
    assert src.statistics().reconnects == 0  # a clean exit is not a lost connection
    await publish(mqtt_broker.port, [("fleet/u1/nmea", b"marker")])  # queued while offline
    async with MqttSource(s) as src:
        (m,) = await take(src, 1)
        assert m.payload == b"marker"  # nothing of the acked 20 came back before it
        assert src.statistics().redelivered == 0


async def test_partial_ack_redelivers_exactly_the_unacked_tail(mqtt_broker: Broker) -> None:
    needs_mosquitto(mqtt_broker)
    s = settings_for(mqtt_broker, "t-partial")
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        await publish(mqtt_broker.port, numbered(30))
        got = await take(src, 30)
        src.ack([m.token for m in got[:12]])
    async with MqttSource(s) as src:
        again = await take(src, 18)
        assert [m.payload for m in again] == [m.payload for m in got[12:]]


async def test_broker_restart_mid_stream_loses_nothing(mqtt_broker: Broker) -> None:
    needs_mosquitto(mqtt_broker)
    s = settings_for(mqtt_broker, "t-restart")
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        await publish(mqtt_broker.port, numbered(40))
        before = await take(src, 40)
        src.ack([m.token for m in before[:10]])  # 30 stay unacked across the restart
        mqtt_broker.stop()  # SIGTERM: mosquitto saves sessions and queues
        await wait_until(lambda: not src.statistics().connected, "source notices the loss")
        mqtt_broker.start()
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        assert src.statistics().reconnects >= 1
        await publish(mqtt_broker.port, numbered(20, start=40))
        after: list[Received] = []
        want = {p for _t, p in numbered(30, start=10) + numbered(20, start=40)}
        with anyio.fail_after(WAIT_S):
            while not want <= {m.payload for m in after}:
                after += await src.receive_batch(100)
        # tokens of the old connection are refused, counted, and cannot ack the new messages
        src.ack([m.token for m in before[10:]])
        assert src.statistics().stale_acks_dropped == 30
        src.ack([m.token for m in after])
        assert src.statistics().acked == 10 + len(after)


async def test_reconnects_by_itself_with_backoff_while_broker_is_down(mqtt_broker: Broker) -> None:
    s = settings_for(mqtt_broker, "t-backoff")
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        mqtt_broker.kill()
        await wait_until(
            lambda: src.statistics().connect_failures >= 3, "three failed reconnect attempts"
        )
        assert not src.statistics().connected
        mqtt_broker.start()
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        await publish(mqtt_broker.port, [("fleet/u9/nmea", b"back")])
        (m,) = await take(src, 1)
        assert m.payload == b"back"
        assert src.statistics().reconnects == 1


async def test_backpressure_bounds_the_buffer_and_the_broker_keeps_the_backlog(
    mqtt_broker: Broker,
) -> None:
    bound = 50
    s = settings_for(mqtt_broker, "t-backpressure")
    async with MqttSource(s, max_buffered_messages=bound) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        msgs = numbered(600)
        await publish(mqtt_broker.port, msgs)  # the broker has accepted all 600
        await wait_until(lambda: src.statistics().buffered == bound, "buffer full")
        # A slow consumer: the broker keeps what we did not read, we hold only the bound.
        assert src.statistics().received == bound
        got: list[Received] = []
        with anyio.fail_after(WAIT_S):
            async for m in src.messages():
                got.append(m)
                assert src.statistics().buffered <= bound
                if len(got) == len(msgs):
                    break
        assert [m.payload for m in got] == [p for _t, p in msgs]
        src.ack([m.token for m in got])


async def test_wrong_password_is_refused_and_not_retried(acl_broker: AclBroker) -> None:
    user, _pw = acl_broker.ingest_user
    s = settings_for(acl_broker, "t-badpw", username=user, password="wrong")
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S), pytest.raises(MqttRefusedError, match="refused client"):
            await src.wait_connected()
        assert "wrong" not in repr(s)


async def test_acl_lets_a_unit_write_only_its_own_topic(acl_broker: AclBroker) -> None:
    user, pw = acl_broker.ingest_user
    s = settings_for(acl_broker, "t-acl", username=user, password=pw)
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        creds = ("unit-a", acl_broker.units["unit-a"])
        # Same publisher connection, so the broker would deliver these in this order.
        await publish(
            acl_broker.port,
            [("fleet/unit-b/nmea", b"forged"), ("fleet/unit-a/nmea", b"own")],
            user=creds,
            client_id="unit-a",
        )
        (m,) = await take(src, 1)
        assert (m.topic, m.payload) == ("fleet/unit-a/nmea", b"own")
        assert src.statistics().received == 1
        src.ack([m.token])


async def test_unit_with_wrong_password_cannot_publish(acl_broker: AclBroker) -> None:
    with pytest.raises(ConnectionRefusedError):
        await anyio.to_thread.run_sync(lambda: _connect_unit(acl_broker.port, "unit-a", "nope"))


def _connect_unit(port: int, user: str, pw: str) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user)
    c.username_pw_set(user, pw)
    result: list[int] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: result.append(int(rc.value))
    c.connect("127.0.0.1", port)
    deadline = time.monotonic() + WAIT_S
    while not result and time.monotonic() < deadline:
        c.loop(timeout=0.1)
    c.disconnect()
    if result and result[0] != 0:
        raise ConnectionRefusedError(f"CONNACK {result[0]}")


async def test_queued_messages_survive_broker_sigkill_after_autosave(acl_broker: AclBroker) -> None:
    """Reliability #5 with the shipped config: queued for an offline session, autosaved
    (autosave_interval in deploy/mosquitto/mosquitto.conf), SIGKILL, restart: all there."""
    user, pw = acl_broker.ingest_user
    s = settings_for(acl_broker, "t-sigkill", username=user, password=pw)
    async with MqttSource(s) as src:  # creates the persistent session, then goes offline
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
    creds = ("unit-b", acl_broker.units["unit-b"])
    msgs = numbered(25, unit="unit-b")
    await publish(acl_broker.port, msgs, user=creds, client_id="unit-b")
    published_ns = time.time_ns()
    db = Path(acl_broker.workdir) / "mosquitto.db"
    await wait_until(
        lambda: db.exists() and db.stat().st_mtime_ns > published_ns + 50_000_000,
        "an autosave after the publish",
    )
    acl_broker.kill()
    acl_broker.start()
    async with MqttSource(s) as src:
        got = await take(src, len(msgs))
        assert [m.payload for m in got] == [p for _t, p in msgs]
        src.ack([m.token for m in got])


async def test_shipped_config_lets_thousands_of_unacked_messages_be_in_flight(
    acl_broker: AclBroker,
) -> None:
    """Batch acking needs many messages in flight at once: Mosquitto's default (20) would let
    20 through until we ack; the shipped max_inflight_messages and our Receive Maximum let
    all 1,500 arrive before the first ack."""
    user, pw = acl_broker.ingest_user
    s = settings_for(acl_broker, "t-inflight", username=user, password=pw)
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        creds = ("unit-a", acl_broker.units["unit-a"])
        msgs = numbered(1500, unit="unit-a")
        await publish(acl_broker.port, msgs, user=creds, client_id="unit-a")
        got = await take(src, len(msgs))  # none acked yet
        assert len({m.token.mid for m in got}) == len(msgs)
        src.ack([m.token for m in got])
        assert src.statistics().acked == len(msgs)


async def test_a_consumer_paused_longer_than_keepalive_keeps_its_connection(
    mqtt_broker: Broker,
) -> None:
    """While reading is paused we still send PINGREQs, and our own silence is not taken for a
    dead broker: a slow database must not turn into reconnect churn."""
    s = settings_for(mqtt_broker, "t-pause", keepalive_s=1)
    async with MqttSource(s, max_buffered_messages=10) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        await publish(mqtt_broker.port, numbered(50))
        await wait_until(lambda: src.statistics().buffered == 10, "buffer full")
        await anyio.sleep(2.5)  # not synchronisation: time must pass beyond 1.5 x keepalive
        got = await take(src, 50)
        assert [m.payload for m in got] == [p for _t, p in numbered(50)]
        assert src.statistics().reconnects == 0
        src.ack([m.token for m in got])


async def test_oversize_payload_is_delivered_cut_and_flagged(mqtt_broker: Broker) -> None:
    s = settings_for(mqtt_broker, "t-oversize", max_payload_bytes=100)
    async with MqttSource(s) as src:
        with anyio.fail_after(WAIT_S):
            await src.wait_connected()
        await publish(mqtt_broker.port, [("fleet/u1/nmea", b"x" * 5000), ("fleet/u1/nmea", b"ok")])
        big, small = await take(src, 2)
        assert (big.oversize, len(big.payload)) == (True, 100)
        assert (small.oversize, small.payload) == (False, b"ok")
        assert src.statistics().oversize == 1
        src.ack([big.token, small.token])


async def test_a_unit_cannot_read_other_units_positions(acl_broker: AclBroker) -> None:
    """Mosquitto 2.0 grants the SUBSCRIBE but the ACL filters every delivery: a unit's
    credentials read nothing, while the ingest user gets the same messages."""
    ingest_user, ingest_pw = acl_broker.ingest_user
    snoop = settings_for(
        acl_broker, "t-snoop", username="unit-a", password=acl_broker.units["unit-a"]
    )
    ingest = settings_for(acl_broker, "t-ingest", username=ingest_user, password=ingest_pw)
    async with MqttSource(snoop) as spy, MqttSource(ingest) as src:
        with anyio.fail_after(WAIT_S):
            await spy.wait_connected()
            await src.wait_connected()
        creds = ("unit-b", acl_broker.units["unit-b"])
        for i in range(2):  # the second message is a fence for the first
            await publish(
                acl_broker.port,
                [("fleet/unit-b/nmea", b"pos-%d" % i)],
                user=creds,
                client_id="unit-b",
            )
            (m,) = await take(src, 1)
            assert m.payload == b"pos-%d" % i
            src.ack([m.token])
        assert spy.statistics().received == 0


_CONSUMER = """
import asyncio, sys
import anyio
from ingest.mqtt import MqttSettings, MqttSource

async def main(port: int) -> None:
    s = MqttSettings(port=port, client_id="t-sigkill-consumer", reconnect_min_s=0.05)
    async with MqttSource(s) as src:
        with anyio.fail_after(15):
            await src.wait_connected()
        print("ready", flush=True)
        got = []
        while len(got) < 20:
            got += await src.receive_batch(20 - len(got))
        src.ack([m.token for m in got[:10]])  # "durable": the first half only
        print("acked", flush=True)
        await anyio.sleep_forever()

asyncio.run(main(int(sys.argv[1])))
"""


async def test_consumer_sigkilled_mid_batch_gets_every_unacked_message_back(
    mqtt_broker: Broker,
) -> None:
    """Reliability #2 at the MQTT layer: a consumer killed with SIGKILL (no DISCONNECT) holding
    unacked messages; a new one with the same client id receives every one of them."""
    needs_mosquitto(mqtt_broker)
    proc = await anyio.open_process(
        [sys.executable, "-c", _CONSUMER, str(mqtt_broker.port)],
        cwd=Path(__file__).parents[1],
        stderr=None,
    )
    assert proc.stdout is not None
    out = proc.stdout
    pending = bytearray()

    async def line() -> str:
        with anyio.fail_after(WAIT_S):
            while b"\n" not in pending:
                pending.extend(await out.receive())
        text, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        return text.decode().strip()

    try:
        assert await line() == "ready"
        await publish(mqtt_broker.port, numbered(20))
        assert await line() == "acked"
    finally:
        proc.kill()  # SIGKILL: no DISCONNECT, no goodbye
        with anyio.fail_after(WAIT_S):
            await proc.wait()
        await proc.aclose()
    s = settings_for(mqtt_broker, "t-sigkill-consumer")
    want = {p for _t, p in numbered(10, start=10)}
    async with MqttSource(s) as src:
        got: list[Received] = []
        with anyio.fail_after(WAIT_S):
            while not want <= {m.payload for m in got}:
                got += await src.receive_batch(100)
        # at-least-once: acks still unread by the broker at the kill may come back too
        assert {m.payload for m in got} <= {p for _t, p in numbered(20)}
        src.ack([m.token for m in got])
