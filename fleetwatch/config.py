"""Settings of a fleetwatch process: defaults < TOML file < environment < command line.

One flat, frozen record.  Each setting ``<name>`` is read from the environment variable
``FLEETWATCH_<NAME>`` and from the TOML file, where names with a section prefix
(``mqtt_``, ``database_``, ``http_``, ``ingest_``) live in that table (``[mqtt] url = ...``)
and the others at the top level (``sites_file`` and ``detect_interval_ms`` may also sit in a
``[geofence]`` table, under their own names).  The file is ``--config FILE`` or
``$FLEETWATCH_CONFIG``.
Every setting is listed, with its default and meaning, in docs/configuration.md (a test
checks that the page and :data:`FIELDS` agree).

URLs may carry passwords: :meth:`Settings.redacted` and ``repr`` never show them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_ENV = "FLEETWATCH_CONFIG"
ENV_PREFIX = "FLEETWATCH_"
SECTIONS = ("mqtt", "database", "http", "ingest", "geofence")
#: tables whose keys are setting names as they are (``[geofence] sites_file`` -> ``sites_file``)
_UNPREFIXED_SECTIONS = ("geofence",)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """Settings are missing or malformed; each problem names the variable or file key.

    ``problems`` holds every problem found (one line each), so an operator fixes them all in
    one go; ``str()`` joins them with ``; ``.
    """

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = tuple(problems) or ("invalid settings",)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything ``fleetwatch run`` / ``demo`` need.  See docs/configuration.md."""

    #: mqtt://[user:password@]host[:port]; None = none configured
    mqtt_url: str | None = dataclasses.field(default=None, repr=False)
    #: fixed client id: the broker keeps our session (and unacked messages) under it
    mqtt_client_id: str = "fleetwatch-ingest"
    #: how long the broker keeps the session while we are away (must exceed any outage)
    mqtt_session_expiry_s: int = 7 * 24 * 3600
    mqtt_topic: str = "fleet/+/nmea"
    #: 5, or 4 (MQTT 3.1.1) for brokers without MQTT 5 such as the embedded amqtt broker
    mqtt_version: int = 5
    #: messages the MQTT client holds for the batcher before it stops reading the socket
    mqtt_max_buffered_messages: int = 8192
    #: postgresql://user:password@host:port/dbname; None = none configured
    database_url: str | None = dataclasses.field(default=None, repr=False)
    database_pool_size: int = 4
    #: bound on each wait for a database connection (a down database fails a write this fast)
    database_timeout_s: float = 5.0
    http_host: str = "127.0.0.1"
    #: /metrics and /healthz; 0 = any free port; None ("off") = no HTTP server
    http_port: int | None = 8080
    ingest_batch_max_messages: int = 2000
    ingest_batch_max_age_ms: float = 100.0
    ingest_batch_max_bytes: int = 8 * 1024 * 1024
    ingest_batches_in_flight: int = 4
    ingest_max_payload_bytes: int = 64 * 1024
    ingest_store_retry_max_s: float = 5.0
    #: units.csv (unit_id,vehicle_id,driver) loaded at start and upserted into the store
    units_file: Path | None = None
    #: the local durable spool (docs/spool.md); None = none: a database outage stops acks
    spool_file: Path | None = None
    #: bound on spooled record bytes; when full, acks wait (backpressure)
    spool_max_bytes: int = 2 * 1024**3
    #: re-read the units of the store (and units file) this often; 0 = only at start
    units_reload_s: float = 60.0
    #: accept payloads of units in no registry (load tests); default: dead-letter them
    accept_unknown_units: bool = False
    #: where the demo keeps its private broker and database
    data_dir: Path = Path("var")
    log_level: str = "INFO"
    #: on SIGINT/SIGTERM: how long to finish and ack the batches in flight before abandoning
    shutdown_timeout_s: float = 10.0
    #: the day's sites (GeoJSON or CSV by extension); None = live detection off
    sites_file: Path | None = None
    #: the visit/stop tracker is fed the fixes committed since its last round this often
    detect_interval_ms: float = 1000.0
    #: run the engine in a child process (its own GIL) instead of a worker thread of ingest
    engine_process: bool = False
    #: a directory with the day plans (plans.csv or plans.json, depots.csv); None = no schedule
    plans_dir: Path | None = None
    #: dispatchers, shifts and responsibilities (TOML/JSON); None = a generated roster
    roster_file: Path | None = None
    #: hashed bearer tokens of the console and the APIs (python -m fleetwatch.auth mints them)
    tokens_file: Path | None = None
    #: fsynced local journal of engine records while the database is down; None = memory only
    outbox_journal_file: Path | None = None
    #: the console's background map tiles (a Leaflet URL template); None = no tiles (offline)
    map_tile_url: str | None = None
    #: dispatcher KPIs: the service level, an alert acknowledged within this many minutes
    crm_sla_minutes: float = 10.0

    # -- ops: start-up, health, broker watch, sites region (docs/configuration.md) ------------
    #: at start, wait up to this long for the database and the broker (retrying with
    #: backoff, one WARNING per state change); 0 = fail fast with exit code 3
    startup_wait_s: float = 0.0
    #: the database is probed (SELECT 1) this often, whether or not a write is due
    health_probe_interval_s: float = 2.0
    #: /readyz fails when messages wait and nothing was committed for this long
    health_max_commit_age_s: float = 30.0
    #: /readyz fails when the engine is this far behind its data
    health_max_engine_lag_s: float = 30.0
    #: one log line per HTTP request (off: every scrape would log)
    http_access_log: bool = False
    #: read the broker's $SYS counters (dropped messages, stored messages) when allowed
    mqtt_watch_sys: bool = True
    #: sites outside this box are refused: "auto" (the box of the day's depots and plan, with
    #: a margin), "off", or "lon_min,lat_min,lon_max,lat_max" in degrees
    sites_region: str = "auto"
    # -- end ops --

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(*problems)

    def problems(self) -> list[str]:
        """Every problem of these values, one line each (empty: valid)."""
        out: list[str] = []
        positive = (
            "mqtt_session_expiry_s",
            "mqtt_max_buffered_messages",
            "database_pool_size",
            "ingest_batch_max_messages",
            "ingest_batch_max_bytes",
            "ingest_batches_in_flight",
            "ingest_max_payload_bytes",
            "spool_max_bytes",
        )
        for name in positive:
            if getattr(self, name) < 1:
                out.append(f"{env_name(name)} must be >= 1, got {getattr(self, name)}")
        if not self.database_timeout_s > 0:
            out.append(f"{env_name('database_timeout_s')} must be > 0")
        nonnegative = (
            "ingest_batch_max_age_ms",
            "ingest_store_retry_max_s",
            "shutdown_timeout_s",
            "units_reload_s",
        )
        for name in nonnegative:
            if not getattr(self, name) >= 0:
                out.append(f"{env_name(name)} must be >= 0, got {getattr(self, name)}")
        if not self.detect_interval_ms > 0:
            out.append(f"{env_name('detect_interval_ms')} must be > 0")
        if not self.crm_sla_minutes > 0:
            out.append(f"{env_name('crm_sla_minutes')} must be > 0")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            out.append(f"{env_name('http_port')} must be 0..65535 or 'off'")
        if self.log_level not in _LOG_LEVELS:
            out.append(f"{env_name('log_level')} must be one of {', '.join(_LOG_LEVELS)}")
        if self.mqtt_session_expiry_s < 600:
            out.append(
                f"{env_name('mqtt_session_expiry_s')}={self.mqtt_session_expiry_s} is shorter "
                "than 10 minutes: the broker would forget unacknowledged messages during an "
                "outage (reliability promise 2)"
            )
        if self.mqtt_version not in (4, 5):
            out.append(f"{env_name('mqtt_version')} must be 5 or 4 (MQTT 3.1.1)")
        if not self.mqtt_client_id:
            out.append(f"{env_name('mqtt_client_id')} must not be empty")
        out.extend(self._ops_problems())
        return out

    def _ops_problems(self) -> list[str]:
        out: list[str] = []
        if not self.startup_wait_s >= 0:
            out.append(f"{env_name('startup_wait_s')} must be >= 0 (0: fail fast)")
        for name in ("health_probe_interval_s", "health_max_commit_age_s",
                     "health_max_engine_lag_s"):  # fmt: skip
            if not getattr(self, name) > 0:
                out.append(f"{env_name(name)} must be > 0, got {getattr(self, name)}")
        try:
            parse_region(self.sites_region)
        except ValueError as exc:
            out.append(f"{env_name('sites_region')}={self.sites_region!r}: {exc}")
        if self.mqtt_url and (p := mqtt_url_problem(self.mqtt_url)) is not None:
            out.append(p)
        if self.database_url and (p := database_url_problem(self.database_url)) is not None:
            out.append(p)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Settings({inner})"

    def redacted(self) -> dict[str, Any]:
        """Every setting, passwords in URLs replaced by ``***``: safe to log."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = redact_url(value) if f.name.endswith("_url") and value else value
        return out

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults, then the TOML file, then ``FLEETWATCH_*`` variables, then *overrides*.

        *overrides* are already-typed values from the command line; ``None`` values in it
        mean "not given" and are ignored.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: list[str] = []
        path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
        if path is not None:
            values.update(_read_toml(path, problems))
        for name, parse in FIELDS.items():
            raw = env.get(env_name(name))
            if raw is not None:
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    values.pop(name, None)
                    problems.append(f"{env_name(name)}={_show(name, raw)}: {exc}")
        for name, value in (overrides or {}).items():
            if name not in FIELDS:
                problems.append(f"unknown setting {name!r}")
            elif value is not None:
                values[name] = value
        try:
            settings = cls(**values)
        except ConfigError as exc:
            raise ConfigError(*problems, *exc.problems) from None
        except TypeError as exc:  # a value of the wrong type from the command line
            raise ConfigError(*problems, str(exc)) from None
        if problems:
            raise ConfigError(*problems)
        return settings


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``; also hides ``password=`` in libpq key/value strings."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]  # as written (a malformed port stays visible)
        netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
        parts = parts._replace(netloc=netloc)
    out = urllib.parse.urlunsplit(parts)
    if "password=" in out:
        out = " ".join("password=***" if w.startswith("password=") else w for w in out.split(" "))
        q = urllib.parse.urlsplit(out)
        if q.query:
            params = urllib.parse.parse_qsl(q.query, keep_blank_values=True)
            safe = [(k, "***" if k == "password" else v) for k, v in params]
            out = urllib.parse.urlunsplit(q._replace(query=urllib.parse.urlencode(safe)))
    if "://" not in out:  # a malformed key/value string: hide whatever follows "password"
        out = re.sub(r"(password(?:\s*=\s*|\s+))(?!\*\*\*)('[^']*'|\S+)", r"\1***", out)
    return out


def _show(name: str, raw: str) -> str:
    return redact_url(raw) if name.endswith("_url") else repr(raw)


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false, yes/no, on/off or 1/0")


def _optional_port(raw: str) -> int | None:
    low = raw.strip().lower()
    if low in ("off", "none", "disabled", ""):
        return None
    try:
        return int(low)
    except ValueError:
        raise ValueError("expected a port number 0..65535, or off") from None


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def _optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw.strip() else None


def _level(raw: str) -> str:
    return raw.strip().upper()


#: setting -> parser of its string form (environment); TOML values go through the same parser
#: when they are strings, else are checked against the default's type.
FIELDS: dict[str, Callable[[str], Any]] = {
    "mqtt_url": _optional_str,
    "mqtt_client_id": str.strip,
    "mqtt_session_expiry_s": _int,
    "mqtt_topic": str.strip,
    "mqtt_version": _int,
    "mqtt_max_buffered_messages": _int,
    "database_url": _optional_str,
    "database_pool_size": _int,
    "database_timeout_s": _float,
    "http_host": str.strip,
    "http_port": _optional_port,
    "ingest_batch_max_messages": _int,
    "ingest_batch_max_age_ms": _float,
    "ingest_batch_max_bytes": _int,
    "ingest_batches_in_flight": _int,
    "ingest_max_payload_bytes": _int,
    "ingest_store_retry_max_s": _float,
    "spool_file": _optional_path,
    "spool_max_bytes": _int,
    "units_file": _optional_path,
    "units_reload_s": _float,
    "accept_unknown_units": _bool,
    "data_dir": Path,
    "log_level": _level,
    "shutdown_timeout_s": _float,
    "sites_file": _optional_path,
    "plans_dir": _optional_path,
    "roster_file": _optional_path,
    "tokens_file": _optional_path,
    "outbox_journal_file": _optional_path,
    "map_tile_url": _optional_str,
    "crm_sla_minutes": _float,
    "detect_interval_ms": _float,
    "engine_process": _bool,
    # -- ops --
    "startup_wait_s": _float,
    "health_probe_interval_s": _float,
    "health_max_commit_age_s": _float,
    "health_max_engine_lag_s": _float,
    "http_access_log": _bool,
    "mqtt_watch_sys": _bool,
    "sites_region": str.strip,
}


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any]:
    """The settings of a TOML file; each problem is appended to *problems* (and skipped)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"cannot read config file {path}: {exc.strerror}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path} is not valid TOML: {exc}")
        return {}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                problems.append(f"{path}: unknown table [{key}]; known: {', '.join(SECTIONS)}")
                continue
            for sub, v in value.items():
                name = sub if key in _UNPREFIXED_SECTIONS else f"{key}_{sub}"
                if _known_setting(path, name, f"[{key}] {sub}", problems):
                    values[name] = v
        elif _known_setting(path, key, key, problems):
            values[key] = value
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            out[name] = _coerce(name, value)
        except (TypeError, ValueError) as exc:
            problems.append(f"{path}: {name}: {exc}")
    return out


def _known_setting(path: Path, name: str, shown: str, problems: list[str]) -> bool:
    if name not in FIELDS:
        problems.append(f"{path}: unknown setting {shown!r} (see docs/configuration.md)")
        return False
    return True


def _coerce(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return FIELDS[name](value)
    default = next(f.default for f in dataclasses.fields(Settings) if f.name == name)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise TypeError(f"expected a number or string, got {value!r}")
    if isinstance(value, int | float) and (isinstance(default, int | float) or default is None):
        return type(default)(value) if default is not None else int(value)
    raise TypeError(f"expected a string, got {value!r}")


# -- ops: the region of the day's sites, and the checks `fleetwatch run` needs -----------------
Region = tuple[float, float, float, float]


def parse_region(raw: str) -> Region | str:
    """``"auto"``/``"off"`` as they are, or ``lon_min,lat_min,lon_max,lat_max`` as a tuple."""
    low = raw.strip().lower()
    if low in ("auto", "off"):
        return low
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 4:
        raise ValueError("expected auto, off or lon_min,lat_min,lon_max,lat_max")
    try:
        lon0, lat0, lon1, lat1 = (float(p) for p in parts)
    except ValueError:
        raise ValueError("lon_min,lat_min,lon_max,lat_max must be numbers (degrees)") from None
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise ValueError(
            "need -180 <= lon_min < lon_max <= 180 and -90 <= lat_min < lat_max <= 90 "
            "(longitude first)"
        )
    return (lon0, lat0, lon1, lat1)


def mqtt_url_problem(url: str) -> str | None:
    """Why *url* is not a usable broker URL (one line naming the setting), or None."""
    shown = f"{env_name('mqtt_url')}={redact_url(url)}"
    usage = "use mqtt://[user:password@]host[:port]"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mqtt":
        scheme = parts.scheme or "(none)"
        tls = " (TLS is not supported yet)" if parts.scheme in ("mqtts", "ssl") else ""
        return f"{shown}: scheme {scheme!r} is not mqtt{tls}; {usage}"
    try:
        port = parts.port
    except ValueError:
        return f"{shown}: the port is not a number in 1..65535; {usage}"
    if port == 0:
        return f"{shown}: port 0 is not a broker port; {usage}"
    if not parts.hostname:
        return f"{shown}: no host; {usage}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{shown}: has a path or query; {usage}"
    return None


def database_url_problem(dsn: str) -> str | None:
    """Why *dsn* is not a PostgreSQL connection string (one line naming the setting), or None."""
    shown = f"{env_name('database_url')}={redact_url(dsn)}"
    usage = "use postgresql://user:password@host:5432/dbname (or libpq key=value pairs)"
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        if parts.scheme not in ("postgresql", "postgres"):
            return f"{shown}: scheme {parts.scheme!r} is not postgresql; {usage}"
        try:
            _ = parts.port
        except ValueError:
            return f"{shown}: the port is not a number in 1..65535; {usage}"
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        # quoted fragments of the string may be a password: never echo them
        cause = " ".join(str(exc).split())
        for token in set(re.findall(r'"([^"]*)"', cause)):
            if len(token) > 1 and token in dsn:
                cause = cause.replace(f'"{token}"', "…")
        return f"{shown}: not a PostgreSQL connection string ({cause}); {usage}"
    return None


def missing_files(settings: Settings, options: Mapping[str, str] | None = None) -> list[str]:
    """One line per configured file that does not exist.

    *options* maps a setting to the command-line option that set it (``units_file`` ->
    ``--units``): the line names what the user typed, not a variable they never set."""
    out: list[str] = []
    for name in ("units_file", "sites_file", "roster_file", "tokens_file"):
        path: Path | None = getattr(settings, name)
        if path is not None and not path.is_file():
            option = (options or {}).get(name)
            where = f"{option} {path}" if option else f"{env_name(name)}={path}"
            out.append(f"{where}: no such file; give the path of an existing file")
    return out


def problems_for_run(settings: Settings, options: Mapping[str, str] | None = None) -> list[str]:
    """What ``fleetwatch run`` needs beyond valid values: both dependencies and readable files
    (*options*: the settings given on the command line, as for :func:`missing_files`)."""
    out: list[str] = []
    if not settings.mqtt_url:
        out.append(f"no broker configured: set {env_name('mqtt_url')} (or [mqtt] url, or "
                   "--mqtt-url)")  # fmt: skip
    if not settings.database_url:
        out.append(f"no database configured: set {env_name('database_url')} (or [database] url, "
                   "or --database-url)")  # fmt: skip
    out += missing_files(settings, options)
    if settings.plans_dir is not None and not settings.plans_dir.is_dir():
        out.append(f"{env_name('plans_dir')}={settings.plans_dir}: no such directory; give the "
                   "directory holding plans.csv (or plans.json) and depots.csv")  # fmt: skip
    if settings.plans_dir is not None and settings.sites_file is None:
        out.append(f"{env_name('plans_dir')} needs {env_name('sites_file')}: the schedule "
                   "runs on the engine, which needs the day's sites")  # fmt: skip
    return out
