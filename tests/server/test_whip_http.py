"""WHIP/WHEP over HTTP as RFC 9725 describes it: CORS preflight and headers, controls given
at creation, and their bad input (a 400 that leaves no session behind)."""

from __future__ import annotations

import aiohttp

from rtc_client import Client, PatternTrack
from streamfx.pipeline.engines.overlay import OverlayEngine

SITE = "https://meeting.example"


async def _offer_sdp() -> tuple[Client, str]:
    client = Client(PatternTrack())
    await client.pc.setLocalDescription(await client.pc.createOffer())
    return client, client.pc.localDescription.sdp


async def test_preflight_needs_no_token_and_says_what_is_accepted(server_factory):
    server = await server_factory(engine=OverlayEngine(), token="t0k")
    async with aiohttp.ClientSession() as http:
        for path, posts in (("/whip", True), ("/whip/abc", False), ("/whep/abc", True), ("/whep/abc/def", False)):
            async with http.options(server.base + path, headers={"Origin": SITE,
                                                                  "Access-Control-Request-Method": "POST"}) as r:
                assert r.status == 204, path
                assert r.headers["Access-Control-Allow-Origin"] == SITE
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
                assert ("Accept-Post" in r.headers) == posts, path
                assert r.headers["Allow"].startswith("POST" if posts else "DELETE")


async def test_other_sites_may_post_with_a_token_only(server_factory):
    open_server = await server_factory(engine=OverlayEngine())          # no token: the page's Origin rule
    tokened = await server_factory(engine=OverlayEngine(), token="t0k")
    client, sdp = await _offer_sdp()
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Origin": SITE, "Content-Type": "application/sdp"}
            async with http.post(f"{open_server.base}/whip", data=sdp, headers=headers) as r:
                assert r.status == 403
                assert "Access-Control-Allow-Origin" not in r.headers
            async with http.post(f"{tokened.base}/whip", data=sdp, headers=headers) as r:
                assert r.status == 401
                assert r.headers["Access-Control-Allow-Origin"] == SITE   # the page can read why
            async with http.post(f"{tokened.base}/whip", data=sdp,
                                 headers={**headers, "Authorization": "Bearer t0k"}) as r:
                assert r.status == 201, await r.text()
                assert r.headers["Access-Control-Allow-Origin"] == SITE
                assert "Location" in r.headers["Access-Control-Expose-Headers"]
    finally:
        await client.close()


async def test_controls_in_the_query_apply_before_the_answer(server_factory):
    server = await server_factory(engine=OverlayEngine())
    client, sdp = await _offer_sdp()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.base}/whip?prompt=invert&strength=0.4&pose=frontal&bypass=0", data=sdp,
                                 headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 201, await r.text()
                session = r.headers["Location"].rsplit("/", 1)[1]
        controls = server.state.registry.callers[session].pipeline.controls
        assert controls.prompt is not None and controls.prompt.key.endswith("invert")
        assert controls.strength == 0.4 and controls.pose.mode == "frontal" and controls.bypass is False
    finally:
        await client.close()


async def test_bad_controls_in_the_query_are_a_400_and_leave_no_session(server_factory):
    server = await server_factory(engine=OverlayEngine())
    async with aiohttp.ClientSession() as http:
        for query, says in (("strength=2", "strength"), ("strength=lots", "number"), ("pose=upside", "pose mode"),
                            ("prompt=nosuchstyle", "nosuchstyle")):
            client, sdp = await _offer_sdp()
            try:
                async with http.post(f"{server.base}/whip?{query}", data=sdp,
                                     headers={"Content-Type": "application/sdp"}) as r:
                    body = await r.json()
                    assert r.status == 400 and says in body["error"], (query, body)
            finally:
                await client.close()
            assert not server.state.registry.callers, query
