"""The style gallery: a small JPEG of each style that has an image, for the pages' style
buttons (``GET /api/styles/{name}/thumbnail``) and for a text prompt's ack (a data URL).

A style without an image (a look, a pack without a reference) has no thumbnail: 404, and
the page shows its name alone. Thumbnails are made off the event loop and cached by the
browser for a minute.
"""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
from aiohttp import web

THUMBNAIL_SIDE = 128


def jpeg(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes:
    """``image`` (H, W, 3) uint8 as JPEG bytes whose long side is at most ``side``."""
    from PIL import Image

    small = Image.fromarray(image)
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """``image`` as a JPEG data URL (:func:`jpeg`)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg(image, side)).decode("ascii")


def style_jpeg(engine, name: str) -> bytes | None:
    """The thumbnail of the style ``name`` of ``engine``'s style library, if it has an image."""
    styles = getattr(engine, "styles", None)
    try:
        if styles is None or name not in styles.names():
            return None
        return jpeg(styles.image(name))
    except Exception:  # noqa: BLE001 - a thumbnail is a nicety; nothing fails without it
        return None


def style_thumbnail(engine, name: str) -> str | None:
    data = style_jpeg(engine, name)
    return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def add_gallery_route(app: web.Application, engine_of, guard) -> None:
    """``GET /api/styles/{name}/thumbnail``; ``engine_of(request)`` is the engine (None: loading),
    ``guard(request)`` the app's origin and token check."""

    async def handler(request: web.Request) -> web.Response:
        guard(request)
        engine, name = engine_of(request), request.match_info["name"]
        if engine is None or name not in engine.presets():
            return web.json_response({"error": "no such style"}, status=404)
        data = await asyncio.get_running_loop().run_in_executor(None, style_jpeg, engine, name)
        if data is None:
            return web.json_response({"error": "this style has no image"}, status=404)
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"})

    app.router.add_get("/api/styles/{name}/thumbnail", handler)
