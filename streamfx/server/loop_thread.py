"""An asyncio event loop on its own thread, for blocking code (the camera loop) that feeds
WebRTC: the WHIP push and the camera's control page each run on one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def soon(self, callback, *args) -> None:
        """Call ``callback(*args)`` on the loop; dropped once the loop has stopped."""
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # closed between the check and the call
                pass

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
