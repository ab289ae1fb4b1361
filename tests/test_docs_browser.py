"""TOKEN_BROKER_DOCS in a real headless Chromium: the page loads from loopback only, renders the
API, and its Content-Security-Policy blocks outside scripts, inline scripts and token fetches."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from playwright.async_api import async_playwright

from tests.processes import broker_process

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium), as .ci/run has"
)
# python.md's flags for this machine: no background calls home, which the closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every CSP violation the page reports, recorded before any of its own scripts run.
RECORD_VIOLATIONS = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.violations.push({directive: event.effectiveDirective, blocked: event.blockedURI});
});
"""
INJECT_OUTSIDE = """(url) => new Promise((resolve) => {
  const script = document.createElement("script");
  script.src = url;
  script.onload = () => resolve("loaded");
  script.onerror = () => resolve("refused");
  document.head.appendChild(script);
})"""
INJECT_INLINE = """() => {
  const script = document.createElement("script");
  script.textContent = "window.inlineRan = true;";
  document.head.appendChild(script);
  return window.inlineRan === true;
}"""
# Same-origin, so the browser would let it send the guard header: only the CSP stops it.
FETCH_TOKEN = """() => fetch("/fleets/fleet-1234/computes/my-host/token",
    {headers: {"X-Token-Broker-Request": "true"}}).then((r) => r.status, () => "refused")"""


@pytest.fixture
def outside() -> Iterator[tuple[str, list[str]]]:
    """A stand-in for a third-party script host, on another loopback address: its URL, and the
    paths it was asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b"window.outsideRan = true;"
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.2:{server.server_address[1]}/x.js", asked
    finally:
        server.shutdown()
        server.server_close()


async def test_docs_page_renders_from_loopback_and_its_csp_blocks_injections(
    outside: tuple[str, list[str]],
) -> None:
    outside_url, outside_asked = outside
    with broker_process("--emulator", "--port", "0", TOKEN_BROKER_DOCS="true") as process:
        url = process.url()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
            )
            try:
                page = await browser.new_page()
                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                await page.add_init_script(RECORD_VIOLATIONS)
                response = await page.goto(f"{url}/docs")
                assert response is not None and response.status == 200
                # Swagger UI rendered the document: the token operation is on the page.
                operation = page.locator(".opblock-summary-operation-id", has_text="getToken")
                await operation.wait_for(timeout=30_000)
                assert await page.evaluate("window.violations") == [], "the page breaks its CSP"
                loaded = list(requested)

                # No "Try it out", even with the operation open.
                await operation.click()
                await page.locator(".opblock-body").first.wait_for(timeout=10_000)
                assert await page.locator("button.try-out__btn").count() == 0

                assert await page.evaluate(INJECT_OUTSIDE, outside_url) == "refused"
                assert await page.evaluate(INJECT_INLINE) is False
                assert await page.evaluate(FETCH_TOKEN) == "refused"
                assert await page.evaluate("window.outsideRan === undefined")
                violations = await page.evaluate("window.violations")
            finally:
                await browser.close()
    assert outside_asked == [], "the outside script host was reached"
    directives = {violation["directive"]: violation["blocked"] for violation in violations}
    assert directives.get("script-src-elem") in {outside_url, "inline"}
    assert any(v["blocked"] == outside_url for v in violations), violations
    assert any(v["blocked"] == "inline" for v in violations), violations
    assert directives.get("connect-src", "").endswith("/token"), violations
    # The page and its three files, all from the broker; nothing else was asked for but the
    # injected script, which the browser refused before it reached its host.
    broker = urlsplit(url).netloc
    assert {urlsplit(request).netloc for request in loaded} == {broker}, loaded
    assert set(requested) - set(loaded) <= {outside_url}, requested
    assert {urlsplit(request).path for request in loaded} >= {
        "/docs",
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/init.js",
    }
