"""scripts/crm_client_example.py against the real server: pulls from cursor 0, stops, resumes
from its saved cursor after a restart, picks up new versions, and reconciles its counts (and
says so when its copy is wrong)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from store import Store
from tests.crm_world import CRM_TOKEN, exception_body, publish_exceptions, serving_crm

pytestmark = pytest.mark.anyio
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crm_client_example.py"
D = dt.date(2026, 11, 23)


async def run_client(port: int, db: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--url",
        f"http://127.0.0.1:{port}",
        "--db",
        str(db),
        *args,
        env={**os.environ, "FLEETWATCH_CRM_TOKEN": CRM_TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()
    return proc.returncode, json.loads(lines[-1])


def local_copy(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, version FROM visit_exceptions"))


async def server_current(dsn: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT id, version FROM visit_exceptions_current")
        return {str(i): int(v) for i, v in await cur.fetchall()}


async def test_pull_stop_resume_follow_and_reconcile(pg_dsn: str, tmp_path: Path) -> None:
    store = await Store.open(pg_dsn, partitioning="native")
    await store.aclose()
    db = tmp_path / "crm.sqlite3"
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for k in range(12):
            missed = exception_body(service_date=D, site_id=f"S{k}", kind="missed", status="open")
            await publish_exceptions(conn, [missed])
            if k % 3 == 0:  # a second version: retracted
                await publish_exceptions(conn, [{**missed, "status": "retracted"}])
    async with serving_crm(pg_dsn) as server:
        # stopped after 2 pages of 4: 8 versions applied, not at the head yet
        code, first = await run_client(server.port, db, "--limit", "4", "--max-pages", "2")
        assert (code, first["from"], first["applied"]) == (0, "0", 8)
        assert "reconciled" not in first
        # restarted: resumes from the saved cursor, drains to the head, reconciles
        code, second = await run_client(server.port, db, "--limit", "4")
        assert second["from"] == first["to"]
        assert (code, second["applied"], second["reconciled"]) == (0, 16 - 8, True)
        assert local_copy(db) == await server_current(pg_dsn)
        # new versions and new exceptions arrive; the next run applies only them
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await publish_exceptions(
                conn,
                [
                    exception_body(service_date=D, site_id="S1", kind="missed", status="confirmed"),
                    exception_body(service_date=D, site_id="S0", kind="late", minutes_late=9.0),
                ],
            )
        code, third = await run_client(server.port, db)
        assert (code, third["from"], third["applied"], third["reconciled"]) == (
            0,
            second["to"],
            2,
            True,
        )
        assert local_copy(db) == await server_current(pg_dsn)
        assert local_copy(db)["2026-11-23/S1/missed"] == 2
        # a damaged copy is found by reconciliation (exit 1, the difference named)
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM visit_exceptions WHERE id = '2026-11-23/S0/late'")
        code, fourth = await run_client(server.port, db)
        assert (code, fourth["reconciled"]) == (1, False)
        assert fourth["differences"] == ["late/confirmed: local 0, server 1"]
