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
    """A setting is missing or malformed; the message names the variable or file key."""


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

    def __post_init__(self) -> None:
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
                raise ConfigError(f"{env_name(name)} must be >= 1, got {getattr(self, name)}")
        if not self.database_timeout_s > 0:
            raise ConfigError(f"{env_name('database_timeout_s')} must be > 0")
        nonnegative = (
            "ingest_batch_max_age_ms",
            "ingest_store_retry_max_s",
            "shutdown_timeout_s",
            "units_reload_s",
        )
        for name in nonnegative:
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{env_name(name)} must be >= 0, got {getattr(self, name)}")
        if not self.detect_interval_ms > 0:
            raise ConfigError(f"{env_name('detect_interval_ms')} must be > 0")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ConfigError(f"{env_name('http_port')} must be 0..65535 or 'off'")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"{env_name('log_level')} must be one of {', '.join(_LOG_LEVELS)}")
        if self.mqtt_session_expiry_s < 600:
            raise ConfigError(
                f"{env_name('mqtt_session_expiry_s')}={self.mqtt_session_expiry_s} is shorter "
                "than 10 minutes: the broker would forget unacknowledged messages during an "
                "outage (reliability promise 2)"
            )
        if self.mqtt_version not in (4, 5):
            raise ConfigError(f"{env_name('mqtt_version')} must be 5 or 4 (MQTT 3.1.1)")
        if not self.mqtt_client_id:
            raise ConfigError(f"{env_name('mqtt_client_id')} must not be empty")

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
        path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
        if path is not None:
            values.update(_read_toml(path))
        for name, parse in FIELDS.items():
            raw = env.get(env_name(name))
            if raw is not None:
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    raise ConfigError(f"{env_name(name)}={_show(name, raw)}: {exc}") from exc
        for name, value in (overrides or {}).items():
            if name not in FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``; also hides ``password=`` in libpq key/value strings."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
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
    return int(low)


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
    "mqtt_session_expiry_s": int,
    "mqtt_topic": str.strip,
    "mqtt_version": int,
    "mqtt_max_buffered_messages": int,
    "database_url": _optional_str,
    "database_pool_size": int,
    "database_timeout_s": float,
    "http_host": str.strip,
    "http_port": _optional_port,
    "ingest_batch_max_messages": int,
    "ingest_batch_max_age_ms": float,
    "ingest_batch_max_bytes": int,
    "ingest_batches_in_flight": int,
    "ingest_max_payload_bytes": int,
    "ingest_store_retry_max_s": float,
    "spool_file": _optional_path,
    "spool_max_bytes": int,
    "units_file": _optional_path,
    "units_reload_s": float,
    "accept_unknown_units": _bool,
    "data_dir": Path,
    "log_level": _level,
    "shutdown_timeout_s": float,
    "sites_file": _optional_path,
    "detect_interval_ms": float,
}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(f"{path}: unknown table [{key}]; known: {', '.join(SECTIONS)}")
            for sub, v in value.items():
                name = sub if key in _UNPREFIXED_SECTIONS else f"{key}_{sub}"
                values[_toml_setting(path, name, f"[{key}] {sub}")] = v
        else:
            values[_toml_setting(path, key, key)] = value
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            out[name] = _coerce(name, value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {name}: {exc}") from exc
    return out


def _toml_setting(path: Path, name: str, shown: str) -> str:
    if name not in FIELDS:
        raise ConfigError(f"{path}: unknown setting {shown!r} (see docs/configuration.md)")
    return name


def _coerce(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return FIELDS[name](value)
    default = next(f.default for f in dataclasses.fields(Settings) if f.name == name)
    if isinstance(default, bool) or name == "accept_unknown_units":
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise TypeError(f"expected a number or string, got {value!r}")
    if isinstance(value, int | float) and (isinstance(default, int | float) or default is None):
        return type(default)(value) if default is not None else int(value)
    raise TypeError(f"expected a string, got {value!r}")
