"""MQTT broker fixture: a private Mosquitto on a free port (owned by the ingest work)."""
