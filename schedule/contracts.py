"""Contract schedules per site: is site S due on date D, and its window as UTC µs.

The sites file carries each contract (docs/formats.md, ``properties.schedule``): ISO weekdays, a
window in *local* time with its IANA zone, and optionally ``every_weeks`` with an
``anchor_date`` (serve every N-th ISO week, counting from the anchor's week), ``closed`` dates
(holidays: the site is not due, so a plan that holds it is named at import), and the site's
``service_min``.  Windows are local because the client signs "09:00–12:30 on Mondays": the UTC
instants move with daylight-saving time, so they are computed per date, never stored.

:class:`SiteContract` is what the schedule board knows about a site: where it is (for ETAs),
whose it is and when it is due.  Pure values; no clock is read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from core.fixes import datetime_to_us
from geofence.sites import Site, schedule_problem


class ContractError(ValueError):
    """A contract schedule that cannot be used (the message says which key and why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Contract:
    """A site's service contract: which local dates and which local window."""

    weekdays: frozenset[int]
    window_start_min: int  # minutes after local midnight
    window_end_min: int
    tz: str
    every_weeks: int = 1
    anchor_date: dt.date | None = None
    closed: frozenset[dt.date] = frozenset()

    def __post_init__(self) -> None:
        if not self.weekdays or not all(1 <= d <= 7 for d in self.weekdays):
            raise ContractError(f"weekdays must be ISO weekdays 1..7, got {sorted(self.weekdays)}")
        if not 0 <= self.window_start_min < self.window_end_min <= 24 * 60:
            raise ContractError(
                f"window {self.window_start_min}..{self.window_end_min} min must be a "
                "non-empty span within the local day"
            )
        if self.every_weeks < 1 or (self.every_weeks > 1 and self.anchor_date is None):
            raise ContractError("every_weeks must be >= 1; > 1 needs an anchor_date")
        ZoneInfo(self.tz)  # raises for an unknown zone

    def is_due(self, day: dt.date) -> bool:
        """Is the site due on the local date ``day``?"""
        if day.isoweekday() not in self.weekdays or day in self.closed:
            return False
        if self.every_weeks > 1 and self.anchor_date is not None:
            monday = day - dt.timedelta(days=day.isoweekday() - 1)
            anchor_monday = self.anchor_date - dt.timedelta(days=self.anchor_date.isoweekday() - 1)
            weeks = (monday - anchor_monday).days // 7
            return weeks % self.every_weeks == 0
        return True

    def window_us(self, day: dt.date) -> tuple[int, int]:
        """The window on ``day`` as UTC µs (local wall time through the site's zone)."""
        return local_minutes_us(day, self.window_start_min, self.tz), local_minutes_us(
            day, self.window_end_min, self.tz
        )


def local_minutes_us(day: dt.date, minutes: int, tz: str) -> int:
    """UTC µs of ``minutes`` after local midnight of ``day`` in ``tz`` (24:00 = next midnight)."""
    base = dt.datetime.combine(day, dt.time(0, 0), tzinfo=ZoneInfo(tz))
    if minutes >= 24 * 60:
        nxt = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=ZoneInfo(tz))
        return datetime_to_us(nxt) + (minutes - 24 * 60) * 60_000_000
    h, m = divmod(minutes, 60)
    return datetime_to_us(base.replace(hour=h, minute=m))


def local_day_us(day: dt.date, tz: str) -> tuple[int, int]:
    """[start, end) of the local date ``day`` in UTC µs."""
    return local_minutes_us(day, 0, tz), local_minutes_us(day, 24 * 60, tz)


def local_date_of(t_us: int, tz: str) -> dt.date:
    return dt.datetime.fromtimestamp(t_us / 1e6, tz=ZoneInfo(tz)).date()


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteContract:
    """What the schedule board knows of a site: place (for ETAs), client, contract, service."""

    site_id: str
    client_id: str | None
    lon: float
    lat: float
    contract: Contract | None  # None: no contract in the sites file (never due)
    service_min: float = 10.0
    tz: str = "UTC"

    def is_due(self, day: dt.date) -> bool:
        return self.contract is not None and self.contract.is_due(day)


def _hhmm(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def contract_from_schedule(schedule: Mapping[str, Any]) -> Contract:
    """A :class:`Contract` from a sites-file ``schedule`` object (validated here as well)."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in schedule.items()}
    problem = schedule_problem(plain)
    if problem:
        raise ContractError(f"schedule {dict(schedule)!r}: {problem}")
    anchor = schedule.get("anchor_date")
    return Contract(
        weekdays=frozenset(int(d) for d in schedule["weekdays"]),
        window_start_min=_hhmm(str(schedule["window_start"])),
        window_end_min=_hhmm(str(schedule["window_end"])),
        tz=str(schedule["tz"]),
        every_weeks=int(schedule.get("every_weeks", 1)),
        anchor_date=dt.date.fromisoformat(anchor) if anchor else None,
        closed=frozenset(dt.date.fromisoformat(d) for d in schedule.get("closed", ())),
    )


#: service minutes assumed when a site states none (the simulator's are 5–15)
DEFAULT_SERVICE_MIN = 10.0


def site_contracts(sites: Iterable[Site], *, default_tz: str = "UTC") -> dict[str, SiteContract]:
    """The board's site table from loaded geofence sites (``representative_point`` of the fence
    as the place: for a circle its centre, for a polygon a point inside it)."""
    out: dict[str, SiteContract] = {}
    for s in sites:
        contract = contract_from_schedule(s.schedule) if s.schedule is not None else None
        pt = s.geometry if s.is_circle else s.geometry.representative_point()
        out[s.site_id] = SiteContract(
            site_id=s.site_id,
            client_id=s.client_id,
            lon=float(pt.x),
            lat=float(pt.y),
            contract=contract,
            service_min=float(s.service_min) if s.service_min is not None else DEFAULT_SERVICE_MIN,
            tz=contract.tz if contract is not None else default_tz,
        )
    return out


def due_sites(sites: Mapping[str, SiteContract], day: dt.date) -> list[str]:
    """Ids of the sites due on ``day`` by contract, sorted."""
    return sorted(sid for sid, s in sites.items() if s.is_due(day))
