"""MQTT broker fixtures: a private Mosquitto (or, without one, the embedded amqtt broker).

The brokers come from :mod:`fleetwatch.brokers`, the launcher the demo uses too: each runs the
shipped ``deploy/mosquitto`` config localised to a free loopback port and a persistence
directory in a temp dir, so tests never share state with each other or with a system broker,
and test what an operator deploys.  The object a
fixture returns can ``stop()`` (SIGTERM: Mosquitto saves its persistence file), ``kill()``
(SIGKILL: only what autosave already wrote survives) and ``start()`` again on the same port
with the same persistence directory, which is what the restart tests need.

Which broker: ``FLEETWATCH_TEST_BROKER=mosquitto|embedded`` (set by scripts/bootstrap.sh);
unset means Mosquitto when it is on PATH or in /usr/sbin, else embedded.  A broker that cannot
start fails the test: integration tests never skip.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol, TypeVar

import pytest

from fleetwatch.brokers import (
    AmqttBroker,
    BrokerStartError,
    MosquittoBroker,
    free_port,
    make_private_broker,
    private_mosquitto_conf,
)
from fleetwatch.brokers import _run_as as _run_as
from fleetwatch.brokers import mosquitto_executable as mosquitto_path

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF_DIR = REPO / "deploy" / "mosquitto"
__all__ = ["BrokerStartError", "MosquittoBroker", "free_port", "private_mosquitto_conf"]


def broker_kind() -> str:
    """``mosquitto`` or ``embedded``: the environment's choice, else what is installed."""
    want = os.environ.get("FLEETWATCH_TEST_BROKER", "").strip().lower()
    if want in ("mosquitto", "embedded"):
        return want
    if want:
        raise BrokerStartError(f"FLEETWATCH_TEST_BROKER={want!r}: use 'mosquitto' or 'embedded'")
    return "mosquitto" if mosquitto_path() else "embedded"


class Broker(Protocol):
    host: str
    port: int
    kind: str

    @property
    def url(self) -> str: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


B = TypeVar("B", bound=Broker)
EmbeddedBroker = AmqttBroker


def make_broker(workdir: Path) -> MosquittoBroker | AmqttBroker:
    return make_private_broker(workdir, kind=broker_kind())


def _started(make: Callable[[int], B], what: str) -> Iterator[B]:
    """Start ``make(attempt)``'s broker, retrying twice: a free port can be taken by someone
    else between probe and bind.  A broker that cannot be built or started fails the test."""
    last: Exception | None = None
    for attempt in range(3):
        try:
            b = make(attempt)
        except BrokerStartError as e:
            pytest.fail(f"no test MQTT broker: {e}")
        try:
            b.start()
        except BrokerStartError as e:
            last = e
            b.kill()
            continue
        try:
            yield b
        finally:
            b.kill()
        return
    pytest.fail(f"could not start {what}: {last}")


def pytest_report_header(config: pytest.Config) -> str:
    kind = broker_kind()
    where = mosquitto_path() if kind == "mosquitto" else "amqtt (embedded, MQTT 3.1.1)"
    return f"fleetwatch test MQTT broker: {kind} ({where})"


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """A private broker for one test (function scope: restart tests may kill it)."""
    yield from _started(lambda _: make_broker(tmp_path / "broker"), "the test MQTT broker")


@pytest.fixture(scope="session")
def shared_mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One private broker for the session; tests must use unique topics / client ids and
    must not stop it."""
    workdir = tmp_path_factory.mktemp("shared-broker")
    yield from _started(lambda _: make_broker(workdir), "the test MQTT broker")


# -- the shipped deploy/mosquitto config, with auth and ACL ---------------------------------

#: Credentials the ``acl_broker`` fixture provisions (unit id -> password).
ACL_UNITS = {"unit-a": "pw-a-secret", "unit-b": "pw-b-secret"}
ACL_INGEST_USER = ("fleetwatch", "ingest-secret")


class AclBroker(MosquittoBroker):
    units: dict[str, str]
    ingest_user: tuple[str, str]


def load_mkpasswd() -> ModuleType:
    """deploy/mosquitto/mkpasswd.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "fleetwatch_mkpasswd", SHIPPED_CONF_DIR / "mkpasswd.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _acl_broker(workdir: Path) -> AclBroker:
    mkpasswd = load_mkpasswd()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    passwd = workdir / "passwd"
    passwd.write_text(
        mkpasswd.password_file_text({**ACL_UNITS, ACL_INGEST_USER[0]: ACL_INGEST_USER[1]})
    )
    passwd.chmod(0o600)
    conf = private_mosquitto_conf(
        port, workdir, password_file=passwd, acl_file=SHIPPED_CONF_DIR / "acl"
    )
    b = AclBroker(workdir, conf_text=conf, port=port)
    b.units = dict(ACL_UNITS)
    b.ingest_user = ACL_INGEST_USER
    return b


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[AclBroker]:
    """Mosquitto with the shipped config, password file and ACL (needs real Mosquitto)."""
    if mosquitto_path() is None:
        pytest.fail("acl_broker needs mosquitto: the shipped ACL is a Mosquitto config")
    yield from _started(
        lambda attempt: _acl_broker(tmp_path / f"acl-broker-{attempt}"),
        "Mosquitto with the shipped config",
    )
