"""Settings: precedence, parsing, refusals, secrets, and the documentation page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwatch.config import FIELDS, ConfigError, Settings, env_name, redact_url

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_defaults_need_no_environment() -> None:
    s = Settings.load(env={})
    assert s.mqtt_url is None
    assert s.database_url is None
    assert s.mqtt_client_id == "fleetwatch-ingest"
    assert s.ingest_batch_max_messages == 2000
    assert s.ingest_batch_max_age_ms == 100.0


def test_precedence_defaults_file_env_command_line(tmp_path: Path) -> None:
    cfg = tmp_path / "fw.toml"
    cfg.write_text(
        'log_level = "warning"\n'
        "[mqtt]\nurl = 'mqtt://file-host:1883'\nclient_id = 'from-file'\n"
        "[http]\nport = 9000\n"
        "[ingest]\nbatch_max_messages = 500\n"
    )
    env = {
        "FLEETWATCH_CONFIG": str(cfg),
        "FLEETWATCH_MQTT_URL": "mqtt://env-host:1883",
        "FLEETWATCH_INGEST_BATCH_MAX_MESSAGES": "700",
    }
    s = Settings.load(env=env, overrides={"ingest_batch_max_messages": 900, "http_port": None})
    assert s.mqtt_url == "mqtt://env-host:1883"  # env beats file
    assert s.mqtt_client_id == "from-file"  # file beats default
    assert s.http_port == 9000  # None override = not given
    assert s.ingest_batch_max_messages == 900  # command line beats env
    assert s.log_level == "WARNING"


def test_explicit_config_file_wins_over_the_variable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("[database]\nurl = 'postgresql://a/db'\n")
    b.write_text("[database]\nurl = 'postgresql://b/db'\n")
    s = Settings.load(env={"FLEETWATCH_CONFIG": str(a)}, config_file=b)
    assert s.database_url == "postgresql://b/db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLEETWATCH_HTTP_PORT": "eighty"}, "FLEETWATCH_HTTP_PORT"),
        ({"FLEETWATCH_INGEST_BATCH_MAX_MESSAGES": "0"}, "FLEETWATCH_INGEST_BATCH_MAX_MESSAGES"),
        ({"FLEETWATCH_ACCEPT_UNKNOWN_UNITS": "maybe"}, "FLEETWATCH_ACCEPT_UNKNOWN_UNITS"),
        ({"FLEETWATCH_LOG_LEVEL": "chatty"}, "FLEETWATCH_LOG_LEVEL"),
        ({"FLEETWATCH_MQTT_SESSION_EXPIRY_S": "60"}, "reliability promise 2"),
        ({"FLEETWATCH_MQTT_CLIENT_ID": ""}, "FLEETWATCH_MQTT_CLIENT_ID"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(env=env)


def test_unknown_file_keys_are_refused_not_ignored(tmp_path: Path) -> None:
    cfg = tmp_path / "fw.toml"
    cfg.write_text("[mqtt]\nurll = 'mqtt://x'\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load(env={}, config_file=cfg)
    cfg.write_text("[mqqt]\nurl = 'mqtt://x'\n")
    with pytest.raises(ConfigError, match="unknown table"):
        Settings.load(env={}, config_file=cfg)
    cfg.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(env={}, config_file=cfg)


def test_http_can_be_turned_off() -> None:
    assert Settings.load(env={"FLEETWATCH_HTTP_PORT": "off"}).http_port is None
    assert Settings.load(env={"FLEETWATCH_HTTP_PORT": "0"}).http_port == 0


def test_persistent_session_settings_cannot_lose_messages() -> None:
    """Reliability #2: a fixed client id and a session that outlives the outage."""
    s = Settings.load(env={})
    assert s.mqtt_client_id == Settings.load(env={}).mqtt_client_id  # not random per start
    assert s.mqtt_session_expiry_s >= 15 * 60  # outlives the 15 min database outage


# A marker prefix keeps the secret from matching ordinary words of the repr by chance
# (a 4-letter secret "unit" is in every Settings repr), while the tail stays arbitrary.
_SECRET_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!$&()*"
secret_st = st.text(alphabet=_SECRET_CHARS, min_size=4, max_size=20).map(lambda t: "Zq9" + t)


@given(secret_st)
def test_secrets_never_appear_in_repr_or_redacted(secret: str) -> None:
    s = Settings(
        mqtt_url=f"mqtt://fleetwatch:{secret}@broker.example:1883",
        database_url=f"postgresql://fw:{secret}@db.example:5432/fw",
    )
    assert secret not in repr(s)
    assert secret not in str(s.redacted())
    assert "broker.example:1883" in repr(s)


def test_redact_handles_libpq_keyword_strings() -> None:
    assert "hunter2" not in redact_url("host=db user=fw password=hunter2 dbname=fw")
    assert "hunter2" not in redact_url("postgresql://fw@db/fw?password=hunter2")


def test_bad_env_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"FLEETWATCH_HTTP_PORT": "x", "FLEETWATCH_MQTT_URL": "mqtt://u:pw@h"})
    assert "pw@" not in str(info.value)


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(FLEETWATCH_[A-Z0-9_]+)`", text))
    wanted = {env_name(name) for name in FIELDS} | {"FLEETWATCH_CONFIG"}
    assert wanted <= documented, f"undocumented: {sorted(wanted - documented)}"


def test_every_problem_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    cfg = tmp_path / "fw.toml"
    cfg.write_text("[mqtt]\nbogus = 1\n[nope]\nx = 1\n")
    env = {
        "FLEETWATCH_CONFIG": str(cfg),
        "FLEETWATCH_HTTP_PORT": "eighty",
        "FLEETWATCH_INGEST_BATCH_MAX_MESSAGES": "0",
        "FLEETWATCH_MQTT_URL": "http://u:hunter2@broker",
        "FLEETWATCH_DATABASE_URL": "notadsn",
        "FLEETWATCH_SITES_REGION": "1,2",
    }
    with pytest.raises(ConfigError) as info:
        Settings.load(env=env)
    problems = info.value.problems
    named = [
        "[mqtt] bogus", "[nope]", "FLEETWATCH_HTTP_PORT", "FLEETWATCH_INGEST_BATCH_MAX_MESSAGES",
        "FLEETWATCH_MQTT_URL", "FLEETWATCH_DATABASE_URL", "FLEETWATCH_SITES_REGION",
    ]  # fmt: skip
    for name in named:
        assert sum(name in p for p in problems) == 1, (name, problems)
    assert len(problems) == len(named)
    assert all("\n" not in p for p in problems)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://broker:1883", "scheme 'http' is not mqtt"),
        ("mqtts://broker:8883", "TLS is not supported"),
        ("mqtt://u:hunter2@host:notaport", "port is not a number"),
        ("mqtt://host:70000", "port is not a number"),
        ("mqtt://:1883", "no host"),
    ],
)
def test_bad_mqtt_urls_are_one_line_naming_setting_value_and_fix(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(mqtt_url=url)
    (line,) = info.value.problems
    assert line.startswith("FLEETWATCH_MQTT_URL=")
    assert says in line
    assert "use mqtt://" in line
    assert "hunter2" not in line


@pytest.mark.parametrize(
    "dsn",
    ["notadsn", "mysql://h/db", "postgresql://u:hunter2@h:port/db", "host=h password hunter2"],
)
def test_bad_database_urls_are_one_line_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(database_url=dsn)
    (line,) = info.value.problems
    assert line.startswith("FLEETWATCH_DATABASE_URL=")
    assert "use postgresql://" in line
    assert "hunter2" not in line


def test_good_urls_and_regions_pass() -> None:
    Settings(mqtt_url="mqtt://u:p@h:1883", database_url="postgresql://u:p@h:5432/db")
    Settings(database_url="host=h dbname=db user=u password=p", sites_region="23.5,56.8,24.5,57.1")
    with pytest.raises(ConfigError, match="longitude first"):
        Settings(sites_region="56.8,23.5,57.1,124.5")
