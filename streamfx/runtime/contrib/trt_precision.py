"""Which layers of a TensorRT FP16 build stay FP32, by the layer's ONNX scope.

The exported graphs name every node after the module that made it (``/renderer/decoder/...``,
``/renderer/superresolution/block0/...``), and TensorRT's ONNX parser names its layers after
those nodes. The renderer's volume math (ray directions, sample depths, the tri-plane lookup,
the compositing weights, importance sampling and the expected depth) is called from the
renderer module itself, so its nodes sit directly in the ``/renderer/`` scope; the heavy
layers (the decoder MLP and the super-resolution convolutions) sit in sub-scopes.

The rule comes from a per-stage FP16 sensitivity run (``python -m benchmarks.fp16_sensitivity``,
2026-12-01, on the CPU with fp16 rounding emulated per op; README, TensorRT section). Image PSNR
against float32 with one stage in FP16, worst case over scenes and poses (full / fast preset):

=================  ===========  ===============================================
stage              dB           where its nodes are
=================  ===========  ===============================================
rays (+ depths)    56.9 / 55.8  ``/renderer/`` (volume math)
weights            63.4 / 62.4  ``/renderer/`` (volume math)
decoder            63.9 / 63.8  ``/renderer/decoder*/``
superres           77.4 / 79.3  ``/renderer/superresolution/``
composite          82.9 / 82.6  ``/renderer/`` (volume math)
lookup             83.7 / 79.8  ``/renderer/`` (volume math)
decoder+superres   63.7 / 63.7  the configuration chosen here
everything         55.9 / 55.0
=================  ===========  ===============================================

A stage stays FP32 when it alone moves the image more than the heavy FP16 layers together
(decoder + super-resolution, which hold nearly all of the FLOPs): the rays and the
compositing weights do. Their nodes cannot be told from the lookup's and the compositing's
by name, and all four are memory-bound and cheap, so the whole volume scope is pinned. The
encoder (83 dB tri-planes in FP16 as a whole) and the ViT (85 dB tokens) stay FP16 entirely.
Acceptance on a GPU is :data:`IMAGE_PSNR_DB`, far below the 63.7 dB measured, because GPU
kernels and TensorRT's fusions round differently from the per-op emulation.

This module imports neither torch nor TensorRT, so it is tested on machines without a GPU.
"""

from __future__ import annotations

RENDERER_SCOPE = "/renderer/"
#: sub-scopes of the renderer that run FP16 (everything else in /renderer/ is volume math)
FP16_SUBSCOPES = ("decoder", "superresolution")
#: PSNR (dB) against the float32 module that every output of an FP16 engine must reach (README)
IMAGE_PSNR_DB = 35.0


def pinned_fp32(graph: str, layer_name: str) -> bool:
    """Whether layer ``layer_name`` of graph ``graph`` must run in FP32 in an FP16 build."""
    if not graph.startswith("renderer-") or not layer_name.startswith(RENDERER_SCOPE):
        return False
    rest = layer_name[len(RENDERER_SCOPE):]
    if "/" not in rest:
        return True  # a node of the renderer module itself: the volume math
    scope = rest.split("/", 1)[0]
    return not any(scope == s or scope.startswith(s + "_") for s in FP16_SUBSCOPES)
