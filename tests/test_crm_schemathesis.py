"""Schemathesis against the OpenAPI document the real server serves: for any generated input
(valid and invalid parameters; a valid token, a wrong one, none) no 500, only documented
status codes, and every answer conforms to its documented schema and content type.

The server (web shell + CRM router + its pool, over a real PostgreSQL with some data) runs in a
thread with its own event loop, because schemathesis calls it synchronously (requests).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from store import Store
from tests.crm_world import (
    ADMIN_TOKEN,
    exception_body,
    publish_alert,
    publish_exceptions,
    publish_stop_states,
    serving_crm,
)

D = dt.date(2026, 11, 23)


async def _fill(dsn: str) -> None:
    store = await Store.open(dsn, partitioning="native")
    await store.aclose()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await publish_exceptions(
            conn,
            [
                exception_body(service_date=D, site_id="S1", kind="late", minutes_late=7.0),
                exception_body(service_date=D, site_id="S2", kind="missed", status="open"),
            ],
        )
        await publish_stop_states(
            conn,
            [
                dict(
                    site_id="S1",
                    client_id="C1",
                    service_date=D,
                    state="visited",
                    outcome="late",
                    minutes_late=7.0,
                ),
                dict(site_id="S2", client_id="C1", service_date=D, state="missed"),
            ],
        )
        await publish_alert(
            conn,
            aid="a1",
            opened_at=dt.datetime(2026, 11, 23, 9, tzinfo=dt.UTC),
            hops=[("D01", None, 0)],
            status="acknowledged",
            ack_by="D01",
            ack_after_min=3,
        )


@pytest.fixture
def base_url(pg_dsn: str) -> Iterator[str]:
    started = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        await _fill(pg_dsn)
        async with serving_crm(pg_dsn) as server:
            stop = asyncio.Event()
            box["url"] = f"http://127.0.0.1:{server.port}"
            box["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
            loop = asyncio.get_running_loop()
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test below
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="crm-api-server", daemon=True)
    thread.start()
    assert started.wait(60), "server did not start"
    if "error" in box:
        raise AssertionError(f"server failed: {box['error']!r}")
    try:
        yield str(box["url"])
    finally:
        box["stop"]()  # type: ignore[operator]
        thread.join(30)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_no_500_for_any_generated_input(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path.startswith("/api/")]
    assert len(operations) == 7  # the five CRM reads, KPIs and route analytics
    auths = st.sampled_from(
        [{"Authorization": f"Bearer {ADMIN_TOKEN}"}, {"Authorization": "Bearer wrong"}, {}]
    )
    statuses: set[int] = set()
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=30,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(case=op.as_strategy(mode), headers=auths)
            def check(case: schemathesis.Case, headers: dict[str, str]) -> None:
                response = case.call(base_url=base_url, headers=headers)
                statuses.add(response.status_code)
                assert response.status_code < 500, (case.path, case.query, response.text)
                case.validate_response(response, checks=CHECKS)

            check()
    # the generator reached the three answers that matter
    assert {200, 400, 401} <= statuses
