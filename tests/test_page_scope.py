"""The console page's "Show:" control (all / my vehicles / map view) in real headless Chromium
against the real server: the real hub narrows what it sends, so what is checked is what the
dispatcher ends up seeing, not only what the page asks for.

The server is the one of tests/test_ws_server.py (a real engine with routes V001: S1, S2;
V002: S3; V003: S4; the roster gives D01 the vehicles V001 and V002), with the page served on
the same web shell.  Positions and alerts are published through the server's publisher, as
the live engine does.  The sites S1..S6 stand in a row along 55.75 N at 37.61 ... 37.66 E.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.fixes import iso_utc
from tests.support.browser import ConsolePage, open_browser, open_console
from tests.test_ws_server import World, running
from tests.ws_helpers import T0, S, pos

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LAT = 55.75
LON = {"V001": 37.611, "V002": 37.630, "V003": 37.651}
#: the engine's alerts at 09:48 of the test day: each planned stop is late, each vehicle behind
#: schedule and silent (its only fixes are these positions, which are not fixes)
ALL_CARDS = sorted(
    [f"stop/2026-11-23/S{i}" for i in range(1, 5)]
    + [
        f"vehicle/2026-11-23/V00{i}/{k}"
        for i in range(1, 4)
        for k in ("behind_schedule", "gps_silent")
    ]
)


def cards(*about: str) -> list[str]:
    """The alerts about these sites / vehicles."""
    return [a for a in ALL_CARDS if a.split("/")[2] in about]


def publish_world(w: World, t_s: float) -> None:
    w.server.publish([pos(v, t_s, lon=lon, lat=LAT) for v, lon in LON.items()])


async def shown(page: ConsolePage) -> dict[str, Any]:
    """What the page holds and draws: vehicles (state and map markers), alert cards, sites."""
    got = await page.page.evaluate(
        """() => ({
            vehicles: [...window.fleetwatch.state.vehicles.keys()].sort(),
            markers: [...window.fleetwatch.map.vehicles.keys()].sort(),
            cards: [...document.querySelectorAll('#alerts li.alert')]
                .map(e => e.dataset.alertId).sort(),
            sites: [...window.fleetwatch.state.sites.keys()].sort(),
        })"""
    )
    return dict(got)


async def wait_shown(page: ConsolePage, **want: list[str]) -> dict[str, Any]:
    """Wait until every named list of :func:`shown` is as wanted."""
    js = """(want) => {
        const got = {
            vehicles: [...window.fleetwatch.state.vehicles.keys()].sort(),
            markers: [...window.fleetwatch.map.vehicles.keys()].sort(),
            cards: [...document.querySelectorAll('#alerts li.alert')]
                .map(e => e.dataset.alertId).sort(),
            sites: [...window.fleetwatch.state.sites.keys()].sort(),
        };
        return Object.entries(want).every(([k, v]) => JSON.stringify(got[k]) === JSON.stringify(v));
    }"""
    try:
        await page.wait_for(js, want)
    except Exception:
        app = await page.page.evaluate(
            "() => [window.fleetwatch.app.scope, window.fleetwatch.app.sentRegion,"
            " window.fleetwatch.map.regionBounds()]"
        )
        pytest.fail(f"the page shows {await shown(page)}, not {want}; scope, sent, map: {app}")
    return await shown(page)


async def view(page: ConsolePage, west: float, east: float) -> None:
    """Show the map between *west* and *east* (a narrow band around the sites' row)."""
    await page.page.evaluate(
        "([w, e]) => window.fleetwatch.map.map.fitBounds([[55.748, w], [55.752, e]],"
        " {animate: false})",
        [west, east],
    )


async def test_show_all_mine_or_the_map_view_narrows_what_the_page_gets_and_is_remembered(
    tmp_path: Any,
) -> None:
    async with running(page=True) as w:
        publish_world(w, 60)
        base = f"http://127.0.0.1:{w.port}"
        async with open_browser() as browser, open_console(browser, base, w.tokens["D01"]) as page:
            everything = await wait_shown(
                page,
                vehicles=["CLOCK", "V001", "V002", "V003"],  # CLOCK: the engine's clock unit
                markers=["CLOCK", "V001", "V002", "V003"],
                cards=ALL_CARDS,
            )
            assert everything["sites"] == ["S1", "S2", "S3", "S4", "S5", "S6"]
            assert await page.page.locator("#scope").input_value() == "all"
            assert "мои машины" in await page.page.locator("#scope").inner_text()

            # my vehicles: D01's V001 and V002 and the alerts about them (their stops S1-S3)
            await page.page.locator("#scope").select_option("mine")
            mine = cards("S1", "S2", "S3", "V001", "V002")
            await wait_shown(page, vehicles=["V001", "V002"], markers=["V001", "V002"], cards=mine)
            # news about others' vehicles does not reach the page; news about mine does
            publish_world(w, 70)
            await page.wait_for(
                "(t) => window.fleetwatch.state.vehicles.get('V001').t === t",
                iso_utc(T0 + 70 * S),
            )
            await wait_shown(page, vehicles=["V001", "V002"], cards=mine)
            assert (
                await page.page.evaluate("() => window.fleetwatch.state.vehicles.get('V003')")
                is None
            )

            # map view: only what the map shows (S1, S2 and V001 between 37.606 and 37.624)
            await view(page, 37.606, 37.624)
            await page.page.locator("#scope").select_option("region")
            narrowed = await wait_shown(
                page, vehicles=["V001"], markers=["V001"], cards=cards("S1", "S2", "V001")
            )
            assert narrowed["sites"] == ["S1", "S2"]
            # the map moves: the region follows (debounced); V003, S4, S5 and their alerts
            await view(page, 37.636, 37.654)
            moved = await wait_shown(
                page, vehicles=["V003"], markers=["V003"], cards=cards("S4", "V003")
            )
            assert moved["sites"] == ["S4", "S5"]
            await page.screenshot(tmp_path / "scope-region.png")

            # remembered across a reload: the page says "map view" again to the new connection
            await page.page.reload()
            await page.wait_connected()
            assert await page.page.locator("#scope").input_value() == "region"
            assert await page.page.evaluate("() => localStorage.getItem('fleetwatch.scope')") == (
                "region"
            )
            # the page fits the map to the sites on its first snapshot and subscribes to that
            # view; once it has, our own view is not undone by that fit
            await page.wait_for(
                "() => window.fleetwatch.app.sentRegion"
                " === window.fleetwatch.map.regionBounds().join(',')"
            )
            await view(page, 37.606, 37.624)
            await wait_shown(
                page, vehicles=["V001"], cards=cards("S1", "S2", "V001"), sites=["S1", "S2"]
            )

            # all: everything again
            await page.page.locator("#scope").select_option("all")
            await wait_shown(
                page,
                vehicles=["CLOCK", "V001", "V002", "V003"],
                markers=["CLOCK", "V001", "V002", "V003"],
                cards=ALL_CARDS,
                sites=["S1", "S2", "S3", "S4", "S5", "S6"],
            )
            await page.set_language("en")
            assert "map view" in await page.page.locator("#scope").inner_text()
            assert not page.console_errors, page.console_errors


async def test_the_track_says_where_it_came_from() -> None:
    """Without a store the hub's memory answers: the route panel says so."""
    async with running(page=True) as w:
        for k in range(10):
            w.server.publish([pos("V001", 60 + 30 * k, lon=37.61 + 0.001 * k, lat=LAT)])
        base = f"http://127.0.0.1:{w.port}"
        async with (
            open_browser() as browser,
            open_console(browser, base, w.tokens["D01"], lang="en") as page,
        ):
            await page.select_vehicle("V001")
            await page.page.locator("#track-btn").click()
            await page.wait_for("() => window.fleetwatch.map.trackShown")
            info = page.page.locator("#track-info")
            assert await info.get_attribute("data-source") == "memory"
            assert await info.get_attribute("data-error") == "unavailable"
            assert "no database" in await info.inner_text()
            assert await info.is_visible()
            await page.page.locator("#track-btn").click()  # hide: the note goes with the track
            await page.wait_for("() => !window.fleetwatch.map.trackShown")
            assert not await info.is_visible()
            assert not page.console_errors, page.console_errors
