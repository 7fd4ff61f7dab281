"""Broker drops are never silent: the drop policy as a table (properties), and a real Mosquitto
with a minimal configuration (default-like small queue) whose drops the watcher sees."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from fleetwatch.broker_watch import (
    DROP_TRANSITIONS,
    BrokerMetrics,
    BrokerSysWatcher,
    DropAction,
    DropState,
    DropWatch,
    parse_counter,
)
from tests.support.broker import MosquittoBroker, _run_as, free_port, mosquitto_path


def test_the_table_covers_every_state_and_input() -> None:
    from fleetwatch.broker_watch import DropInput

    assert set(DROP_TRANSITIONS) == {(s, i) for s in DropState for i in DropInput}


@given(st.lists(st.integers(0, 50), min_size=1, max_size=60))
def test_counted_drops_equal_the_rises_of_the_counter_and_one_warning_per_episode(
    deltas: list[int],
) -> None:
    w = DropWatch(quiet_s=5)
    value, counted, warnings, episodes, t = 0, 0, 0, 0, 0.0
    w.observe(0, t)  # baseline
    prev_rise = False
    for d in deltas:
        t += 1
        value += d
        step = w.observe(value, t)
        counted += step.new_drops
        warnings += step.action is DropAction.WARN
        if d > 0 and not prev_rise:
            episodes += 1
        if d > 0:
            prev_rise = True
        elif step.action is DropAction.RECOVERED:
            prev_rise = False
    assert counted == sum(deltas)
    assert warnings == episodes


def test_a_broker_restart_resets_the_counter_without_losing_drops() -> None:
    w = DropWatch()
    w.observe(100, 0)
    assert w.observe(130, 1).new_drops == 30
    step = w.observe(7, 2)  # restarted: 7 drops since
    assert step.new_drops == 7


def test_drops_before_we_watched_are_said_once_not_counted() -> None:
    step = DropWatch().observe(40, 0)
    assert (step.new_drops, step.action) == (0, DropAction.WARN_EARLIER)


@pytest.mark.parametrize(
    ("raw", "value"), [(b"12", 12), (b" 7\n", 7), (b"3.0", 3), (b"x", None), (b"\xff", None)]
)
def test_parse_counter(raw: bytes, value: int | None) -> None:
    assert parse_counter(raw) == value


# -- a real broker ------------------------------------------------------------------------------
MINIMAL_CONF = """\
    user {user}
    listener {port} 127.0.0.1
    allow_anonymous true
    max_queued_messages 10
    sys_interval 1
    log_dest file {workdir}/mosquitto.log
    """


@pytest.fixture
def small_queue_broker(tmp_path: Path) -> MosquittoBroker:
    if mosquitto_path() is None:
        pytest.fail("mosquitto is needed for this test (apt-get install mosquitto)")
    port = free_port()
    conf = textwrap.dedent(MINIMAL_CONF).format(port=port, workdir=tmp_path, user=_run_as())
    broker = MosquittoBroker(tmp_path, conf_text=conf, port=port)
    broker.start()
    yield broker  # type: ignore[misc]
    broker.stop()


def overflow_an_offline_session(broker: MosquittoBroker, n: int) -> None:
    """A QoS 1 subscriber goes away with its session kept; n messages are published to it."""
    topic = f"fleet/T{uuid.uuid4().hex[:6]}/nmea"
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="slow-consumer", clean_session=False)
    sub.connect(broker.host, broker.port)
    sub.subscribe(topic, qos=1)
    sub.loop(1.0)
    sub.loop(1.0)
    sub.disconnect()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    infos = [pub.publish(topic, f"m{i}", qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(timeout=10)
    pub.loop_stop()
    pub.disconnect()


@pytest.mark.anyio
@pytest.mark.integration
async def test_drops_of_a_minimal_mosquitto_become_a_metric_and_one_warning(
    small_queue_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    watcher = BrokerSysWatcher(
        host=small_queue_broker.host, port=small_queue_broker.port, username=None,
        password=None, client_id="fw-test", version=5, metrics=BrokerMetrics(registry),
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="fleetwatch.broker_watch")
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        task = tg.create_task(watcher.run())
        await watcher.seen.wait()
        assert registry.get_sample_value("fleetwatch_broker_sys_visible") == 1
        await asyncio.to_thread(overflow_an_offline_session, small_queue_broker, 50)
        while (registry.get_sample_value("fleetwatch_broker_dropped_messages_total") or 0) < 40:
            watcher.updated.clear()
            await watcher.updated.wait()  # $SYS is published every second (sys_interval 1)
        task.cancel()
    assert registry.get_sample_value("fleetwatch_broker_dropped_messages_total") == 40
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "max_queued_messages" in warnings[0]
    assert "deploy/mosquitto/mosquitto.conf" in warnings[0]


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_user_that_may_not_read_sys_is_told_how_to_allow_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    acl = tmp_path / "acl"
    acl.write_text("topic read fleet/+/nmea\n")  # anonymous: no $SYS
    conf = textwrap.dedent(MINIMAL_CONF).format(port=port, workdir=tmp_path, user=_run_as())
    conf += f"acl_file {acl}\n"
    broker = MosquittoBroker(tmp_path, conf_text=conf, port=port)
    broker.start()
    try:
        registry = CollectorRegistry()
        watcher = BrokerSysWatcher(
            host=broker.host, port=broker.port, username=None, password=None,
            client_id="fw-test", version=5, metrics=BrokerMetrics(registry),
            visibility_timeout_s=2.5,
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="fleetwatch.broker_watch"):
            async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
                task = tg.create_task(watcher.run())
                await watcher.invisible.wait()
                task.cancel()
    finally:
        broker.stop()
    (record,) = caplog.records
    assert "topic read $SYS/broker/#" in record.getMessage()
    assert registry.get_sample_value("fleetwatch_broker_sys_visible") == 0
