"""MQTT receive at QoS 1: messages/s received AND acknowledged, vs ``mosquitto_sub``.

One message = one RMC+GGA pair (~150 bytes, what a 1 Hz unit sends).  For every repeat a
private Mosquitto on loopback gets a backlog of N messages queued for one offline persistent
session per receiver (the messages are published once and queued for every session), then
each receiver connects in its own process and drains its backlog; the publisher is not part of
the measurement.  Each receiver's time runs from its connect call to its N-th acknowledgement.

Receivers:
  mosquitto_sub   the C baseline (libmosquitto, acks on receipt)
  fleetwatch      ingest.mqtt.MqttSource, receive_batch(4096) + one batched ack per batch
  paho            paho-mqtt 2.2 raw loop_forever, auto-ack (the library fleetwatch drives)
  aiomqtt         aiomqtt 2.5 ``async for message in client.messages``, auto-ack
  gmqtt           gmqtt 0.8, optimistic (ack-before-callback) acknowledgement
  gmqtt-manual    gmqtt 0.8, optimistic_acknowledgement=False (ack after the callback)
  aiomqtt3        aiomqtt 3.0.0a1 (the sans-I/O line), manual ``await client.puback(id)`` per
                  message; runs under ``--aiomqtt3-python`` (its own venv: the project pins
                  aiomqtt 2.5), skipped with a note when that option is not given

Run:  python benchmarks/bench_mqtt_receive.py [--n 200000] [--repeats 3]
      [--receivers mosquitto_sub,fleetwatch,...] [--mode backlog|live|both]
      [--aiomqtt3-python /tmp/aiomqtt3/bin/python]
``--mode live`` measures a live flood instead: the receiver connects first, then two
publisher processes (the synthetic fleet, simulators.synthetic) publish N messages; the figure
is N / (time from the start of publishing to the receiver's N-th message), so it includes the
broker's work on the inbound side.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _args import positive_int  # noqa: E402

TOPIC_FILTER = "fleet/+/nmea"
ALL = ["mosquitto_sub", "fleetwatch", "paho", "aiomqtt", "gmqtt", "aiomqtt3"]
# + "gmqtt-manual" on request
FOREIGN = {"aiomqtt3"}  # receivers that run under another interpreter (--aiomqtt3-python)
KNOWN = [*ALL, "gmqtt-manual"]
#: receivers whose library is not a project dependency: skipped with a note when missing
OPTIONAL = {"gmqtt": "gmqtt", "gmqtt-manual": "gmqtt"}


def choose_receivers(spec: str, foreign_python: dict[str, str]) -> tuple[list[str], list[str]]:
    """(receivers to run, notes on the ones skipped) of a --receivers list.

    gmqtt is not among the project's dependencies, so a first run's default list used to
    print a ModuleNotFoundError traceback for it every repeat; a misspelt name was only
    reported after the broker was preloaded.  ValueError names unknown receivers."""
    names = [k for k in spec.split(",") if k]
    unknown = [k for k in names if k not in KNOWN]
    if unknown or not names:
        raise ValueError(f"unknown receiver(s) {unknown}: choose from {','.join(KNOWN)}")
    notes = []
    for k in [k for k in names if k in FOREIGN and k not in foreign_python]:
        notes.append(
            f"note: skipping {k}: give --{k}-python PATH (an interpreter with {k} installed)"
        )
        names.remove(k)
    for k in [k for k in names if k in OPTIONAL]:
        if importlib.util.find_spec(OPTIONAL[k]) is None:
            notes.append(f"note: skipping {k}: {OPTIONAL[k]} is not installed (not a project "
                         f"dependency: pip install {OPTIONAL[k]} to include it)")  # fmt: skip
            names.remove(k)
    return names, notes


# ---------------------------------------------------------------- receivers (child processes)
def run_receiver(name: str, port: int, n: int, client_id: str) -> float:
    """Seconds from connect to the N-th acknowledgement."""
    if name == "fleetwatch":
        return asyncio.run(_fleetwatch(port, n, client_id))
    if name == "paho":
        return _paho(port, n, client_id)
    if name == "aiomqtt":
        return asyncio.run(_aiomqtt(port, n, client_id))
    if name in ("gmqtt", "gmqtt-manual"):
        return asyncio.run(_gmqtt(port, n, client_id, optimistic=name == "gmqtt"))
    if name == "aiomqtt3":
        return asyncio.run(_aiomqtt3(port, n, client_id))
    raise SystemExit(f"unknown receiver {name}")


async def _fleetwatch(port: int, n: int, client_id: str) -> float:
    from ingest.mqtt import MqttSettings, MqttSource

    t0 = time.perf_counter()
    got = 0
    async with MqttSource(MqttSettings(port=port, client_id=client_id)) as src:
        while got < n:
            batch = await src.receive_batch(4096)
            src.ack([m.token for m in batch])
            got += len(batch)
        t = time.perf_counter() - t0
    return t


def _paho(port: int, n: int, client_id: str) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    got = 0
    t_end = 0.0

    def on_message(cl: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal got, t_end
        got += 1
        if got >= n:
            t_end = time.perf_counter()
            cl.disconnect()

    c.on_message = on_message
    c.on_connect = lambda cl, *_a: cl.subscribe(TOPIC_FILTER, qos=1)
    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = 65535
    t0 = time.perf_counter()
    c.connect("127.0.0.1", port, clean_start=False, properties=p)
    c.loop_forever()
    return t_end - t0


async def _aiomqtt(port: int, n: int, client_id: str) -> float:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = 65535
    t0 = time.perf_counter()
    got = 0
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        clean_start=False,
        protocol=aiomqtt.ProtocolVersion.V5,
        properties=p,
    ) as c:
        # the backlog floods in before SUBACK, which aiomqtt then waits for behind it
        await c.subscribe(TOPIC_FILTER, qos=1, timeout=600)
        async for _m in c.messages:
            got += 1
            if got >= n:
                break
        t = time.perf_counter() - t0
    return t


async def _aiomqtt3(port: int, n: int, client_id: str) -> float:
    """aiomqtt 3.0.0a1 never acknowledges by itself: the application PUBACKs each QoS 1
    PUBLISH with ``await client.puback(packet_id)`` (one write + drain per message; there is
    no batched form), so this is receive AND ack, like fleetwatch."""
    import importlib

    # typed as Any: mypy sees the project venv's aiomqtt 2.5, whose API differs
    aiomqtt: Any = importlib.import_module("aiomqtt")
    if not aiomqtt.__version__.startswith("3."):
        raise SystemExit(f"aiomqtt3 receiver needs aiomqtt 3.x, found {aiomqtt.__version__}")
    t0 = time.perf_counter()
    got = 0
    async with aiomqtt.Client(
        hostname="127.0.0.1",
        port=port,
        identifier=client_id,
        clean_start=False,
        session_expiry_interval=3600,
        receive_max=65535,
    ) as c:
        # the backlog floods in before SUBACK; aiomqtt 3 queues it (unbounded deque) meanwhile
        async with asyncio.timeout(600):
            await c.subscribe(TOPIC_FILTER, max_qos=aiomqtt.QoS.AT_LEAST_ONCE)
            async for m in c.messages():
                if not isinstance(m, aiomqtt.PublishPacket):
                    continue
                if m.qos == aiomqtt.QoS.AT_LEAST_ONCE:
                    await c.puback(m.packet_id)
                got += 1
                if got >= n:
                    break
        t = time.perf_counter() - t0
    return t


async def _gmqtt(port: int, n: int, client_id: str, *, optimistic: bool) -> float:
    import gmqtt

    done = asyncio.Event()
    got = 0

    def on_message(_c: object, _t: str, _p: bytes, _q: int, _props: object) -> int:
        nonlocal got
        got += 1
        if got >= n:
            done.set()
        return 0

    c = gmqtt.Client(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=optimistic,
        session_expiry_interval=3600,
        receive_maximum=65535,
    )
    c.on_message = on_message
    c.on_connect = lambda cl, *_a: cl.subscribe(TOPIC_FILTER, qos=1)
    t0 = time.perf_counter()
    await c.connect("127.0.0.1", port)
    await asyncio.wait_for(done.wait(), 600)
    t = time.perf_counter() - t0
    await c.disconnect()
    return t


# ---------------------------------------------------------------- orchestration
def _session(port: int, client_id: str, topic: str = TOPIC_FILTER) -> None:
    """Create a persistent session subscribed at QoS 1, then leave (the backlog queues)."""
    subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-V",
            "mqttv5",
            "-i",
            client_id,
            "-c",
            "-x",
            "3600",
            "-q",
            "1",
            "-t",
            topic,
            "-E",
        ],
        check=True,
        timeout=30,
    )


def _publish(port: int, n: int, procs: int = 2) -> float:
    """Publish n QoS 1 messages from `procs` child processes; seconds taken."""
    t0 = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--publish",
                str(port),
                str(n // procs + (1 if i < n % procs else 0)),
                str(i),
            ]
        )
        for i in range(procs)
    ]
    for ch in children:
        if ch.wait(timeout=900) != 0:
            raise SystemExit("publisher failed")
    return time.perf_counter() - t0


def publisher(port: int, n: int, idx: int) -> None:
    """The project's synthetic fleet (simulators.synthetic: 200 units per publisher, RMC+GGA
    per message) over its raw QoS 1 publisher, 1,000 messages in flight, as fast as acked."""
    import numpy as np  # here: the aiomqtt3 receiver child runs in a venv without numpy

    from simulators.mqtt_wire import RawPublisherPool
    from simulators.synthetic import FleetShape, SyntheticFleet, publish_at_rate

    fleet = SyntheticFleet(FleetShape(units=200, unit_prefix=f"unit{idx}-", seed=idx))
    pool = RawPublisherPool(
        "127.0.0.1",
        port,
        connections=1,
        client_id_prefix=f"bench-pub-{idx}-{os.getpid()}",
        max_inflight=1000,
    )
    pool.connect()
    publish_at_rate(
        fleet,
        pool,
        rate_per_s=1e9,
        duration_s=900.0,
        max_messages=n,
        unit_indices=np.arange(200, dtype=np.int64),
    )
    if not pool.drain(timeout_s=300):
        raise SystemExit("publisher: broker did not acknowledge everything")
    pool.close()


def _python_for(name: str, foreign_python: dict[str, str]) -> str:
    return foreign_python.get(name, sys.executable)


def _timed_child(name: str, port: int, n: int, client_id: str, python: str) -> float:
    if name == "mosquitto_sub":
        t0 = time.perf_counter()
        subprocess.run(
            [
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-V",
                "mqttv5",
                "-i",
                client_id,
                "-c",
                "-x",
                "3600",
                "-q",
                "1",
                "-t",
                TOPIC_FILTER,
                "-C",
                str(n),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=900,
        )
        return time.perf_counter() - t0
    out = subprocess.run(
        [python, __file__, "--receiver", name, str(port), str(n), client_id],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=positive_int, default=200_000)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--receivers", default=",".join(ALL))
    ap.add_argument("--mode", choices=["backlog", "live", "both"], default="backlog")
    ap.add_argument(
        "--aiomqtt3-python",
        default=None,
        metavar="PATH",
        help="interpreter of a venv with aiomqtt 3.0.0a1 (not installable in the "
        "project venv, which pins aiomqtt 2.5); aiomqtt3 is skipped without it",
    )
    a = ap.parse_args()
    foreign_python: dict[str, str] = {}
    if a.aiomqtt3_python:
        foreign_python["aiomqtt3"] = a.aiomqtt3_python
    try:
        names, notes = choose_receivers(a.receivers, foreign_python)
    except ValueError as exc:
        ap.error(f"--receivers: {exc}")
    for note in notes:
        print(note, file=sys.stderr)
    from tests.support.broker import MosquittoBroker, free_port, private_mosquitto_conf

    if shutil.which("mosquitto_sub") is None:
        raise SystemExit("mosquitto_sub (package mosquitto-clients) is needed for the baseline")
    results: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as d:
        # Persistence off: autosaving a backlog of N messages x 6 sessions every second would
        # measure Mosquitto's disk writer, not the receivers (see deploy/mosquitto/README.md).
        port = free_port()
        conf = private_mosquitto_conf(port, Path(d)).replace(
            "persistence true", "persistence false"
        )
        broker = MosquittoBroker(Path(d), conf_text=conf, port=port)
        broker.start()
        try:
            for r in range(a.repeats if a.mode != "live" else 0):
                ids = {k: f"bench-{k}-{r}" for k in names}
                for cid in ids.values():
                    _session(broker.port, cid)
                tp = _publish(broker.port, a.n)
                print(
                    f"repeat {r + 1}: preloaded {a.n} msgs for {len(ids)} sessions in {tp:.1f} s",
                    file=sys.stderr,
                )
                for k in names:
                    try:
                        s = _timed_child(
                            k, broker.port, a.n, ids[k], _python_for(k, foreign_python)
                        )
                    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                        err = e.stderr or ""
                        if isinstance(err, bytes):
                            err = err.decode(errors="replace")
                        print(
                            f"  {k:14s} FAILED ({type(e).__name__}): {err[-400:]}", file=sys.stderr
                        )
                        continue
                    results[k].append(a.n / s)
                    print(f"  {k:14s} {a.n / s:9.0f} msg/s", file=sys.stderr)
            if a.mode != "backlog":
                for r in range(a.repeats):
                    live(broker.port, a.n, names, results, r, foreign_python)
        finally:
            broker.stop()
    report(results, a)


def live(
    port: int,
    n: int,
    names: list[str],
    results: dict[str, list[float]],
    r: int,
    foreign_python: dict[str, str],
) -> None:
    """Receiver connected first, then 2 publisher processes flood: the rate while live."""
    for k in names:
        cid = f"bench-live-{k}-{r}"
        _session(port, cid)
        rx = subprocess.Popen(
            [
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-V",
                "mqttv5",
                "-i",
                cid,
                "-c",
                "-x",
                "3600",
                "-q",
                "1",
                "-t",
                TOPIC_FILTER,
                "-C",
                str(n),
            ]
            if k == "mosquitto_sub"
            else [
                _python_for(k, foreign_python),
                __file__,
                "--receiver",
                k,
                str(port),
                str(n),
                cid,
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # benchmark, not a test: let the receiver connect before the flood
        t0 = time.perf_counter()
        _publish(port, n)
        rx.wait(timeout=900)
        s = time.perf_counter() - t0
        results.setdefault(f"live:{k}", []).append(n / s)
        print(f"  live {k:14s} {n / s:9.0f} msg/s (publish+receive)", file=sys.stderr)


def report(results: dict[str, list[float]], a: argparse.Namespace) -> None:
    base = statistics.median(results["mosquitto_sub"]) if results.get("mosquitto_sub") else None
    lbase = (
        statistics.median(results["live:mosquitto_sub"])
        if results.get("live:mosquitto_sub")
        else None
    )
    print(
        f"\nMQTT QoS 1 receive+ack, N={a.n} RMC+GGA messages, median of {a.repeats} "
        f"(backlog drained from a persistent session; machine: {os.cpu_count()} cores)"
    )
    print(f"{'receiver':22s} {'median msg/s':>12s} {'ratio':>8s}   all runs")
    for k, v in results.items():
        if not v:
            continue
        m = statistics.median(v)
        b = lbase if k.startswith("live:") else base
        ratio = f"{m / b:7.0%}" if b else "   n/a"
        print(f"{k:22s} {m:12.0f} {ratio:>8s}   {', '.join(f'{x:.0f}' for x in v)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        secs = run_receiver(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        print(json.dumps({"seconds": secs}))
    elif len(sys.argv) > 1 and sys.argv[1] == "--publish":
        publisher(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
