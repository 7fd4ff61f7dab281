"""A small writer of migration 0005's tables for the CRM API's tests and benchmarks.

It follows 0005's rules exactly as the engine's store writer must: one transaction takes
``pg_advisory_xact_lock(hashtext('fleetwatch.outbox'))`` before inserting, the version is
``max + 1`` per (kind, id), and the current table is upserted in the same transaction.  The
racing-writer test also uses :func:`begin_publish` / :func:`finish_publish` to hold a
transaction open between steps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('fleetwatch.outbox'))"


def exception_body(
    *,
    service_date: dt.date,
    site_id: str,
    kind: str,
    client_id: str | None = "C1",
    status: str = "confirmed",
    minutes_late: float | None = None,
    comments: list[dict[str, str]] | None = None,
    vehicle_id: str | None = "V1",
) -> dict[str, Any]:
    d = service_date.isoformat()
    ws = f"{d}T08:00:00Z" if kind != "unplanned" else None
    we = f"{d}T10:00:00Z" if kind != "unplanned" else None
    arrival = None
    if kind == "late":
        m = minutes_late if minutes_late is not None else 15.0
        t = dt.datetime.combine(service_date, dt.time(10), dt.UTC) + dt.timedelta(minutes=m)
        arrival = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        minutes_late = m
    return {
        "id": f"{d}/{site_id}/{kind}",
        "kind": kind,
        "status": status,
        "site_id": site_id,
        "client_id": client_id,
        "service_date": d,
        "vehicle_id": vehicle_id,
        "window_start": ws,
        "window_end": we,
        "arrival": arrival,
        "minutes_late": minutes_late if kind == "late" else None,
        "comments": comments or [],
        "at": f"{d}T11:00:00Z",
    }


def _sha(body: dict[str, Any]) -> bytes:
    content = {k: v for k, v in body.items() if k not in ("version", "at")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).digest()


async def insert_version(
    conn: psycopg.AsyncConnection[Any], kind: str, rid: str, body: dict[str, Any], at: str
) -> tuple[int, int]:
    """Inside the caller's transaction, after the lock: (seq, version) of the new row."""
    row = await (
        await conn.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM record_versions WHERE kind = %s AND id = %s",
            (kind, rid),
        )
    ).fetchone()
    assert row is not None
    version = int(row[0])
    body = {**body, "version": version}
    seq_row = await (
        await conn.execute(
            "INSERT INTO record_versions (kind, id, version, body, body_sha256, at) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
            (kind, rid, version, Jsonb(body), _sha(body), at),
        )
    ).fetchone()
    assert seq_row is not None
    return int(seq_row[0]), version


async def upsert_exception(conn: psycopg.AsyncConnection[Any], body: dict[str, Any]) -> int:
    """Inside a locked transaction: a new version of the exception, outbox + current row."""
    seq, version = await insert_version(conn, "exception", body["id"], body, body["at"])
    await conn.execute(
        "INSERT INTO visit_exceptions_current (id, version, seq, kind, status, site_id, "
        "client_id, service_date, vehicle_id, window_start, window_end, arrival, minutes_late, "
        "comments) VALUES (%(id)s, %(version)s, %(seq)s, %(kind)s, %(status)s, %(site_id)s, "
        "%(client_id)s, %(service_date)s, %(vehicle_id)s, %(window_start)s, %(window_end)s, "
        "%(arrival)s, %(minutes_late)s, %(comments)s) ON CONFLICT (id) DO UPDATE SET "
        "version = EXCLUDED.version, seq = EXCLUDED.seq, status = EXCLUDED.status, "
        "comments = EXCLUDED.comments, arrival = EXCLUDED.arrival, "
        "minutes_late = EXCLUDED.minutes_late",
        {**body, "version": version, "seq": seq, "comments": Jsonb(body["comments"])},
    )
    return seq


async def publish_exceptions(
    conn: psycopg.AsyncConnection[Any], bodies: list[dict[str, Any]]
) -> list[int]:
    """One transaction: lock, then one version per body; returns the seqs."""
    async with conn.transaction():
        await conn.execute(LOCK_SQL)
        return [await upsert_exception(conn, b) for b in bodies]


async def publish_stop_states(
    conn: psycopg.AsyncConnection[Any], stops: list[dict[str, Any]]
) -> None:
    """One transaction: lock, then a stop_state version per stop (keys of stop_states_current:
    site_id, client_id, service_date (date), state, outcome, minutes_late, arrival)."""
    async with conn.transaction():
        await conn.execute(LOCK_SQL)
        for s in stops:
            d: dt.date = s["service_date"]
            sid = f"{d.isoformat()}/{s['site_id']}"
            ws = dt.datetime.combine(d, dt.time(8), dt.UTC)
            body = {
                "stop_id": sid,
                "site_id": s["site_id"],
                "client_id": s.get("client_id"),
                "service_date": d.isoformat(),
                "state": s["state"],
                "outcome": s.get("outcome"),
                "minutes_late": s.get("minutes_late"),
            }
            seq, version = await insert_version(conn, "stop_state", sid, body, ws.isoformat())
            await conn.execute(
                "INSERT INTO stop_states_current (stop_id, version, seq, site_id, client_id, "
                "service_date, vehicle_id, state, outcome, minutes_late, window_start, "
                "window_end, arrival, body) VALUES (%s, %s, %s, %s, %s, %s, 'V1', %s, %s, %s, "
                "%s, %s, %s, %s) ON CONFLICT (stop_id) DO UPDATE SET version = EXCLUDED.version,"
                " seq = EXCLUDED.seq, state = EXCLUDED.state, outcome = EXCLUDED.outcome, "
                "minutes_late = EXCLUDED.minutes_late, arrival = EXCLUDED.arrival, "
                "body = EXCLUDED.body",
                (
                    sid,
                    version,
                    seq,
                    s["site_id"],
                    s.get("client_id"),
                    d,
                    s["state"],
                    s.get("outcome"),
                    s.get("minutes_late"),
                    ws,
                    ws + dt.timedelta(hours=2),
                    s.get("arrival"),
                    Jsonb({**body, "version": version}),
                ),
            )


async def publish_alert(
    conn: psycopg.AsyncConnection[Any],
    *,
    aid: str,
    opened_at: dt.datetime,
    hops: list[tuple[str, str | None, int]],
    status: str = "open",
    ack_by: str | None = None,
    ack_after_min: float | None = None,
    closed_after_min: float | None = None,
    detected_late: bool = False,
) -> None:
    """One transaction: lock, an alert version and its alerts_current row.  ``hops``:
    (to, from, level) in order; the last hop's ``to`` is the assignee."""
    ack_at = opened_at + dt.timedelta(minutes=ack_after_min) if ack_after_min is not None else None
    closed = (
        opened_at + dt.timedelta(minutes=closed_after_min) if closed_after_min is not None else None
    )
    body = {
        "type": "alert",
        "id": aid,
        "status": status,
        "hops": [
            {"level": lv, "to": to, "from": fr, "at": opened_at.isoformat(), "reason": "x"}
            for to, fr, lv in hops
        ],
    }
    async with conn.transaction():
        await conn.execute(LOCK_SQL)
        seq, version = await insert_version(conn, "alert", aid, body, opened_at.isoformat())
        await conn.execute(
            "INSERT INTO alerts_current (id, version, seq, kind, severity, status, assignee, "
            "escalation_level, opened_at, acknowledged_at, acknowledged_by, closed_at, "
            "detected_late, body) VALUES (%s, %s, %s, 'missed', 'critical', %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, "
            "seq = EXCLUDED.seq, status = EXCLUDED.status, assignee = EXCLUDED.assignee, "
            "escalation_level = EXCLUDED.escalation_level, "
            "acknowledged_at = EXCLUDED.acknowledged_at, "
            "acknowledged_by = EXCLUDED.acknowledged_by, closed_at = EXCLUDED.closed_at, "
            "body = EXCLUDED.body",
            (
                aid,
                version,
                seq,
                status,
                hops[-1][0],
                max(lv for _, _, lv in hops),
                opened_at,
                ack_at,
                ack_by,
                closed,
                detected_late,
                Jsonb({**body, "version": version}),
            ),
        )


# --- serving the API for tests ------------------------------------------------------------------

CRM_TOKEN = "crm-token-for-tests"
OPS_TOKEN = "ops-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
DISPATCHER_TOKEN = "dispatcher-token-for-tests"


def authenticator() -> Any:
    """Four tokens: crm:read, ops:read, admin, and a dispatcher (no API scope)."""
    from fleetwatch.auth import Authenticator, TokenEntry, hash_token

    return Authenticator(
        [
            TokenEntry(user="crm", sha256=hash_token(CRM_TOKEN), scopes=frozenset({"crm:read"})),
            TokenEntry(user="ops", sha256=hash_token(OPS_TOKEN), scopes=frozenset({"ops:read"})),
            TokenEntry(user="root", sha256=hash_token(ADMIN_TOKEN), scopes=frozenset({"admin"})),
            TokenEntry(
                user="D01", sha256=hash_token(DISPATCHER_TOKEN), scopes=frozenset({"dispatcher"})
            ),
        ]
    )


@contextlib.asynccontextmanager
async def serving_crm(
    dsn: str, *, sla_minutes: float = 10.0, use_store: bool = False
) -> AsyncIterator[Any]:
    """The real web shell with the CRM router on a free port, over its own pool (or the
    service's Store with ``use_store``); yields the :class:`fleetwatch.web.WebServer`."""
    import asyncio

    from fleetwatch.crm_api import crm_router, open_crm_pool
    from fleetwatch.web import WebShell, open_web_server
    from store import open_store

    shell = WebShell()
    source_cm = (
        open_store(dsn, partitioning="native", migrate=False) if use_store else open_crm_pool(dsn)
    )
    async with source_cm as pool:
        shell.include_router(
            crm_router(pool_or_store=pool, tokens=authenticator(), sla_minutes=sla_minutes)
        )
        server = open_web_server(shell, host="127.0.0.1", port=0)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(server.serve(), name="web")
            async with asyncio.timeout(10):
                await server.wait_started()
            try:
                yield server
            finally:
                server.request_stop()


async def http_get(
    port: int, path: str, *, token: str | None = None, accept: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection: (status, lower-cased headers, body)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    if accept is not None:
        extra += f"Accept: {accept}\r\n"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    await writer.wait_closed()
    return int(lines[0].split()[1]), headers, body


async def publish_exceptions_batched(
    conn: psycopg.AsyncConnection[Any], bodies: list[dict[str, Any]]
) -> int:
    """The outbox writer's way: one transaction, the lock, versions of the whole batch read in
    one query, then pipelined multi-row inserts (psycopg executemany).  Returns the count."""
    async with conn.transaction():
        await conn.execute(LOCK_SQL)
        ids = [b["id"] for b in bodies]
        cur = await conn.execute(
            "SELECT id, max(version) FROM record_versions WHERE kind = 'exception' "
            "AND id = ANY(%s) GROUP BY id",
            (ids,),
        )
        last = {str(i): int(v) for i, v in await cur.fetchall()}
        rows, currents = [], []
        for b in bodies:
            version = last.get(b["id"], 0) + 1
            last[b["id"]] = version
            body = {**b, "version": version}
            rows.append(("exception", b["id"], version, Jsonb(body), _sha(body), b["at"]))
            currents.append({**body, "comments": Jsonb(b["comments"])})
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO record_versions (kind, id, version, body, body_sha256, at) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
                rows,
                returning=True,
            )
            seqs = []
            while True:
                row = await c.fetchone()
                assert row is not None
                seqs.append(int(row[0]))
                if not c.nextset():
                    break
            for cur_row, seq in zip(currents, seqs, strict=True):
                cur_row["seq"] = seq
            await c.executemany(
                "INSERT INTO visit_exceptions_current (id, version, seq, kind, status, site_id, "
                "client_id, service_date, vehicle_id, window_start, window_end, arrival, "
                "minutes_late, comments) VALUES (%(id)s, %(version)s, %(seq)s, %(kind)s, "
                "%(status)s, %(site_id)s, %(client_id)s, %(service_date)s, %(vehicle_id)s, "
                "%(window_start)s, %(window_end)s, %(arrival)s, %(minutes_late)s, %(comments)s) "
                "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, seq = EXCLUDED.seq, "
                "status = EXCLUDED.status, comments = EXCLUDED.comments, "
                "arrival = EXCLUDED.arrival, minutes_late = EXCLUDED.minutes_late",
                currents,
            )
    return len(bodies)
