"""The one launcher of private MQTT brokers, for the demo, the tests and the benchmarks.

Every private Mosquitto runs the *shipped* configuration (``deploy/mosquitto/mosquitto.conf``:
persistence with a 2 s autosave, the queue and in-flight limits zero loss depends on) with only
its site-specific lines replaced: a loopback listener on a free port, the persistence directory
and log file in a private work dir, the user it runs as, and — unless a password file and ACL
are given — anonymous access.  So the demo and the tests exercise exactly the broker settings an
operator deploys.  Without Mosquitto, the embedded amqtt broker runs in a child process
(MQTT 3.1.1, sessions in memory: no redelivery across its restart).

Each broker object can ``start()``, ``stop()`` (SIGTERM: Mosquitto saves its persistence file),
``kill()`` (SIGKILL: only what autosave wrote survives) and ``start()`` again on the same port
and persistence directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

START_TIMEOUT_S = 15.0
SHIPPED_CONF = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf"

#: The essential lines of the shipped config, for an installed package without deploy/.
_FALLBACK_CONF = """\
persistence true
persistence_location /var/lib/mosquitto/
autosave_interval 2
autosave_on_changes false
max_queued_messages 4000000
max_queued_bytes 2000000000
max_inflight_messages 65535
persistent_client_expiration 14d
max_packet_size 131072
queue_qos0_messages false
per_listener_settings true
listener 1883 0.0.0.0
protocol mqtt
allow_anonymous false
log_dest syslog
log_type error
log_type warning
log_type notice
"""


class BrokerStartError(RuntimeError):
    """A private broker did not come up: the message names the program and its log."""


def mosquitto_executable() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str:
    """Mosquitto started as root switches to user ``mosquitto`` unless told otherwise, and
    could then not write the private work dir."""
    return pwd.getpwuid(os.getuid()).pw_name


def private_mosquitto_conf(
    port: int,
    workdir: Path,
    *,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    extra: str = "",
) -> str:
    """The shipped config localised to a private broker (see the module docstring)."""
    text = SHIPPED_CONF.read_text() if SHIPPED_CONF.is_file() else _FALLBACK_CONF
    repl = {
        "listener": f"listener {port} 127.0.0.1",
        "persistence_location": f"persistence_location {workdir}/",
        "log_dest": f"log_dest file {workdir}/mosquitto.log",
        "password_file": f"password_file {password_file}" if password_file else None,
        "acl_file": f"acl_file {acl_file}" if acl_file else None,
        "allow_anonymous": f"allow_anonymous {'false' if password_file else 'true'}",
        "user": None,
    }
    out: list[str] = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key in repl:
            new = repl.pop(key)
            if new is not None:
                out.append(new)
        else:
            out.append(line)
    out += [v for v in repl.values() if v is not None]  # keys the shipped file lacks
    out.append(f"user {_run_as()}")
    return "\n".join(out) + "\n" + extra


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def _owns_listener(pid: int, port: int) -> bool | None:
    """Whether process *pid* holds the socket listening on *port* (None: cannot tell here).

    A free port can be taken by another server between :func:`free_port` and the broker's
    bind; a bare connect would then succeed against that server while ours exits with
    "address in use", and the caller would talk to a stranger (a test once waited 30 s
    for $SYS counters from what was not its broker).  Linux's /proc says who listens."""
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as f:
                for line in f.read().splitlines()[1:]:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        fd_dir = Path(f"/proc/{pid}/fd")
        if not inodes or not fd_dir.is_dir():
            return None
        held = set()
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                held.add(os.readlink(fd))
    except (OSError, ValueError, IndexError):
        return None
    return any(f"socket:[{inode}]" in held for inode in inodes)


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise BrokerStartError(
                f"broker exited with {proc.returncode} on port {port}; log {log}:\n{tail}"
            )
        if _accepts(host, port) and _owns_listener(proc.pid, port) is not False:
            return
        time.sleep(0.02)  # polling a child process's port at start-up
    proc.kill()
    raise BrokerStartError(f"broker did not listen on {host}:{port} within {START_TIMEOUT_S} s")


class _Process:
    host: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None

    def _wait(self) -> None:
        assert self.proc is not None
        _wait_listening(self.host, self.port, self.proc, self.log)

    def stop(self) -> None:
        """SIGTERM and wait (Mosquitto writes its persistence file on the way out)."""
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


class MosquittoBroker(_Process):
    """A private mosquitto process running the shipped config (or *conf_text*)."""

    kind = "mosquitto"
    mqtt_version = 5

    def __init__(
        self,
        workdir: Path,
        conf_text: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        exe = mosquitto_executable()
        if exe is None:
            raise BrokerStartError(
                "mosquitto not found on PATH or in /usr/sbin: install the mosquitto package "
                "(apt-get install mosquitto), or use the embedded broker"
            )
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
        self.proc = None

    @property
    def url(self) -> str:
        cred = f"{self.username}:{self.password}@" if self.username else ""
        return f"mqtt://{cred}{self.host}:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self._wait()


def embedded_python() -> str:
    """The interpreter that has amqtt: ``$FLEETWATCH_EMBEDDED_BROKER_PYTHON`` or ours.

    A separate interpreter because amqtt 0.12.1 requires websockets==15.0.1 while fleetwatch
    pins websockets 17: they cannot share one virtualenv (scripts/bootstrap.sh makes one)."""
    return os.environ.get("FLEETWATCH_EMBEDDED_BROKER_PYTHON") or sys.executable


class AmqttBroker(_Process):
    """amqtt's broker in a child process (MQTT 3.1.1; no ACL; sessions in memory)."""

    kind = "embedded"
    mqtt_version = 4

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "amqtt.log"
        self.proc = None
        self.username: str | None = None
        self.password: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        probe = subprocess.run(
            [embedded_python(), "-c", "import amqtt.broker"], capture_output=True, check=False
        )
        if probe.returncode != 0:
            raise BrokerStartError(
                f"no mosquitto, and amqtt is not importable by {embedded_python()}: install "
                "the mosquitto package, or amqtt==0.12.1 in a virtualenv named by "
                "$FLEETWATCH_EMBEDDED_BROKER_PYTHON (scripts/bootstrap.sh does), or set "
                "FLEETWATCH_MQTT_URL"
            )
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
            self.proc = subprocess.Popen(
                [embedded_python(), "-c", code],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait()


def make_private_broker(workdir: Path, *, kind: str | None = None) -> MosquittoBroker | AmqttBroker:
    """Mosquitto when installed (or ``kind="mosquitto"``), else the embedded broker."""
    kind = kind or ("mosquitto" if mosquitto_executable() else "embedded")
    if kind == "mosquitto":
        return MosquittoBroker(workdir)
    if kind == "embedded":
        return AmqttBroker(workdir)
    raise BrokerStartError(f"unknown broker kind {kind!r}: use 'mosquitto' or 'embedded'")
