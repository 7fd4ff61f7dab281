"""Builders of engine records for the console tests (hub and server)."""

from __future__ import annotations

import json
from typing import Any

from alerts.records import AlertStatus, AlertVersion
from schedule.stop_events import RouteProgress, VehiclePosition
from tests.alerts_helpers import DATE, stop, utc
from ws.protocol import SiteInfo

T0 = utc("09:00")
S = 1_000_000


def alert(
    n: int,
    version: int = 1,
    *,
    status: AlertStatus = "open",
    assignee: str = "D01",
    site: str | None = None,
) -> AlertVersion:
    site = site or f"S{n:04d}"
    return AlertVersion(
        id=f"stop/{DATE}/{site}",
        version=version,
        subject="stop",
        kind="late",
        severity="major",
        status=status,
        summary=f"{site} late",
        facts=(("eta_us", T0), ("minutes", 5.0)),
        assignee=assignee,
        escalation_level=0,
        hops=(),
        acknowledged_by=None,
        acknowledged_at_us=None,
        comments=(),
        detected_late=False,
        opened_at_us=T0,
        change="raised" if version == 1 else "updated",
        by="engine:tick",
        at_us=T0 + version * S,
    )


def pos(vehicle: str, t_s: float, lon: float = 37.6, lat: float = 55.75) -> VehiclePosition:
    return VehiclePosition(
        vehicle_id=vehicle, t_us=T0 + round(t_s * S), lon=lon, lat=lat, speed_kmh=30.0
    )


def site(n: int, lon: float = 37.6, lat: float = 55.75) -> SiteInfo:
    return SiteInfo(
        site_id=f"S{n:04d}",
        client_id=f"C{n:04d}",
        name=f"Site {n}",
        lat=lat,
        lon=lon,
        radius_m=50.0,
        polygon=None,
    )


def route(vehicle: str, *sites: str) -> RouteProgress:
    return RouteProgress(
        route_id=f"{DATE}/{vehicle}",
        vehicle_id=vehicle,
        service_date=DATE,
        stop_ids=tuple(f"{DATE}/{s}" for s in sites),
        eta_us=tuple(T0 + k * 600 * S for k in range(len(sites))),
        behind_s=0.0,
        at_us=T0,
    )


class ConsoleView:
    """What a console holds after applying frames: the page's fold, for the tests."""

    def __init__(self) -> None:
        self.alerts: dict[str, int] = {}
        self.stops: dict[str, str] = {}
        self.vehicles: dict[str, Any] = {}
        self.last_seq = 0
        self.frames: list[dict[str, Any]] = []

    def apply(self, text: str) -> dict[str, Any]:
        m = json.loads(text)
        self.frames.append(m)
        if "seq" in m:
            if m["type"] == "snapshot":
                assert m["seq"] >= self.last_seq
            else:
                assert m["seq"] > self.last_seq, (m["type"], m["seq"], self.last_seq)
            self.last_seq = m["seq"]
        if m["type"] == "snapshot":
            self.alerts = {a["alert_id"]: a["version"] for a in m["alerts"]}
            self.stops = {s["stop_id"]: s["state"] for s in m["stops"]}
            self.vehicles = {v["vehicle_id"]: v for v in m["vehicles"]}
        elif m["type"] == "alert":
            self.alerts[m["alert"]["alert_id"]] = m["alert"]["version"]
        elif m["type"] == "stop":
            self.stops[m["stop"]["stop_id"]] = m["stop"]["state"]
        elif m["type"] == "positions":
            for v in m["vehicles"]:
                self.vehicles[v["vehicle_id"]] = v
        return dict(m)


__all__ = ["DATE", "T0", "ConsoleView", "alert", "pos", "route", "site", "stop", "utc"]
