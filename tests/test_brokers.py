"""One broker launcher (fleetwatch.brokers) for the demo and the tests: the shipped config."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from fleetwatch import brokers, embedded
from fleetwatch.brokers import SHIPPED_CONF, private_mosquitto_conf
from tests.support import broker as test_broker

LIMITS = (
    "persistence",
    "autosave_interval",
    "autosave_on_changes",
    "max_queued_messages",
    "max_queued_bytes",
    "max_inflight_messages",
    "max_packet_size",
    "queue_qos0_messages",
    "persistent_client_expiration",
)


def settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value
    return out


def test_private_brokers_keep_every_limit_of_the_shipped_config(tmp_path: Path) -> None:
    shipped = settings(SHIPPED_CONF.read_text())
    private = settings(private_mosquitto_conf(18830, tmp_path))
    for key in LIMITS:
        assert private[key] == shipped[key], key
    assert private["listener"] == "18830 127.0.0.1"
    assert private["persistence_location"] == f"{tmp_path}/"
    assert private["allow_anonymous"] == "true"
    assert "password_file" not in private


def test_with_a_password_file_and_acl_it_is_the_shipped_auth(tmp_path: Path) -> None:
    conf = settings(
        private_mosquitto_conf(
            18831, tmp_path, password_file=tmp_path / "passwd", acl_file=tmp_path / "acl"
        )
    )
    assert conf["allow_anonymous"] == "false"
    assert conf["password_file"] == str(tmp_path / "passwd")
    assert conf["acl_file"] == str(tmp_path / "acl")


def test_the_demo_and_the_fixtures_use_the_same_launcher() -> None:
    assert embedded.make_private_broker is brokers.make_private_broker
    assert test_broker.MosquittoBroker is brokers.MosquittoBroker
    assert test_broker.private_mosquitto_conf is private_mosquitto_conf


def test_a_broker_whose_port_was_taken_meanwhile_fails_to_start(tmp_path: Path) -> None:
    """Between free_port() and the broker's bind another server can take the port; a bare
    connect would then succeed against that stranger and the test would talk to it."""
    if brokers.mosquitto_executable() is None:
        pytest.fail("mosquitto is needed for this test")
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        assert brokers._owns_listener(os.getpid(), port) is True
        broker = brokers.MosquittoBroker(tmp_path / "b", port=port)
        with pytest.raises(brokers.BrokerStartError, match="exited"):
            broker.start()
        broker.kill()
    ours = brokers.MosquittoBroker(tmp_path / "c")
    ours.start()
    try:
        assert ours.proc is not None
        assert brokers._owns_listener(ours.proc.pid, ours.port) is True
        assert brokers._owns_listener(os.getpid(), ours.port) is False
    finally:
        ours.kill()
