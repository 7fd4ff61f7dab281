"""MQTT settings, URL parsing, topic rules and the broker password-file generator."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.mqtt import (
    BadTopic,
    MqttSettings,
    MqttUrlError,
    parse_mqtt_url,
    unit_id_from_topic,
)
from tests.support.broker import SHIPPED_CONF_DIR, load_mkpasswd

unit_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True)


@given(unit_ids)
def test_unit_id_round_trips_through_the_topic(unit: str) -> None:
    assert unit_id_from_topic(f"fleet/{unit}/nmea") == unit


@pytest.mark.parametrize(
    "topic",
    [
        "fleet//nmea",
        "fleet/u1/nmea/x",
        "fleet/u1",
        "other/u1/nmea",
        "fleet/u1/NMEA",
        "fleet/u 1/nmea",
        "fleet/" + "x" * 65 + "/nmea",
        "fleet/-u/nmea",
        "",
    ],
)
def test_bad_topics_raise_bad_topic(topic: str) -> None:
    with pytest.raises(BadTopic, match=r"fleet/<unit_id>/nmea|unit id"):
        unit_id_from_topic(topic)


def test_url_with_credentials_and_port() -> None:
    s = parse_mqtt_url("mqtt://ingest:p%40ss%3Aw@broker.local:1884")
    assert (s.host, s.port, s.username, s.password) == ("broker.local", 1884, "ingest", "p@ss:w")
    assert s.client_id == MqttSettings().client_id  # the rest from the defaults


def test_url_defaults_port_and_keeps_base_fields() -> None:
    base = MqttSettings(client_id="other", receive_maximum=100)
    s = parse_mqtt_url("mqtt://10.0.0.5", base)
    assert (s.host, s.port, s.username, s.password, s.client_id, s.receive_maximum) == (
        "10.0.0.5",
        1883,
        None,
        None,
        "other",
        100,
    )


@pytest.mark.parametrize(
    "url", ["mqtts://h:8883", "http://h", "mqtt://", "mqtt://h:99999", "mqtt://h/path"]
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(MqttUrlError):
        parse_mqtt_url(url)


def test_url_errors_do_not_show_the_password() -> None:
    with pytest.raises(MqttUrlError) as e:
        parse_mqtt_url("mqtt://u:topsecret@h/x")
    assert "topsecret" not in str(e.value)


def test_password_is_not_in_repr() -> None:
    s = MqttSettings(username="ingest", password="topsecret")
    assert "topsecret" not in repr(s)
    assert "ingest" in repr(s)


@pytest.mark.parametrize(
    "kw",
    [
        {"qos": 2},
        {"receive_maximum": 0},
        {"mqtt_version": 3},
        {"reconnect_min_s": 5.0, "reconnect_max_s": 1.0},
    ],
)
def test_invalid_settings_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        MqttSettings(**kw)  # type: ignore[arg-type]


# ---- deploy/mosquitto/mkpasswd.py ----------------------------------------------------------
mkpasswd = load_mkpasswd()


def test_hash_matches_mosquitto_passwd_format() -> None:
    # A line written by mosquitto_passwd 2.0.11 for user u1, password "secret".
    line = (
        "$7$101$CucfQpGnKgIpXyf2$Vy7A575zErT+PKK0hSPbXAXTbtFkc6fwU5E9mWk+EDykCOoswN1DYlF"
        "fbxE+j77syToH7r6WvrGuaMQADy7Ygw=="
    )
    salt = base64.b64decode("CucfQpGnKgIpXyf2")
    assert mkpasswd.hash_password("secret", salt=salt) == line
    assert len(base64.b64decode(line.split("$")[4])) == hashlib.sha512().digest_size


def test_units_csv_to_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    units = tmp_path / "units.csv"
    units.write_text("unit_id,password\nunit-a,pa\nunit-b,\n")
    out, creds = tmp_path / "passwd", tmp_path / "creds.csv"
    monkeypatch.setenv("FLEETWATCH_MQTT_PASSWORD", "ingest-pw")
    assert mkpasswd.main([str(units), "--out", str(out), "--credentials-out", str(creds)]) == 0
    users = [line.split(":", 1)[0] for line in out.read_text().splitlines()]
    assert users == ["fleetwatch", "unit-a", "unit-b"]
    assert out.stat().st_mode & 0o077 == 0
    rows = dict(line.split(",") for line in creds.read_text().splitlines()[1:])
    assert rows["unit-a"] == "pa"
    assert len(rows["unit-b"]) >= 20  # generated


@pytest.mark.parametrize(
    "csv_text", ["id\nx\n", "unit_id\nbad id\n", "unit_id\na\na\n", "unit_id\nfleetwatch\n"]
)
def test_bad_units_csv_is_refused(tmp_path: Path, csv_text: str) -> None:
    units = tmp_path / "units.csv"
    units.write_text(csv_text)
    with pytest.raises(mkpasswd.ProvisioningError):
        mkpasswd.read_units_csv(units)


def test_cli_needs_the_ingest_password(tmp_path: Path) -> None:
    units = tmp_path / "units.csv"
    units.write_text("unit_id,password\nu1,p\n")
    r = subprocess.run(
        [
            sys.executable,
            str(SHIPPED_CONF_DIR / "mkpasswd.py"),
            str(units),
            "--out",
            str(tmp_path / "pw"),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert r.returncode == 2
    assert "FLEETWATCH_MQTT_PASSWORD" in r.stderr
