"""Wiring of the dispatcher console: hub + websocket endpoint + auth + metrics, in one call.

The service calls :func:`register_console` once, after building the live engine and the web
shell and **before** ``LiveEngine.restore_now`` (so the hub folds the restored state in like
any other output).  Everything the console needs flows through the engine's publishers; the
console never reads the engine's state from another task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from alerts.roster import Roster
from fleetwatch.auth import Authenticator
from fleetwatch.live_engine import LiveEngine
from fleetwatch.web import WebShell
from geofence.sites import Site
from store.errors import StoreError
from store.tracks import ConnectionSource, StoredTrack, load_track
from ws.hub import Hub, HubLimits
from ws.protocol import SiteInfo
from ws.server import ConsoleServer, ServerOptions
from ws.track import TrackLoader, TrackOptions, Tracks, TrackStoreError

CONSOLE_PATH = "/ws/console"


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def register_console(
    shell: WebShell,
    live_engine: LiveEngine,
    *,
    tokens: Authenticator,
    sites: Sequence[Site] = (),
    roster: Roster | None = None,
    clock_us: Callable[[], int] = wall_clock_us,
    limits: HubLimits | None = None,
    options: ServerOptions | None = None,
    lang_default: str = "ru",
    track_source: ConnectionSource | None = None,
    track_options: TrackOptions | None = None,
) -> ConsoleServer:
    """Serve the console websocket at ``/ws/console`` on *shell*, fed by *live_engine*.

    ``tokens``: who may connect (``fleetwatch.auth.load_tokens(FLEETWATCH_TOKENS_FILE)``);
    token user names are the roster's dispatcher ids (the desk records them as ``by``).
    ``roster``: which vehicles are whose (the ``mine`` subscription).
    ``track_source``: a pool on the store for the ``track`` request (ws/track.py); None: the
    hub's memory track only (answers say ``unavailable``).
    """
    by_user: dict[str, frozenset[str]] = {}
    if roster is not None:
        by_user = {d.id: frozenset(d.vehicles) for d in roster.dispatchers}
    hub = Hub(
        sites=[SiteInfo.of(s) for s in sites],
        limits=limits,
        vehicles_of=lambda user: by_user.get(user, frozenset()),
        lang_default=lang_default,
    )
    tracks = Tracks(
        hub,
        load=None if track_source is None else store_track_loader(track_source),
        clock_us=clock_us,
        options=track_options,
    )
    server = ConsoleServer(
        hub,
        authenticate=tokens.verify,
        submit=live_engine.submit,
        clock_us=clock_us,
        options=options,
        tracks=tracks,
    )
    live_engine.add_publisher(server.publish)
    shell.add_websocket_route(CONSOLE_PATH, server.endpoint)
    shell.registry.register(ConsoleCollector(server))
    return server


def store_track_loader(source: ConnectionSource, *, timeout_ms: int = 3000) -> TrackLoader:
    """The ``track`` request's loader over the store (store/tracks.py): the store's errors
    become :class:`TrackStoreError`, which the console answers from memory."""

    async def load(
        vehicle_id: str, *, until_us: int, minutes: int, max_points: int
    ) -> StoredTrack | None:
        try:
            return await load_track(
                source, vehicle_id, until_us=until_us, minutes=minutes,
                max_points=max_points, timeout_ms=timeout_ms,
            )  # fmt: skip
        except StoreError as exc:
            raise TrackStoreError(str(exc)) from exc

    return load


class ConsoleCollector(Collector):
    """``fleetwatch_console_*`` metrics, read from the hub and the endpoint at scrape time."""

    def __init__(self, server: ConsoleServer) -> None:
        self.server = server

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        st = self.server.hub.statistics()
        c = self.server.counts
        yield GaugeMetricFamily(
            "fleetwatch_console_connected", "Consoles connected now", value=st.consoles
        )
        yield GaugeMetricFamily(
            "fleetwatch_console_queue_max",
            "Longest per-console queue of undelivered messages (bound: queue_messages)",
            value=st.queued_max,
        )
        yield GaugeMetricFamily("fleetwatch_console_seq", "The hub's sequence number", st.seq)
        for name, doc, value in (
            ("messages", "Alert/stop/route/vehicle/status messages published", st.messages),
            ("overflows", "Console queues that overflowed (resync follows)", st.overflows),
            ("resyncs", "resync + snapshot sent to a console", st.resyncs),
            ("resumes", "Reconnects resumed from the replay buffer", st.replay_resumes),
            ("resume_misses", "Reconnects too old to resume (resync)", st.replay_misses),
            ("position_frames", "positions frames built", st.position_frames_built),
            ("position_frames_shared", "positions frames reused", st.position_frames_shared),
            ("bad_records", "Engine records the hub could not use", st.bad_records),
            ("connects", "Consoles accepted", c.connects),
            ("frames_sent", "Frames written to consoles", c.frames_sent),
            ("bytes_sent", "Characters written to consoles", c.bytes_sent),
            ("frames_prepared", "Of the frames, written as prepared frames", c.frames_prepared),
            (
                "prepared_bytes",
                "Bytes of prepared frames written (framed, compressed)",
                c.prepared_bytes,
            ),
            ("invalid_messages", "Console messages refused as invalid", c.invalid_messages),
            ("bad_frames", "Frames that closed the connection (not JSON, too large)", c.bad_frames),
            ("send_timeouts", "Consoles closed because their socket took nothing", c.send_timeouts),
            ("too_slow", "Consoles closed with 4408 (ignored resync)", c.too_slow),
        ):
            yield CounterMetricFamily(f"fleetwatch_console_{name}", doc, value=value)
        tracks = CounterMetricFamily(
            "fleetwatch_console_track_answers",
            "track requests answered, by source (store / memory) and error "
            "(none / store_error / unavailable)",
            labels=["source", "error"],
        )
        tc = self.server.tracks.counts
        tracks.add_metric(["store", "none"], tc.store)
        tracks.add_metric(["memory", "none"], tc.memory - sum(tc.by_error.values()))
        for err, n in sorted(tc.by_error.items()):
            tracks.add_metric(["memory", err], n)
        yield tracks
        refused = CounterMetricFamily(
            "fleetwatch_console_refused_connections",
            "Connections refused, by reason",
            labels=["reason"],
        )
        refused.add_metric(["unauthorized"], c.refused_auth)
        refused.add_metric(["forbidden"], c.refused_forbidden)
        refused.add_metric(["full"], c.refused_full)
        yield refused
        commands = CounterMetricFamily(
            "fleetwatch_console_commands", "Console commands received, by type", labels=["type"]
        )
        for kind, n in sorted(c.commands.items()):
            commands.add_metric([kind], n)
        yield commands
        refusals = CounterMetricFamily(
            "fleetwatch_console_command_refusals", "Commands refused, by code", labels=["code"]
        )
        for code, n in sorted(c.refusals.items()):
            refusals.add_metric([code], n)
        yield refusals
