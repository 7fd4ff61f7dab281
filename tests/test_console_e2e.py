"""Issue 10 end to end: the simulator publishes over real MQTT, the real service (engine with
the schedule board and the alert desk, store writer, console, CRM API) runs on a real
PostgreSQL, the dispatcher console runs in real headless Chromium (playwright driving Debian's
chromium): a missed-stop alert appears on the page, the dispatcher acknowledges and comments it
through the UI, and the comment reaches the CRM feed of visit exceptions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.auth import entry_toml, mint
from simulators.formats import merged_payloads
from simulators.scenario import write_scenario
from tests.support.broker import Broker
from tests.support.browser import open_browser, open_console
from tests.test_engine_live import small_params
from tests.test_ingest_service_integration import eventually, publish, running, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.slow]

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "img"


def feed(base: str, token: str, after: str | None = None) -> dict[str, Any]:
    url = f"{base}/api/crm/v1/visit-exceptions?limit=1000" + (f"&after={after}" if after else "")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def all_items(base: str, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = feed(base, token, after)
        items += page["items"]
        after = page["next"]
        if not page["more"]:
            return items


@pytest.mark.timeout(400)
async def test_a_missed_stop_alert_is_acknowledged_and_commented_in_the_browser_and_reaches_the_crm(
    mqtt_broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    scenario = tmp_path / "scenario"
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    write_scenario(dataclasses.replace(small_params(day), skip_rate=0.2), scenario)
    truth = json.loads((scenario / "truth.json").read_text())
    skipped = {s["site_id"] for s in truth["skipped"]}
    assert skipped  # the day has a stop that will be missed
    tokens: dict[str, str] = {}
    lines = []
    for user, scopes in (("D01", ["dispatcher"]), ("crm", ["crm:read"])):
        tokens[user], entry = mint(user, scopes)
        lines.append(entry_toml(entry))
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text("\n".join(lines))
    items = [(f"fleet/{u}/nmea", p) for _, u, p in merged_payloads(scenario)]
    settings = settings_for(
        mqtt_broker,
        pg_dsn,
        scenario / "units.csv",
        sites_file=scenario / "sites.geojson",
        plans_dir=scenario,
        tokens_file=tokens_file,
        detect_interval_ms=200.0,
    )
    text = "Клиент закрыт на ремонт, перенесли на завтра"
    async with running(settings) as h:
        base = f"http://127.0.0.1:{h.http_port}"
        async with open_browser() as browser, open_console(browser, base, tokens["D01"]) as page:
            await publish(mqtt_broker, items)
            await eventually(lambda: h.service.statistics().messages_acked >= len(items))
            assert h.engine is not None
            await h.engine.flush()
            alert_id = await page.wait_for_alert(kind="missed", timeout_s=90)
            site = alert_id.split("/")[-1]
            assert site in skipped  # the alert is about a stop nobody served
            await page.screenshot(tmp_path / "console-missed.png")
            await page.acknowledge(alert_id)
            await page.comment(alert_id, text)
            await page.screenshot(tmp_path / "console-commented.png")

            def commented() -> bool:
                return any(
                    x["site_id"] == site and any(c["text"] == text for c in x["comments"])
                    for x in all_items(base, tokens["crm"])
                )

            await eventually(commented, timeout_s=60)
            # the last hour's track of a truck comes from the store (ws/track.py)
            vehicle = (scenario / "units.csv").read_text().splitlines()[1].split(",")[1]
            await page.select_vehicle(vehicle)
            await page.page.locator("#track-btn").click()
            await page.wait_for("() => document.getElementById('track-info').dataset.source")
            info = page.page.locator("#track-info")
            assert await info.get_attribute("data-source") == "store"
            assert await info.get_attribute("data-error") == ""
            assert await page.page.evaluate("() => window.fleetwatch.map.trackShown")
    assert (tmp_path / "console-commented.png").stat().st_size > 10_000
