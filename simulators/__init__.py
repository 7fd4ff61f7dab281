"""Simulators: a city of mat sites, a fleet driving its day plans, and load generation.

They stand outside fleetwatch's flow (they play the GPS units), so nothing in the flow imports
them; only the ``fleetwatch`` wiring does (``fleetwatch simulate``, ``fleetwatch loadtest``).

- ``city``, ``roads``, ``plans``, ``drive``, ``gps``: the world, sans-I/O and vectorised;
- ``nmea_writer``: batch RMC/GGA bytes, identical to ``ingest.nmea_encode``;
- ``scenario``, ``truth``: writing a scenario directory and its answer key;
- ``formats``: readers of those files (docs/formats.md);
- ``publish``, ``mqtt_wire``, ``loadtest``: the MQTT shell for live publishing and load tests.
"""
