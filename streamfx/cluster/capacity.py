"""How many callers a node advertises (``streamfx_slot: N``), fixed when its Ray node starts.

Admission's measured cost exists only once callers run, so the slot count is an estimate:
on a GPU, the callers per GPU that :func:`~streamfx.runtime.estimate.gpu_callers_estimate`
gives for the matmul rate measured there (batched or not); 3DPE on a CPU holds one caller
(at a reduced frame rate); the weight-free engines share the CPU by their measured frame
cost. ``--slots N`` overrides it, and admission on the node still refuses past its measure.
"""

from __future__ import annotations

from ..pipeline.options import EngineOptions
from ..server.admission import usable_cores

#: the mesh engine's frame cost with all edits on, p50 on one core of the development
#: machine (README, Performance: 16.5 ms frontal + reference edit)
MESH_FRAME_MS = 16.5
FPS = 25.0
HEADROOM = 0.85


def default_slots(engine: str, options: EngineOptions) -> tuple[int, str]:
    """(slots, how they were found) for ``engine`` on ``options.device``."""
    if engine == "3dpe" and options.device.startswith("cuda"):
        import torch

        from ..runtime.contrib.torch_cuda import gpu_dtype, measure_tflops
        from ..runtime.estimate import gpu_callers_estimate

        device = torch.device(options.device)
        dtype, _ = gpu_dtype(device)
        tflops = measure_tflops(device, dtype)
        callers = gpu_callers_estimate(tflops)
        batched = options.batch_window_ms != 0
        n = callers["batched" if batched else "unbatched"]
        return max(1, n), (f"estimate at {tflops:.0f} TFLOP/s ({'batched' if batched else 'unbatched'}, "
                           f"25 fps at full)")
    if engine == "3dpe":
        return 1, "3DPE on a CPU holds one caller, at a reduced frame rate"
    cores = usable_cores()
    n = max(1, int(cores * HEADROOM * 1000.0 / MESH_FRAME_MS / FPS))
    return n, f"{cores} core(s) at {MESH_FRAME_MS} ms a frame, 25 fps each"
