"""The page's text box in headless Chromium: a style name typed in any case is applied, and a
text that names no style picks the closest name and says so (no text model on this server)."""

from __future__ import annotations

import asyncio

from browser_env import CHROMIUM, pytestmark  # noqa: F401 (pytestmark marks this module)

TYPE_AND_WAIT = """async (text) => {
  document.getElementById('prompt-text').value = text;
  document.getElementById('generate').click();
  const button = document.getElementById('generate').textContent;
  const began = performance.now();
  while (performance.now() - began < 15000) {
    await new Promise((r) => setTimeout(r, 100));
    if (document.getElementById('generate').textContent === 'Generate') break;
  }
  return {buttonWhileWaiting: button, buttonAfter: document.getElementById('generate').textContent,
          notice: document.getElementById('notice').textContent, errors: [...window.streamfx.errors]};
}"""


async def _scenario() -> dict:
    from aiohttp import web
    from playwright.async_api import async_playwright

    from benchmarks.browser_roundtrip import FLAGS
    from streamfx.pipeline.engines.overlay import OverlayEngine
    from streamfx.server import ServerConfig, create_app

    app = create_app(ServerConfig(ice_loopback=True), engine=OverlayEngine())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{port}/?autostart")
                await page.wait_for_function("window.streamfx && window.streamfx.framesReceived > 3", timeout=60_000)
                await page.evaluate("""() => { const ch = window.streamfx.channel, send = ch.send.bind(ch);
                    window.sentTexts = []; ch.send = (t) => { window.sentTexts.push(JSON.parse(t)); send(t); }; }""")
                exact = await page.evaluate(TYPE_AND_WAIT, "INVERT")
                closest = await page.evaluate(TYPE_AND_WAIT, "inverted colours")
                exact["sent"] = closest["sent"] = await page.evaluate("() => window.sentTexts")
                return {"exact": exact, "closest": closest}
            finally:
                await browser.close()
    finally:
        await runner.cleanup()


def test_the_text_box_applies_a_style_name_and_reports_the_closest():
    result = asyncio.run(asyncio.wait_for(_scenario(), 180))
    exact, closest = result["exact"], result["closest"]
    texts = [m for m in exact["sent"] if m.get("type") == "prompt"]
    assert texts == [{"type": "prompt", "text": "INVERT"}, {"type": "prompt", "text": "inverted colours"}]
    assert exact["buttonWhileWaiting"].startswith("generating") and exact["buttonAfter"] == "Generate"
    assert "closest" not in exact["notice"] and exact["errors"] == []
    assert 'using the closest, "invert"' in closest["notice"], closest["notice"]
    assert closest["buttonAfter"] == "Generate" and closest["errors"] == []
