"""`gpuconsole serve` against the demo, driven as a browser drives it (textual-serve's page protocol
over a real websocket): the page is served, the console it runs draws the fleet, a keystroke sent
through the socket moves the selection to the next node, and read-only (the default) ignores `r`,
which opens the reserve dialog once the operator passed --allow-actions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request

import aiohttp
import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import free_port, wait_for

DOWN, UP = "\x1b[B", "\x1b[A"


class Page:
    """One browser page's websocket: what the console drew so far, and keys to send."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.screen = ""

    async def until(self, text: str, since: int = 0, timeout_s: float = 30.0) -> int:
        """Wait until `text` is drawn after output position `since`; the position after it."""
        deadline = time.monotonic() + timeout_s
        while text not in self.screen[since:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never drawn; last output: {self.screen[-400:]!r}")
            try:
                message = await self.ws.receive(timeout=left)
            except TimeoutError:
                continue
            if message.type == aiohttp.WSMsgType.BINARY:
                self.screen += message.data.decode("utf-8", "replace")
            elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise AssertionError(f"the page's socket closed; last output: {self.screen[-400:]!r}")
        return self.screen.index(text, since) + len(text)

    async def press(self, keys: str) -> None:
        await self.ws.send_str(json.dumps(["stdin", keys]))


@pytest.mark.parametrize("allow_actions", [False, True], ids=["read-only", "allow-actions"])
def test_the_console_in_a_browser_page(demo: DemoThread, allow_actions: bool) -> None:
    port = free_port()
    flags = ["--allow-actions"] if allow_actions else []
    server = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path), "serve",
                               "--listen", f"127.0.0.1:{port}", *flags], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        def page_html() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    body: str = response.read().decode()
                    return body
            except OSError:
                return None

        html = wait_for(page_html, timeout_s=30, message="the page")
        assert "/ws" in html and "gpuconsole" in html

        async def drive() -> None:
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(f"ws://127.0.0.1:{port}/ws?width=140&height=40") as ws:
                page = Page(ws)
                await page.until("node-02")  # the fleet is drawn
                at = await page.until("GPUs · node-01")
                await page.press(DOWN)
                at = await page.until("GPUs · node-02", since=at)  # the keystroke moved the selection
                await page.press("r")
                if allow_actions:  # the operator allowed it: `r` opens the reserve dialog
                    await page.until("Reserve GPUs", since=at)
                    return
                await page.press(UP)  # read-only: a key whose effect shows that `r` was handled before it
                await page.until("GPUs · node-01", since=at)
                assert "Reserve GPUs" not in page.screen[at:]

        asyncio.run(drive())
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            pytest.fail("serve did not stop on SIGTERM")
