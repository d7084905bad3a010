"""Open a local page in headless Chromium over the DevTools protocol and report what a person would notice.

``load_page(path)`` starts a fresh Chromium (own profile, no network services), navigates to the file, waits
for the load event and for every <audio> element's metadata, and returns console errors, uncaught exceptions,
failed requests, requests that left the machine, image states, a screenshot and values of JavaScript expressions.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
    "--window-size=1400,1000",
]

WAIT_FOR_MEDIA = """
Promise.all([...document.querySelectorAll('audio')].map(a => a.readyState >= 1 ? a.duration : new Promise(r => {
  a.addEventListener('loadedmetadata', () => r(a.duration)); a.addEventListener('error', () => r(-1)); })))
  .then(d => JSON.stringify(d))
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)  # anything not file: / data:
    requests: list[str] = field(default_factory=list)
    audio_durations: list[float] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    screenshot: bytes = b""


class _DevTools:
    def __init__(self, ws_url: str, timeout: float):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, deadline: float) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(f"no {method} event")


def load_page(
    path: Path, expressions: dict[str, str], timeout: float = 60.0, viewport: tuple[int, int] = (1400, 1000)
) -> PageReport:
    chrome = find_chromium()
    if chrome is None:
        raise FileNotFoundError("chromium not found")
    profile = tempfile.mkdtemp(prefix="cavmae-chromium-")
    proc = subprocess.Popen(
        [chrome, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        port_file = Path(profile) / "DevToolsActivePort"
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        tools = _DevTools(pages[0]["webSocketDebuggerUrl"], timeout)
        for domain in ("Runtime", "Log", "Network", "Page"):
            tools.call(f"{domain}.enable")
        width, height = viewport
        tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", url=Path(path).resolve().as_uri())
        tools.wait_event("Page.loadEventFired", deadline)
        report = PageReport()
        media = tools.call("Runtime.evaluate", expression=WAIT_FOR_MEDIA, awaitPromise=True, returnByValue=True)
        report.audio_durations = json.loads(media["result"]["value"])
        for name, expr in expressions.items():
            report.values[name] = tools.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get(
                "value"
            )
        shot = tools.call("Page.captureScreenshot", format="png")
        report.screenshot = base64.b64decode(shot["data"])
        time.sleep(0.5)  # late console messages / failed loads
        tools.call("Runtime.evaluate", expression="1")
        for e in tools.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                report.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                report.exceptions.append(p["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                report.console_errors.append(f"{p['entry']['source']}: {p['entry']['text']}")
            elif method == "Network.loadingFailed":
                report.failed_requests.append(f"{p.get('errorText')} ({p.get('requestId')})")
            elif method == "Network.requestWillBeSent":
                url = p["request"]["url"]
                report.requests.append(url)
                if not url.startswith(("file:", "data:")):
                    report.network_requests.append(url)
            elif method == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
                report.failed_requests.append(f"HTTP {p['response']['status']} {p['response']['url']}")
        tools.ws.close()
        return report
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def require_browser() -> bool:
    """True where CI asks for the browser tests to run (they fail instead of skipping without Chromium)."""
    return os.environ.get("CAVMAE_REQUIRE_BROWSER") == "1"
