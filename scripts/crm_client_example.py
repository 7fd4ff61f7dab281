"""An example CRM client of fleetwatch's visit-exception feed (standard library only).

It pulls ``/api/crm/v1/visit-exceptions`` from cursor 0 to the head, upserts every item into its
own SQLite table (keeping the highest version per id), and stores the cursor *in the same
SQLite transaction* as the page's rows: killed at any moment, it resumes after a restart from
the last page it committed, never applying a page twice or skipping one.  At the head it
reconciles: its counts per (kind, status) must equal the server's
``/api/crm/v1/visit-exceptions/summary`` as of the same feed position.

    python scripts/crm_client_example.py --url http://127.0.0.1:8080 --db crm.sqlite3
    (token in $FLEETWATCH_CRM_TOKEN; --follow SECONDS keeps polling)

Exit codes: 0 synced and reconciled, 1 reconciliation found a difference, 2 usage/HTTP error.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS visit_exceptions (
    id TEXT PRIMARY KEY, version INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    client_id TEXT, site_id TEXT NOT NULL, service_date TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ApiError(Exception):
    """The API answered with an error (or not at all); the message says what."""


def get(url: str, token: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
    req = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            data: dict[str, Any] = json.load(resp)
            return data
    except urllib.error.HTTPError as e:
        raise ApiError(f"GET {url}: HTTP {e.code}: {e.read()[:300]!r}") from e
    except (urllib.error.URLError, TimeoutError) as e:
        raise ApiError(f"GET {url}: {e}") from e


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    return db


def cursor_of(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT value FROM feed_state WHERE name = 'cursor'").fetchone()
    return str(row[0]) if row else "0"


def apply_page(db: sqlite3.Connection, items: list[dict[str, Any]], next_cursor: str) -> int:
    """Upsert the page's items (newer versions only) and move the cursor: one transaction."""
    with db:  # commits, or rolls back on any error
        for it in items:
            db.execute(
                "INSERT INTO visit_exceptions (id, version, kind, status, client_id, site_id, "
                "service_date, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET version = excluded.version, kind = excluded.kind, status = excluded.status, "
                "client_id = excluded.client_id, body = excluded.body "
                "WHERE excluded.version > visit_exceptions.version",
                (
                    it["id"],
                    it["version"],
                    it["kind"],
                    it["status"],
                    it["client_id"],
                    it["site_id"],
                    it["service_date"],
                    json.dumps(it, sort_keys=True),
                ),
            )
        db.execute(
            "INSERT INTO feed_state (name, value) VALUES ('cursor', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (next_cursor,),
        )
    return len(items)


def sync(
    db: sqlite3.Connection, base: str, token: str, *, limit: int, max_pages: int | None
) -> tuple[int, bool]:
    """Pull pages from the saved cursor; returns (versions applied, reached the head)."""
    applied = pages = 0
    while max_pages is None or pages < max_pages:
        query = urllib.parse.urlencode({"after": cursor_of(db), "limit": limit})
        page = get(f"{base}/api/crm/v1/visit-exceptions?{query}", token)
        applied += apply_page(db, page["items"], page["next"])
        pages += 1
        if not page["more"]:
            return applied, True
    return applied, False


def reconcile(db: sqlite3.Connection, base: str, token: str, *, limit: int) -> list[str]:
    """Differences between the local copy and the server's counts at the same position."""
    for _ in range(10):
        summary = get(f"{base}/api/crm/v1/visit-exceptions/summary", token)
        if summary["head"] == cursor_of(db) or not summary["current"]:
            break
        sync(db, base, token, limit=limit, max_pages=None)  # the head moved: catch up first
    else:
        return ["the feed kept moving; reconcile again later"]
    local = {
        (k, s): n
        for k, s, n in db.execute(
            "SELECT kind, status, count(*) FROM visit_exceptions GROUP BY 1, 2"
        )
    }
    remote = {(c["kind"], c["status"]): c["count"] for c in summary["current"]}
    return [
        f"{k}/{s}: local {local.get((k, s), 0)}, server {remote.get((k, s), 0)}"
        for k, s in sorted(set(local) | set(remote))
        if local.get((k, s), 0) != remote.get((k, s), 0)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="fleetwatch's HTTP base URL")
    ap.add_argument("--db", required=True, help="the SQLite file of this client")
    ap.add_argument("--limit", type=int, default=1000, help="items per page (1..1000)")
    ap.add_argument("--max-pages", type=int, default=None, help="stop after N pages (testing)")
    ap.add_argument("--follow", type=float, default=None, help="poll every N seconds")
    args = ap.parse_args(argv)
    token = os.environ.get("FLEETWATCH_CRM_TOKEN")
    if not token:
        print("set FLEETWATCH_CRM_TOKEN to a token with the crm:read scope", file=sys.stderr)
        return 2
    base = args.url.rstrip("/")
    db = open_db(args.db)
    try:
        while True:
            start = cursor_of(db)
            applied, at_head = sync(db, base, token, limit=args.limit, max_pages=args.max_pages)
            report: dict[str, Any] = {"from": start, "to": cursor_of(db), "applied": applied}
            if at_head:
                diffs = reconcile(db, base, token, limit=args.limit)
                report["reconciled"] = not diffs
                report["differences"] = diffs
            report["exceptions"] = db.execute("SELECT count(*) FROM visit_exceptions").fetchone()[0]
            print(json.dumps(report), flush=True)
            if args.follow is None:
                return 0 if not at_head or report["reconciled"] else 1
            time.sleep(args.follow)
    except ApiError as e:
        print(str(e), file=sys.stderr)
        return 2
    finally:
        db.close()


if __name__ == "__main__":
    raise SystemExit(main())
