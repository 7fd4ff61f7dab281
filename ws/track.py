"""The console's ``track`` request: a vehicle's last minutes, from the store, else from memory.

The hub keeps a thinned track per vehicle in memory (ws/hub.py ``_Track``), but only since the
process started: after a restart, or for a stretch the engine did not see, it is empty or
short.  The store has every fix.  So a ``track`` request is answered from the store
(store/tracks.py, through an injected loader: ``ws`` does not import ``store``), and from the
hub's memory when the store cannot answer, and the answer says which:

=========  ===============  =====================================================================
source     error            meaning
=========  ===============  =====================================================================
store      null             the store's fixes, thinned to ``max_points``, and its stops/visits
memory     null             the store holds no fix of the vehicle (yet): what this process saw
memory     ``store_error``  the store failed or timed out (``message`` says how): what this
                            process saw, possibly nothing
memory     ``unavailable``  no store is configured: only what this process saw
=========  ===============  =====================================================================

A vehicle neither the hub nor the store knows is refused with ``unknown_id`` (when the store
failed, we cannot tell: the answer is an empty memory track with ``store_error``).

Bounded: one request per console at a time (the endpoint's reader awaits it), each store read
under ``timeout_s`` (and a statement timeout in the database), on a small pool of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from core.fixes import iso_utc
from ws.hub import Hub
from ws.protocol import TrackCmd, dumps, reply_error, reply_ok

log = logging.getLogger(__name__)

US = 1_000_000
T = TypeVar("T")
TrackError = Literal["store_error", "unavailable"]


class TrackStoreError(Exception):
    """The store could not answer (down, timed out, not migrated): the memory track is used.
    The wiring turns the store's own errors into this one."""


class StoredStop(Protocol):
    @property
    def stop_id(self) -> str: ...
    @property
    def site_id(self) -> str | None: ...
    @property
    def start_us(self) -> int: ...
    @property
    def end_us(self) -> int | None: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


class StoredVisit(Protocol):
    @property
    def visit_id(self) -> str: ...
    @property
    def site_id(self) -> str: ...
    @property
    def arrival_us(self) -> int: ...
    @property
    def departure_us(self) -> int | None: ...


class StoredTrack(Protocol):
    """What the loader returns (``store.tracks.StoredTrack``)."""

    @property
    def since_us(self) -> int: ...
    @property
    def until_us(self) -> int: ...
    @property
    def fixes(self) -> int: ...
    @property
    def t_us(self) -> Sequence[int]: ...
    @property
    def lat(self) -> Sequence[float]: ...
    @property
    def lon(self) -> Sequence[float]: ...
    @property
    def speed_kmh(self) -> Sequence[float]: ...
    @property
    def stops(self) -> Sequence[StoredStop]: ...
    @property
    def visits(self) -> Sequence[StoredVisit]: ...


class TrackLoader(Protocol):
    """Read one vehicle's track ending at its newest fix at or before *until_us*; None when
    the store holds no such fix; raises :class:`TrackStoreError` when it cannot answer."""

    async def __call__(
        self, vehicle_id: str, *, until_us: int, minutes: int, max_points: int
    ) -> StoredTrack | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackOptions:
    """Defaults documented in docs/console.md."""

    #: the whole store read; beyond it the memory track, with ``store_error``
    timeout_s: float = 5.0


@dataclass(slots=True)
class TrackCounts:
    """What the track service answered (read by the metrics collector)."""

    store: int = 0
    memory: int = 0
    store_errors: int = 0
    unknown: int = 0
    by_error: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackAnswer:
    """The frames for the console, in order (the ``track`` frame, then the ``reply``), and the
    refusal code when the request was refused."""

    frames: tuple[str, ...]
    refusal: str | None = None


class Tracks:
    """Answers ``track`` requests; see the module docstring."""

    def __init__(
        self,
        hub: Hub,
        *,
        load: TrackLoader | None,
        clock_us: Callable[[], int],
        options: TrackOptions | None = None,
    ) -> None:
        self.hub = hub
        self._load = load
        self._clock_us = clock_us
        self.options = options or TrackOptions()
        self.counts = TrackCounts()

    async def answer(self, cmd: TrackCmd) -> TrackAnswer:
        hub = self.hub
        v = hub.vehicles.get(cmd.vehicle_id)
        if self._load is None:
            return self._memory(cmd, error="unavailable", message="no store is configured")
        until_us = v.t_us if v is not None and v.t_us else self._clock_us()
        try:
            async with asyncio.timeout(self.options.timeout_s):
                stored = await self._load(
                    cmd.vehicle_id, until_us=until_us, minutes=cmd.minutes,
                    max_points=cmd.max_points,
                )  # fmt: skip
        except TrackStoreError as exc:
            return self._store_failed(cmd, str(exc))
        except TimeoutError:
            why = f"the store did not answer in {self.options.timeout_s} s"
            return self._store_failed(cmd, why)
        if stored is None:
            return self._memory(cmd, error=None, message=None)
        self.counts.store += 1
        frame = _stored_json(cmd, stored)
        return TrackAnswer(frames=(dumps(frame), _ok(cmd, frame)))

    def _store_failed(self, cmd: TrackCmd, message: str) -> TrackAnswer:
        self.counts.store_errors += 1
        log.warning("track of %s: the store failed (%s); answering from memory",
                    cmd.vehicle_id, message)  # fmt: skip
        return self._memory(cmd, error="store_error", message=message, store_failed=True)

    def _memory(
        self,
        cmd: TrackCmd,
        *,
        error: TrackError | None,
        message: str | None,
        store_failed: bool = False,
    ) -> TrackAnswer:
        """The hub's memory track; an unknown vehicle is refused, unless the store failed (it
        may know the vehicle: an empty track says so instead)."""
        mem = self.hub.track_json(cmd.vehicle_id, cmd.minutes, cmd.id)
        if mem is None:
            if not store_failed:
                self.counts.unknown += 1
                return TrackAnswer(
                    frames=(reply_error(cmd.id, "unknown_id", f"no vehicle {cmd.vehicle_id!r}"),),
                    refusal="unknown_id",
                )
            mem = {"type": "track", "id": cmd.id, "vehicle_id": cmd.vehicle_id,
                   "points": [], "stops": []}  # fmt: skip
        self.counts.memory += 1
        if error is not None:
            self.counts.by_error[error] = self.counts.by_error.get(error, 0) + 1
        points: list[dict[str, Any]] = mem["points"]
        fixes = len(points)
        points = thin(points, cmd.max_points)
        frame = {
            "type": "track",
            "id": cmd.id,
            "vehicle_id": cmd.vehicle_id,
            "minutes": cmd.minutes,
            "source": "memory",
            "error": error,
            "message": message,
            "since": points[0]["t"] if points else None,
            "until": points[-1]["t"] if points else None,
            "fixes": fixes,
            "points": points,
            "stops": mem["stops"],
            "visits": [],
        }
        return TrackAnswer(frames=(dumps(frame), _ok(cmd, frame)))


def thin(points: list[T], max_points: int) -> list[T]:
    """At most *max_points* of *points*, evenly spaced, keeping the first and the last (the
    truck's newest place)."""
    n = len(points)
    if n <= max_points:
        return points
    step = (n - 1) / (max_points - 1)
    return [points[round(i * step)] for i in range(max_points)]


def _ok(cmd: TrackCmd, frame: dict[str, Any]) -> str:
    return reply_ok(
        cmd.id, {"points": len(frame["points"]), "source": frame["source"], "error": frame["error"]}
    )


def _stored_json(cmd: TrackCmd, st: StoredTrack) -> dict[str, Any]:
    points = [
        {
            "t": iso_utc(t),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": round(sp, 1) if sp == sp else None,  # NaN: the unit gave none
        }
        for t, lat, lon, sp in zip(st.t_us, st.lat, st.lon, st.speed_kmh, strict=True)
    ]
    return {
        "type": "track",
        "id": cmd.id,
        "vehicle_id": cmd.vehicle_id,
        "minutes": cmd.minutes,
        "source": "store",
        "error": None,
        "message": None,
        "since": iso_utc(st.since_us),
        "until": iso_utc(st.until_us),
        "fixes": st.fixes,
        "points": points,
        "stops": [
            {
                "stop_id": s.stop_id,
                "site_id": s.site_id,
                "start": iso_utc(s.start_us),
                "end": None if s.end_us is None else iso_utc(s.end_us),
                "lat": round(s.lat, 6),
                "lon": round(s.lon, 6),
            }
            for s in st.stops
        ],
        "visits": [
            {
                "visit_id": x.visit_id,
                "site_id": x.site_id,
                "arrival": iso_utc(x.arrival_us),
                "departure": None if x.departure_us is None else iso_utc(x.departure_us),
            }
            for x in st.visits
        ],
    }
