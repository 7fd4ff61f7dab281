"""MQTT broker fixtures: a private Mosquitto (or, without one, the embedded amqtt broker).

Each broker listens on a free loopback port with its own config and persistence directory in a
temp dir, so tests never share state with each other or with a system broker.  The object a
fixture returns can ``stop()`` (SIGTERM: Mosquitto saves its persistence file), ``kill()``
(SIGKILL: only what autosave already wrote survives) and ``start()`` again on the same port
with the same persistence directory, which is what the restart tests need.

Which broker: ``FLEETWATCH_TEST_BROKER=mosquitto|embedded`` (set by scripts/bootstrap.sh);
unset means Mosquitto when it is on PATH or in /usr/sbin, else embedded.  A broker that cannot
start fails the test: integration tests never skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF_DIR = REPO / "deploy" / "mosquitto"
START_TIMEOUT_S = 15.0


class BrokerStartError(RuntimeError):
    """The test broker did not come up: the message names the command and its log."""


def mosquitto_path() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def broker_kind() -> str:
    """``mosquitto`` or ``embedded``: the environment's choice, else what is installed."""
    want = os.environ.get("FLEETWATCH_TEST_BROKER", "").strip().lower()
    if want in ("mosquitto", "embedded"):
        return want
    if want:
        raise BrokerStartError(f"FLEETWATCH_TEST_BROKER={want!r}: use 'mosquitto' or 'embedded'")
    return "mosquitto" if mosquitto_path() else "embedded"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerStartError(
                f"broker exited with {proc.returncode} on port {port}; log {log}:\n"
                + (log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"))
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)  # polling a port during fixture setup, not test synchronisation
    raise BrokerStartError(f"broker did not listen on {host}:{port} within {START_TIMEOUT_S} s")


def _run_as() -> str:
    """Mosquitto started as root switches to user ``mosquitto`` unless told otherwise, and
    could then not write the test's temp dir."""
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


class Broker(Protocol):
    host: str
    port: int
    kind: str

    @property
    def url(self) -> str: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


def private_mosquitto_conf(port: int, workdir: Path, *, extra: str = "") -> str:
    """A permissive private config: anonymous access, persistence autosaved every second,
    no queue limits (tests and benchmarks queue big backlogs)."""
    return textwrap.dedent(f"""\
        per_listener_settings false
        user {_run_as()}
        listener {port} 127.0.0.1
        allow_anonymous true
        persistence true
        persistence_location {workdir}/
        autosave_interval 1
        max_queued_messages 0
        max_inflight_messages 0
        max_queued_bytes 0
        log_dest file {workdir}/mosquitto.log
        log_type error
        log_type warning
        log_type notice
        """) + extra


B = TypeVar("B", bound=Broker)


class MosquittoBroker:
    """A private mosquitto process; restartable on the same port and persistence dir."""

    kind = "mosquitto"

    def __init__(self, workdir: Path, conf_text: str | None = None, port: int | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise BrokerStartError("mosquitto not found on PATH or in /usr/sbin: install the "
                                   "mosquitto package or set FLEETWATCH_TEST_BROKER=embedded")
        self.exe = exe
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(conf_text or private_mosquitto_conf(self.port, workdir))
        self.log = workdir / "mosquitto.log"
        self.username = username
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        cred = f"{self.username}:{self.password}@" if self.username else ""
        return f"mqtt://{cred}{self.host}:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_listening(self.host, self.port, self.proc, self.log)

    def stop(self) -> None:
        """SIGTERM and wait: Mosquitto writes its persistence file on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no final save, only what autosave wrote survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class EmbeddedBroker:
    """amqtt's broker in a child process (MQTT 3.1.1 only; no ACL file support).

    A child process rather than in-process so that ``kill()`` is a real SIGKILL and the broker
    does not share the test's event loop.  amqtt keeps sessions in memory: persistence across
    a restart is not available, and the restart tests say so when they fail with it.
    """

    kind = "embedded"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "amqtt.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.username: str | None = None
        self.password: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        code = textwrap.dedent(f"""
            import asyncio
            from amqtt.broker import Broker
            async def main():
                b = Broker({{"listeners": {{"default": {{"type": "tcp",
                    "bind": "{self.host}:{self.port}"}}}},
                    "plugins": {{"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                 {{"allow_anonymous": True}}}}}})
                await b.start()
                await asyncio.Event().wait()
            asyncio.run(main())
            """)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([embedded_python(), "-c", code], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        _wait_listening(self.host, self.port, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def embedded_python() -> str:
    """The interpreter that has amqtt: ``$FLEETWATCH_EMBEDDED_BROKER_PYTHON`` or ours.

    A separate interpreter is allowed because amqtt 0.12.1 requires websockets==15.0.1 while
    fleetwatch pins websockets 17: they cannot share one virtualenv."""
    return os.environ.get("FLEETWATCH_EMBEDDED_BROKER_PYTHON") or sys.executable


def make_broker(workdir: Path) -> MosquittoBroker | EmbeddedBroker:
    kind = broker_kind()
    if kind == "mosquitto":
        return MosquittoBroker(workdir)
    probe = subprocess.run([embedded_python(), "-c", "import amqtt.broker"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        raise BrokerStartError(
            f"no mosquitto, and amqtt is not importable by {embedded_python()}: install the "
            "mosquitto package, or amqtt==0.12.1 in a virtualenv named by "
            "$FLEETWATCH_EMBEDDED_BROKER_PYTHON")
    return EmbeddedBroker(workdir)


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
    spec = importlib.util.spec_from_file_location("fleetwatch_mkpasswd",
                                                  SHIPPED_CONF_DIR / "mkpasswd.py")
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
    passwd.write_text(mkpasswd.password_file_text({**ACL_UNITS, ACL_INGEST_USER[0]:
                                                   ACL_INGEST_USER[1]}))
    passwd.chmod(0o600)
    conf = mkpasswd.localise_conf(
        (SHIPPED_CONF_DIR / "mosquitto.conf").read_text(),
        port=port, bind="127.0.0.1", persistence_dir=workdir,
        password_file=passwd, acl_file=SHIPPED_CONF_DIR / "acl",
        log_file=workdir / "mosquitto.log") + f"user {_run_as()}\n"
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
