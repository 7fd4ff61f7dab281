"""The CRM API over real HTTP (the web shell under uvicorn) and a real PostgreSQL (0005's
tables, written by tests/crm_world.py exactly as 0005 says writers must)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from typing import Any

import psycopg
import pytest

from fleetwatch.crm_api import decode_cursor, encode_cursor
from store import Store
from tests.crm_world import (
    ADMIN_TOKEN,
    CRM_TOKEN,
    DISPATCHER_TOKEN,
    OPS_TOKEN,
    exception_body,
    http_get,
    publish_alert,
    publish_exceptions,
    publish_stop_states,
    serving_crm,
)

pytestmark = pytest.mark.anyio
D1 = dt.date(2026, 11, 23)
D2 = dt.date(2026, 11, 24)


@pytest.fixture
async def migrated(pg_dsn: str) -> str:
    store = await Store.open(pg_dsn, partitioning="native")
    await store.aclose()
    return pg_dsn


async def get_json(port: int, path: str, token: str | None = CRM_TOKEN) -> tuple[int, Any]:
    status, _, body = await http_get(port, path, token=token)
    return status, json.loads(body)


async def drain(port: int, query: str = "", limit: int = 2) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = "0"
    for _ in range(1000):
        status, page = await get_json(
            port, f"/api/crm/v1/visit-exceptions?after={cursor}&limit={limit}{query}"
        )
        assert status == 200, page
        items.extend(page["items"])
        cursor = page["next"]
        if not page["more"]:
            return items
    raise AssertionError("feed never ended")


def test_cursor_round_trip_and_refusals() -> None:
    for seq in (0, 1, 77, 2**62):
        assert decode_cursor(encode_cursor(seq)) == seq
    assert decode_cursor("0") == 0
    assert decode_cursor(None) == 0


async def test_feed_serves_every_version_in_commit_order_with_filters(migrated: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        missed = exception_body(service_date=D1, site_id="S1", kind="missed", status="open")
        await publish_exceptions(conn, [missed])
        await publish_exceptions(
            conn,
            [
                exception_body(service_date=D1, site_id="S2", kind="late", minutes_late=12.5),
                exception_body(service_date=D2, site_id="S3", kind="cancelled", client_id="C2"),
            ],
        )
        comment = {"by": "D01", "at": "2026-11-23T12:00:00Z", "text": "gate shut"}
        await publish_exceptions(conn, [{**missed, "status": "retracted", "comments": [comment]}])
        await publish_exceptions(
            conn, [exception_body(service_date=D2, site_id="S1", kind="unplanned", client_id=None)]
        )
    async with serving_crm(migrated) as server:
        items = await drain(server.port)
        assert [(i["id"], i["version"]) for i in items] == [
            ("2026-11-23/S1/missed", 1),
            ("2026-11-23/S2/late", 1),
            ("2026-11-24/S3/cancelled", 1),
            ("2026-11-23/S1/missed", 2),
            ("2026-11-24/S1/unplanned", 1),
        ]
        assert items[3]["status"] == "retracted"
        assert items[3]["comments"] == [comment]
        assert items[1]["minutes_late"] == 12.5
        assert items[1]["arrival"] == "2026-11-23T10:12:30Z"
        # a page size of 1000 gives the same sequence
        assert await drain(server.port, limit=1000) == items
        # filters: the same order, only the matching versions
        assert [i["id"] for i in await drain(server.port, "&client_id=C2")] == [
            "2026-11-24/S3/cancelled"
        ]
        assert [i["version"] for i in await drain(server.port, "&site_id=S1&kind=missed")] == [
            1,
            2,
        ]
        on_d2 = await drain(server.port, "&from=2026-11-24&to=2026-11-24", limit=1)
        assert [i["id"] for i in on_d2] == ["2026-11-24/S3/cancelled", "2026-11-24/S1/unplanned"]
        # the head: nothing more, and the cursor stays put
        status, page = await get_json(server.port, "/api/crm/v1/visit-exceptions?limit=5")
        head = page["next"]
        status, page = await get_json(server.port, f"/api/crm/v1/visit-exceptions?after={head}")
        assert (status, page["items"], page["next"], page["more"]) == (200, [], head, False)
        # a version committed after the client reached the head appears on its next call
        async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
            await publish_exceptions(
                conn, [exception_body(service_date=D2, site_id="S9", kind="missed", status="open")]
            )
        status, page = await get_json(server.port, f"/api/crm/v1/visit-exceptions?after={head}")
        assert [i["id"] for i in page["items"]] == ["2026-11-24/S9/missed"]


async def test_auth_401_403_and_400_naming_the_parameter(migrated: str) -> None:
    feed = "/api/crm/v1/visit-exceptions"
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await publish_exceptions(
            conn, [exception_body(service_date=D1, site_id="S1", kind="missed")]
        )
    async with serving_crm(migrated) as server:
        p = server.port
        for token in (None, "not-a-token", "x" * 600):
            status, headers, body = await http_get(p, feed, token=token)
            assert status == 401
            assert headers["www-authenticate"] == "Bearer"
            assert b"S1" not in body
            assert b"items" not in body
        # 401 comes before any look at the parameters
        assert (await http_get(p, feed + "?limit=abc", token=None))[0] == 401
        # wrong scope: 403, no data
        for path, token in (
            (feed, OPS_TOKEN),
            (feed, DISPATCHER_TOKEN),
            ("/api/ops/v1/dispatcher-kpis?from=2026-11-01&to=2026-11-30", CRM_TOKEN),
        ):
            status, _, body = await http_get(p, path, token=token)
            assert status == 403, (path, body)
            assert b"items" not in body
            assert b"overall" not in body
        assert (await http_get(p, feed, token=ADMIN_TOKEN))[0] == 200
        # bad parameters: 400, naming the parameter
        bad = {
            feed + "?limit=5000": "limit",
            feed + "?limit=0": "limit",
            feed + "?limit=abc": "limit",
            feed + "?after=%21%21": "after",
            feed + "?after=Zm9vOjEy": "after",  # base64 of "foo:12": not ours
            feed + "?kind=early": "kind",
            feed + "?client_id=C%001": "client_id",
            feed + "?from=2026-13-01": "from",
            feed + "?from=2026-11-30&to=2026-11-01": "to",
            feed + "?from=1900-01-01": "from",
            "/api/crm/v1/service-quality?from=2025-01-01&to=2026-11-30": "to",
            "/api/crm/v1/service-quality?to=2026-11-30": "from",
            "/api/crm/v1/service-quality?from=2026-11-01&to=2026-11-30&limit=100000": "limit",
            "/api/crm/v1/overdue-sites": "as_of",
            "/api/crm/v1/overdue-sites?as_of=2026-11-30&period_days=0": "period_days",
        }
        for path, name in bad.items():
            status, _, body = await http_get(p, path, token=ADMIN_TOKEN)
            assert status == 400, (path, status, body)
            err = json.loads(body)
            assert err["parameter"] == name, (path, err)
            assert err["detail"].startswith(f"{name}: ")
            assert len(err["detail"]) > len(name) + 4


async def test_service_quality_per_client_and_site_json_and_csv(migrated: str) -> None:
    stops: list[dict[str, Any]] = []
    for day in range(10):  # S1 of C1: 6 on time, 3 late (10, 20, 30 min), 1 missed
        d = D1 + dt.timedelta(days=day)
        if day < 6:
            stops.append(
                dict(
                    site_id="S1",
                    client_id="C1",
                    service_date=d,
                    state="visited",
                    outcome="on_time" if day % 2 else "early",
                )
            )
        elif day < 9:
            stops.append(
                dict(
                    site_id="S1",
                    client_id="C1",
                    service_date=d,
                    state="visited",
                    outcome="late",
                    minutes_late=10.0 * (day - 5),
                )
            )
        else:
            stops.append(dict(site_id="S1", client_id="C1", service_date=d, state="missed"))
    stops += [
        dict(site_id="S2", client_id="C1", service_date=D1, state="cancelled"),
        dict(site_id="S2", client_id="C1", service_date=D2, state="pending"),
        dict(site_id="S3", client_id="C2", service_date=D1, state="visited", outcome="on_time"),
        dict(site_id="S4", client_id=None, service_date=D1, state="missed"),
        # outside the range asked for: not counted
        dict(site_id="S1", client_id="C1", service_date=dt.date(2026, 12, 20), state="missed"),
    ]
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await publish_stop_states(conn, stops)
    rng = "from=2026-11-01&to=2026-12-15"
    async with serving_crm(migrated) as server:
        status, page = await get_json(server.port, f"/api/crm/v1/service-quality?{rng}")
        assert status == 200, page
        assert (page["from"], page["to"], page["next"]) == ("2026-11-01", "2026-12-15", None)
        assert [c["client_id"] for c in page["clients"]] == ["C1", "C2"]
        c1 = page["clients"][0]
        assert c1["total"] == {
            "due": 12,
            "on_time": 6,
            "late": 3,
            "late_mean_minutes": 20.0,
            "late_p90_minutes": 28.0,
            "missed": 1,
            "cancelled": 1,
            "pending": 1,
            "on_time_pct": 60.0,
        }
        assert [s["site_id"] for s in c1["sites"]] == ["S1", "S2"]
        assert c1["sites"][0]["due"] == 10
        assert c1["sites"][0]["on_time_pct"] == 60.0
        assert c1["sites"][1]["on_time_pct"] is None  # nothing decided
        # one client, and pagination over clients
        status, one = await get_json(server.port, f"/api/crm/v1/service-quality?{rng}&limit=1")
        assert [c["client_id"] for c in one["clients"]] == ["C1"]
        assert one["next"] == "C1"
        status, two = await get_json(
            server.port, f"/api/crm/v1/service-quality?{rng}&limit=1&after_client=C1"
        )
        assert [c["client_id"] for c in two["clients"]] == ["C2"]
        assert two["next"] is None
        status, only = await get_json(
            server.port, f"/api/crm/v1/service-quality?{rng}&client_id=C2"
        )
        assert [c["client_id"] for c in only["clients"]] == ["C2"]
        # CSV: by route and by Accept, the same text
        s1, h1, b1 = await http_get(
            server.port, f"/api/crm/v1/service-quality.csv?{rng}", token=CRM_TOKEN
        )
        s2, _h2, b2 = await http_get(
            server.port, f"/api/crm/v1/service-quality?{rng}", token=CRM_TOKEN, accept="text/csv"
        )
        assert (s1, s2) == (200, 200)
        assert b1 == b2
        assert h1["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(b1.decode())))
        assert [(r["client_id"], r["site_id"]) for r in rows] == [
            ("C1", ""),
            ("C1", "S1"),
            ("C1", "S2"),
            ("C2", ""),
            ("C2", "S3"),
        ]
        assert rows[0]["late_p90_minutes"] == "28.0"
        assert rows[2]["on_time_pct"] == ""


async def test_overdue_sites_against_their_contract_period(migrated: str) -> None:
    weekdays = [
        D1 + dt.timedelta(days=k) for k in range(12) if (D1 + dt.timedelta(days=k)).weekday() < 5
    ]
    stops: list[dict[str, Any]] = []
    for d in weekdays:  # S1: served every weekday; S2: missed from Wednesday on
        stops.append(
            dict(site_id="S1", client_id="C1", service_date=d, state="visited", outcome="on_time")
        )
        ok = d <= dt.date(2026, 11, 24)
        stops.append(
            dict(
                site_id="S2",
                client_id="C1",
                service_date=d,
                state="visited" if ok else "missed",
                outcome="on_time" if ok else None,
            )
        )
    for d in (D1, D1 + dt.timedelta(days=7)):  # S3: weekly, last visit 2026-11-30
        stops.append(
            dict(
                site_id="S3",
                client_id="C2",
                service_date=d,
                state="visited",
                outcome="late",
                minutes_late=3.0,
            )
        )
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await publish_stop_states(conn, stops)
    async with serving_crm(migrated) as server:
        status, page = await get_json(server.port, "/api/crm/v1/overdue-sites?as_of=2026-12-04")
        assert status == 200, page
        assert page["sites"] == [
            {
                "site_id": "S2",
                "client_id": "C1",
                "period_days": 3,
                "last_visit": "2026-11-24",
                "days_since_visit": 10,
                "last_due": "2026-12-04",
            }
        ]
        # a week later S3 (weekly) is overdue too; S1's plan ended on 12-04: 11 days > 3
        status, page = await get_json(server.port, "/api/crm/v1/overdue-sites?as_of=2026-12-15")
        assert [(s["site_id"], s["period_days"]) for s in page["sites"]] == [
            ("S1", 3),
            ("S2", 3),
            ("S3", 7),
        ]
        # a fixed period overrides the contracts'; client filter
        status, page = await get_json(
            server.port, "/api/crm/v1/overdue-sites?as_of=2026-12-04&period_days=30"
        )
        assert page["sites"] == []
        status, page = await get_json(
            server.port, "/api/crm/v1/overdue-sites?as_of=2026-12-15&client_id=C2"
        )
        assert [s["site_id"] for s in page["sites"]] == ["S3"]
        status, page = await get_json(
            server.port, "/api/crm/v1/overdue-sites?as_of=2026-12-15&limit=2"
        )
        assert [s["site_id"] for s in page["sites"]] == ["S1", "S2"]
        assert page["next"] == "S2"


async def test_dispatcher_kpis(migrated: str) -> None:
    t0 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        # D01 acknowledges in 4 and 8 min, resolves after 30 and 60; one escalated to D02
        # (acked by D02 at 14 min, over the 10-min SLA); one never acknowledged; one retracted
        # and one detected late: both left out
        await publish_alert(
            conn,
            aid="a1",
            opened_at=t0,
            hops=[("D01", None, 0)],
            status="resolved",
            ack_by="D01",
            ack_after_min=4,
            closed_after_min=30,
        )
        await publish_alert(
            conn,
            aid="a2",
            opened_at=t0,
            hops=[("D01", None, 0)],
            status="resolved",
            ack_by="D01",
            ack_after_min=8,
            closed_after_min=60,
        )
        await publish_alert(
            conn,
            aid="a3",
            opened_at=t0,
            hops=[("D01", None, 0), ("D02", "D01", 1)],
            status="acknowledged",
            ack_by="D02",
            ack_after_min=14,
        )
        await publish_alert(conn, aid="a4", opened_at=t0, hops=[("D02", None, 0)])
        await publish_alert(
            conn, aid="a5", opened_at=t0, hops=[("D02", None, 0)], status="retracted"
        )
        await publish_alert(
            conn, aid="a6", opened_at=t0, hops=[("D02", None, 0)], detected_late=True
        )
        await publish_alert(
            conn, aid="a7", opened_at=t0 + dt.timedelta(days=3), hops=[("D02", None, 0)]
        )  # outside the range
    async with serving_crm(migrated, sla_minutes=10) as server:
        status, page = await get_json(
            server.port,
            "/api/ops/v1/dispatcher-kpis?from=2026-11-23&to=2026-11-24",
            token=OPS_TOKEN,
        )
        assert status == 200, page
        assert (page["sla_minutes"], page["sla_target_share"], page["meets_target"]) == (
            10.0,
            0.95,
            False,
        )
        assert page["overall"] == {
            "received": 4,
            "acknowledged": 3,
            "ack_median_minutes": 8.0,
            "ack_p90_minutes": 12.8,
            "resolved": 2,
            "resolve_median_minutes": 45.0,
            "resolve_p90_minutes": 57.0,
            "within_sla_share": 0.5,
            "escalations": 1,
        }
        per = {d["dispatcher"]: d for d in page["dispatchers"]}
        assert sorted(per) == ["D01", "D02"]
        assert (per["D01"]["received"], per["D01"]["acknowledged"]) == (3, 2)
        assert per["D01"]["within_sla_share"] == round(2 / 3, 4)
        assert per["D01"]["escalations"] == 1
        assert per["D02"]["escalations"] == 0
        assert per["D01"]["ack_median_minutes"] == 6.0
        assert (per["D02"]["received"], per["D02"]["acknowledged"]) == (2, 1)
        assert per["D02"]["within_sla_share"] == 0.0


async def test_openapi_is_generated_with_the_routes_and_bearer_auth(migrated: str) -> None:
    async with serving_crm(migrated) as server:
        status, _, body = await http_get(server.port, "/openapi.json")
        doc = json.loads(body)
    assert status == 200
    for path in (
        "/api/crm/v1/visit-exceptions",
        "/api/crm/v1/service-quality",
        "/api/crm/v1/service-quality.csv",
        "/api/crm/v1/overdue-sites",
        "/api/ops/v1/dispatcher-kpis",
    ):
        op = doc["paths"][path]["get"]
        assert op["security"] == [{"HTTPBearer": []}], path
        assert {"200", "400", "401", "403", "503"} <= set(op["responses"]), path
        assert "422" not in op["responses"], path  # never sent: 400 instead
    feed = doc["paths"]["/api/crm/v1/visit-exceptions"]["get"]
    limit = next(p for p in feed["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000
    assert "ExceptionItem" in doc["components"]["schemas"]


async def test_database_down_is_503_with_retry_after(private_pg_server: Any) -> None:
    dsn = private_pg_server.dsn
    store = await Store.open(dsn, partitioning="native")
    await store.aclose()
    async with serving_crm(dsn) as server:
        feed = "/api/crm/v1/visit-exceptions"
        assert (await http_get(server.port, feed, token=CRM_TOKEN))[0] == 200
        private_pg_server.stop()
        status, headers, body = await http_get(server.port, feed, token=CRM_TOKEN)
        assert (status, headers.get("retry-after")) == (503, "5"), body
        # auth is still answered without the database
        assert (await http_get(server.port, feed, token=None))[0] == 401
        private_pg_server.start()
        for _ in range(50):  # the pool reconnects by itself
            if (await http_get(server.port, feed, token=CRM_TOKEN))[0] == 200:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the API did not recover after the database came back")


async def test_served_over_the_services_store_too(migrated: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await publish_exceptions(
            conn, [exception_body(service_date=D1, site_id="S1", kind="missed")]
        )
    async with serving_crm(migrated, use_store=True) as server:
        items = await drain(server.port)
    assert [(i["id"], i["version"]) for i in items] == [("2026-11-23/S1/missed", 1)]
