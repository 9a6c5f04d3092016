"""A minimal Chrome DevTools Protocol driver for the UI test: headless Debian Chromium, one page.

Nothing is downloaded: it starts the given Chromium binary in its own process group with a fresh
profile, connects to the page's DevTools websocket and offers what an operator's session needs:
navigate, read the page, wait for something, and click with real mouse events at an element.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.request
from pathlib import Path

from deploy_fixtures import child_env, start_group, stop_group

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1600,1000")


class Page:
    def __init__(self, chromium: str, workdir: Path, timeout: float = 60):
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True)
        self.proc = start_group([chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 "about:blank"], workdir / "chromium.log", child_env())
        self._id = 0
        try:
            port = self._devtools_port(profile / "DevToolsActivePort", timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
                [target] = [t for t in json.load(reply) if t["type"] == "page"]
            from websockets.sync.client import connect

            self._stack = contextlib.ExitStack()
            self.ws = self._stack.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None,
                                                        open_timeout=timeout))
        except BaseException:
            stop_group(self.proc)
            raise

    def _devtools_port(self, path: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not (path.is_file() and path.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not open its DevTools port (exit code {self.proc.poll()})")
            time.sleep(0.1)
        return int(path.read_text().split()[0])

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            stop_group(self.proc)

    def send(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # events arrive in between; only the answer to this call matters here
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str, timeout: float = 90):
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is (re)loading: no document.body yet, or a new context
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText.slice(0, 1500) : ''")
                raise AssertionError(f"timed out waiting for {what}; the page shows:\n{text}")
            time.sleep(0.5)

    def click(self, selector: str, what: str, text: str | None = None, timeout: float = 60) -> None:
        """Click the middle of the first visible element matching the CSS ``selector`` (and whose text
        is ``text``), as a mouse does."""
        box = self.wait_for(
            f"""(() => {{ const el = [...document.querySelectorAll({json.dumps(selector)})]
                  .find(e => e.getBoundingClientRect().width > 0 && !e.disabled
                             && ({json.dumps(text)} === null || e.innerText.trim() === {json.dumps(text)}));
                if (!el) return null; el.scrollIntoView({{block: 'center'}});
                const r = el.getBoundingClientRect(); return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()""",
            what, timeout)
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=box["x"], y=box["y"])
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def snapshot(self, stem: Path) -> None:
        """Save what the page shows as ``stem``.png (a screenshot) and ``stem``.html (the DOM)."""
        shot = self.send("Page.captureScreenshot", format="png")
        stem.with_suffix(".png").write_bytes(base64.b64decode(shot["data"]))
        stem.with_suffix(".html").write_text(self.evaluate("document.documentElement.outerHTML") or "")

    def shortcut(self, code: str, key: str, alt: bool = False) -> None:
        """Press a key (``code`` as in KeyboardEvent.code), with Alt held if ``alt``."""
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, code=code, key=key, modifiers=1 if alt else 0)
