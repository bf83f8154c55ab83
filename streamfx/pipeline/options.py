"""How the engines of one process run: chosen once, from the command line or the server."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineOptions:
    """Options every engine factory receives (engines ignore what does not apply to them).

    Attributes:
        device: where inference runs, already resolved (``cpu``, ``cuda:0``, ``mps``;
            see :func:`streamfx.runtime.devices.resolve_device`).
        backend: 3DPE execution path (:data:`streamfx.runtime.names.BACKEND_CHOICES`).
        threads: CPU threads for inference (None: all cores). Fewer leave room for the
            video-call app running beside StreamFX.
        offline: file processing: every frame is processed in order and the output depends
            only on the input (no keyframe worker, no adaptive quality, no wall clock).
        keyframe_every: offline 3DPE encodes every Nth frame and holds its tri-planes in between.
        random_weights_seed: run 3DPE on random weights of the official shapes (demos,
            benchmarks) instead of the imported ones.
        batch_window_ms: concurrent callers' frames arriving within this many milliseconds
            run as one batch (:mod:`streamfx.runtime.batching`); None: 4 ms on a GPU, off on
            the CPU (where a batch only queues); 0: off.
    """

    device: str = "cpu"
    backend: str = "auto"
    threads: int | None = None
    offline: bool = False
    keyframe_every: int = 1
    random_weights_seed: int | None = None
    batch_window_ms: float | None = None

    def __post_init__(self) -> None:
        if self.batch_window_ms is not None and not 0 <= self.batch_window_ms <= 100:
            raise ValueError("the batch window must be between 0 and 100 ms")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.keyframe_every < 1:
            raise ValueError("keyframe_every must be at least 1")
