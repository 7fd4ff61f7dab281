"""The console page in a real headless browser: Debian's Chromium driven by Playwright.

Why this browser: the system's ``/usr/bin/chromium`` (``apt-get install chromium``; the browser
section of scripts/bootstrap.sh), driven through Playwright's Python package with
``executable_path``.  ``playwright install`` is never run: it downloads a browser build of its
own, which machines without internet (and CI) cannot do.  No browser means a failed test
naming the install command, never a skip.

For tests, two things:

* :func:`open_browser` — one Chromium, closed on exit;
* :func:`open_console` — the page at a base URL with a token, as a :class:`ConsolePage` with the
  few actions an end-to-end test needs (``wait_for_alert``, ``acknowledge``, ``comment``,
  ``screenshot``) so such a test reads as what a dispatcher does::

      async with open_browser() as browser, open_console(browser, base_url, token) as page:
          alert_id = await page.wait_for_alert(kind="late")
          await page.acknowledge(alert_id)
          await page.comment(alert_id, "called the driver: 15 min")
          await page.screenshot(tmp_path / "console.png")

Every wait is for a condition in the page with a timeout (Playwright's ``wait_for_function``),
never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Page, async_playwright

#: Debian's Chromium; FLEETWATCH_CHROMIUM overrides (another Chromium-based binary)
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1920, "height": 1080}
DEFAULT_TIMEOUT_S = 15.0


def chromium_path() -> str:
    """The browser binary, or a test failure that says how to install it."""
    path = os.environ.get("FLEETWATCH_CHROMIUM") or DEFAULT_CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        found = shutil.which("chromium")
        if found is None:
            pytest.fail(
                f"no Chromium at {path}: install Debian's browser (as root: "
                "`apt-get install chromium`, what scripts/bootstrap.sh does) or set "
                "FLEETWATCH_CHROMIUM; the page tests never download a browser"
            )
        path = found
    return path


@contextlib.asynccontextmanager
async def open_browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the duration of the block."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # root in a container has no user namespace for Chromium's sandbox; the page under
            # test is ours and served from loopback
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            await browser.close()


class ConsolePage:
    """One console page; the methods wait for what a dispatcher would see."""

    def __init__(self, page: Page, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.page = page
        self.timeout_ms = timeout_s * 1000
        self.console_errors: list[str] = []
        page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))
        page.on(
            "console",
            lambda m: self.console_errors.append(m.text) if m.type == "error" else None,
        )

    # -- waiting ----------------------------------------------------------------------------
    async def wait_for(self, js: str, arg: Any = None, *, timeout_s: float | None = None) -> Any:
        """Wait until the JS expression/function *js* is truthy; returns its value."""
        timeout = self.timeout_ms if timeout_s is None else timeout_s * 1000
        handle = await self.page.wait_for_function(js, arg=arg, timeout=timeout)
        return await handle.json_value()

    async def wait_connected(self) -> None:
        """The page started, the server said hello and the snapshot is applied."""
        await self.wait_for(
            "() => document.body.dataset.ready === '1'"
            " && document.getElementById('conn').dataset.state === 'open'"
            " && window.fleetwatch.state.lastSeq !== null"
        )

    async def wait_frame(self) -> None:
        """Two animation frames: whatever was queued for drawing is on the canvas."""
        await self.page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )

    async def wait_for_alert(
        self,
        alert_id: str | None = None,
        *,
        kind: str | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Wait until an alert card (this id, or any of *kind*, or any) is in the feed;
        returns its alert id."""
        js = """([id, kind]) => {
            for (const el of document.querySelectorAll('#alerts li.alert')) {
                const a = window.fleetwatch.state.alerts.get(el.dataset.alertId);
                if (!a) continue;
                if ((id === null || a.alert_id === id) && (kind === null || a.kind === kind))
                    return a.alert_id;
            }
            return null;
        }"""
        found = await self.wait_for(js, [alert_id, kind], timeout_s=timeout_s)
        return str(found)

    def card(self, alert_id: str) -> Any:
        return self.page.locator(f"#alerts li.alert[data-alert-id={json.dumps(alert_id)}]")

    # -- acting -----------------------------------------------------------------------------
    async def acknowledge(self, alert_id: str) -> None:
        """Click the card's acknowledge button; wait until the card shows it acknowledged."""
        await self.wait_for_alert(alert_id)
        await self.card(alert_id).locator("button.act-ack").click()
        await self.wait_for(
            "(id) => { const el = document.querySelector("
            '`#alerts li.alert[data-alert-id="${CSS.escape(id)}"]`);'
            " return el && el.dataset.status === 'acknowledged'; }",
            alert_id,
        )

    async def comment(self, alert_id: str, text: str) -> None:
        """Write *text* in the card's comment form and send it; wait until the card shows it."""
        await self.wait_for_alert(alert_id)
        card = self.card(alert_id)
        await card.locator("button.act-comment").click()
        await card.locator("textarea.a-comment-text").fill(text)
        await card.locator("button.act-send").click()
        await self.wait_for(
            "([id, text]) => { const a = window.fleetwatch.state.alerts.get(id);"
            " return a && a.comments.some(c => c.text === text.trim()); }",
            [alert_id, text],
        )
        await card.locator(".a-comment-body", has_text=text.strip()).first.wait_for(
            timeout=self.timeout_ms
        )

    async def select_vehicle(self, vehicle_id: str) -> None:
        """Choose a vehicle in the route panel's search (as a dispatcher types its number);
        wait until its route panel is drawn (the head and the table are drawn in one go).

        The box keeps the focus and, typed into, says ``change`` once more when the next
        click's press takes the focus away, as a browser does after typing: the page must not
        redraw the pressed button then (a lost click)."""
        await self.page.locator("#vehicle-search").fill(vehicle_id)
        await self.page.locator("#vehicle-search").dispatch_event("change")
        await self.page.locator(f"#route-head:has-text({json.dumps(vehicle_id)})").wait_for(
            timeout=self.timeout_ms
        )

    async def set_language(self, lang: str) -> None:
        await self.page.locator(f"#lang-{lang}").click()
        await self.wait_for("(l) => document.documentElement.lang === l", lang)

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page as the dispatcher sees it (after pending drawing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.wait_frame()
        await self.page.screenshot(path=str(path))
        return path

    # -- reading ----------------------------------------------------------------------------
    async def alert_order(self) -> list[str]:
        """The alert ids in the feed, top to bottom."""
        ids = await self.page.eval_on_selector_all(
            "#alerts li.alert", "els => els.map(e => e.dataset.alertId)"
        )
        return [str(x) for x in ids]

    async def metrics(self) -> dict[str, Any]:
        """The page's own timings (positions frames, snapshot)."""
        m = await self.page.evaluate("() => JSON.parse(JSON.stringify(window.fleetwatch.metrics))")
        return dict(m)


@contextlib.asynccontextmanager
async def open_console(
    browser: Browser,
    base_url: str,
    token: str | None,
    *,
    lang: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    wait_connected: bool = True,
) -> AsyncIterator[ConsolePage]:
    """The console at *base_url* (``http://127.0.0.1:PORT``) signed in with *token* (None:
    the login form is left to the test), in a fresh 1920×1080 context (its own storage).
    *lang* pre-selects the UI language as a dispatcher's earlier choice would."""
    context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)  # type: ignore[arg-type]
    try:
        if lang is not None:
            await context.add_init_script(
                f"localStorage.setItem('fleetwatch.lang', {json.dumps(lang)})"
            )
        page = await context.new_page()
        console = ConsolePage(page, timeout_s=timeout_s)
        url = base_url.rstrip("/") + "/"
        if token is not None:
            url += "?token=" + quote(token, safe="")
        await page.goto(url)
        if wait_connected and token is not None:
            await console.wait_connected()
        yield console
    finally:
        await context.close()
