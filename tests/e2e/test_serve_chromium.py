"""`gpuconsole serve` opened in a real headless Chromium (the Debian `chromium` package), driven over
the DevTools protocol: the page draws the fleet (a screenshot, and the bytes the page's terminal
received), arrow keys typed into the page move the selection to the next node, and read-only (the
default) ignores `r`. The page's own websocket is observed by a script added before the page loads,
since its terminal paints on a canvas that has no text to read."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import free_port, stop, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")

# Runs in the page before its own scripts: keeps what the page's websocket receives (the terminal's
# output) and sends (its keystrokes) where the test can read them.
OBSERVE_WEBSOCKET = """
window.__received = ""; window.__sent = [];
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    const decoder = new TextDecoder();
    this.addEventListener("message", (event) => {
      if (typeof event.data === "string") { window.__received += event.data; }
      else if (event.data instanceof ArrayBuffer) { window.__received += decoder.decode(event.data); }
      else if (event.data instanceof Blob) { event.data.text().then((t) => { window.__received += t; }); }
    });
  }
  send(data) { window.__sent.push(String(data)); return super.send(data); }
};
"""
KEYS = {"ArrowDown": ("ArrowDown", 40, ""), "ArrowUp": ("ArrowUp", 38, ""), "r": ("KeyR", 82, "r")}


class DevTools:
    """One page of the browser over the Chrome DevTools Protocol (a websocket of JSON calls)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:  # events (there are none enabled that matter) are skipped
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")

    async def until(self, text: str, since: int = 0, timeout_s: float = 30.0) -> int:
        """Wait until the page's terminal received `text` after position `since`; the position after."""
        deadline = time.monotonic() + timeout_s
        while True:
            received: str = await self.evaluate("window.__received") or ""
            found = received.find(text, since)
            if found >= 0:
                return found + len(text)
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never reached the page; last: {received[-300:]!r}")
            await asyncio.sleep(0.2)

    async def type_key(self, name: str) -> None:
        """A key typed into the page as a person types it: keyDown (with its text), keyUp."""
        code, key_code, text = KEYS[name]
        down: dict[str, Any] = {"type": "keyDown", "key": name, "code": code, "windowsVirtualKeyCode": key_code}
        if text:
            down["text"] = text
        await self.call("Input.dispatchKeyEvent", **down)
        await self.call("Input.dispatchKeyEvent", type="keyUp", key=name, code=code, windowsVirtualKeyCode=key_code)

    async def screenshot(self, path: Path) -> bytes:
        """The page as painted: after two animation frames, so the terminal drew what it received."""
        await self.call("Runtime.evaluate", awaitPromise=True,
                        expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
        await asyncio.to_thread(path.write_bytes, shot)
        return shot


def test_serve_in_headless_chromium(demo: DemoThread, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gpuconsole", "--config", str(demo.config_path), "serve",
                               "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    profile = tmp_path / "chromium"
    browser = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                                f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        devtools_port = wait_for(lambda: _active_port(profile), timeout_s=30, message="Chromium's DevTools port")
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/"), timeout_s=30, message="serve's page")
        pages = json.loads(_get(f"http://127.0.0.1:{devtools_port}/json/list") or "[]")
        page_ws = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")

        async def drive() -> None:
            async with aiohttp.ClientSession() as session, session.ws_connect(page_ws, max_msg_size=0) as ws:
                tools = DevTools(ws)
                await tools.call("Page.enable")
                await tools.call("Page.addScriptToEvaluateOnNewDocument", source=OBSERVE_WEBSOCKET)
                await tools.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
                at = await tools.until("GPUs · node-01")
                at = max(at, await tools.until("/2 up"))  # the fleet is drawn: "nodes 2/2 up"
                first = await tools.screenshot(tmp_path / "fleet.png")
                assert first.startswith(b"\x89PNG") and len(first) > 20_000  # a drawn console, not a blank page
                # Focus the terminal's input as the page does on load (a click would also select
                # whatever widget is under the pointer, which depends on the fonts' metrics).
                await tools.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
                await tools.type_key("ArrowDown")
                at = await tools.until("GPUs · node-02", since=at)  # the keystroke moved the selection
                assert any("\\u001b[B" in sent or "\x1b[B" in sent for sent in await tools.evaluate("window.__sent"))
                second = await tools.screenshot(tmp_path / "node-02.png")
                assert second != first
                await tools.type_key("r")  # read-only: ignored; the next key shows it was handled first
                await tools.type_key("ArrowUp")
                later = await tools.until("GPUs · node-01", since=at)
                received: str = await tools.evaluate("window.__received")
                assert "Reserve GPUs" not in received[at:later]
                sent = await tools.evaluate("window.__sent")
                assert any('"r"' in s for s in sent)  # `r` did reach the console, which ignored it

        asyncio.run(drive())
    finally:
        for process in (browser, server):
            stop(process, 30)


def _active_port(profile: Path) -> int | None:
    try:
        first = (profile / "DevToolsActivePort").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: str = response.read().decode()
            return body
    except OSError:
        return None
