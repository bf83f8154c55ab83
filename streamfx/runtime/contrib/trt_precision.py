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

**Which layers of the scope are pinned** (:func:`pin_to_fp32`): only layers that compute
floating-point data. TensorRT refuses precision constraints on the rest ("A shape layer can
only run in INT32 precision", "cannot use precision Float with weights of type Int32":
NVIDIA/TensorRT issues #2076, #3177), and the renderer's volume scope holds many of them in
the dynamic-batch export: the int64 shape arithmetic (Shape, Gather of dims, Concat of dims,
Reshape's shape inputs), int constants and bool comparisons. A layer in the scope is pinned
unless

* its type is one of :data:`NEVER_PINNED_TYPES` (shape queries, assertions, loop and
  condition plumbing: nothing there computes float data), or
* one of its outputs is a shape tensor (``ITensor.is_shape_tensor``: computed at build time
  for the dimensions of other tensors, whatever its type), or
* one of its outputs is not FLOAT or HALF (int, bool), except for the layer types of
  :data:`INDEX_OUTPUT_TYPES`, whose float values come with integer indices: TopK is the
  depth sort of the coarse and fine samples, and its values are depths;
* it has no output at all.

Float constants in the scope stay pinned (their weights are FLOAT, which is the precision
asked for), so the sample depths and ray steps are never stored in half. Comparisons (bool
outputs) are not pinned: their float inputs come from pinned layers.

:data:`PIN_RULES_VERSION` and the scope constants go into the engine cache key
(:func:`precision_setup`), so an engine built under other rules is never reused.

This module imports neither torch nor TensorRT, so it is tested on machines without a GPU.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

RENDERER_SCOPE = "/renderer/"
#: sub-scopes of the renderer that run FP16 (everything else in /renderer/ is volume math)
FP16_SUBSCOPES = ("decoder", "superresolution")
#: PSNR (dB) against the float32 module that every output of an FP16 engine must reach (README)
IMAGE_PSNR_DB = 35.0
#: bumped when the pinning rules change (1: by scope only; 2: float, non-shape layers only)
PIN_RULES_VERSION = "2"
#: TensorRT layer types (``trt.LayerType`` names) never pinned: none of them computes float data
NEVER_PINNED_TYPES = frozenset({"SHAPE", "ASSERTION", "CONDITION", "CONDITIONAL_INPUT", "CONDITIONAL_OUTPUT",
                                "TRIP_LIMIT", "ITERATOR", "RECURRENCE", "LOOP_OUTPUT", "NON_ZERO"})
#: layer types whose integer outputs are indices next to float values; they are pinned by their values
INDEX_OUTPUT_TYPES = frozenset({"TOPK"})
#: the ``trt.DataType`` names of the floating-point types a pinned layer may output
FLOAT_TYPES = frozenset({"FLOAT", "HALF"})


@dataclass(frozen=True)
class LayerInfo:
    """What the pinning rule reads of a TensorRT layer, as plain data.

    Attributes:
        name: the layer's name (its ONNX node's name, e.g. ``/renderer/Exp``).
        type: its ``trt.LayerType`` name (``"SHAPE"``, ``"CONSTANT"``, ``"ELEMENTWISE"``, ...).
        output_dtypes: each output's ``trt.DataType`` name (``"FLOAT"``, ``"HALF"``, ``"INT64"``, ``"BOOL"``).
        shape_outputs: each output's ``is_shape_tensor``.
    """

    name: str
    type: str
    output_dtypes: tuple[str, ...]
    shape_outputs: tuple[bool, ...]


def pinned_fp32(graph: str, layer_name: str) -> bool:
    """Whether layer ``layer_name`` of graph ``graph`` must run in FP32 in an FP16 build."""
    if not graph.startswith("renderer-") or not layer_name.startswith(RENDERER_SCOPE):
        return False
    rest = layer_name[len(RENDERER_SCOPE):]
    if "/" not in rest:
        return True  # a node of the renderer module itself: the volume math
    scope = rest.split("/", 1)[0]
    return not any(scope == s or scope.startswith(s + "_") for s in FP16_SUBSCOPES)


def pin_to_fp32(graph: str, layer: LayerInfo) -> bool:
    """Whether ``layer`` of graph ``graph`` gets an FP32 precision constraint in an FP16 build:
    in the pinned scope (:func:`pinned_fp32`) and computing float data (module docstring)."""
    if not pinned_fp32(graph, layer.name) or layer.type in NEVER_PINNED_TYPES:
        return False
    if not layer.output_dtypes or any(layer.shape_outputs):
        return False
    floats = [dtype in FLOAT_TYPES for dtype in layer.output_dtypes]
    return all(floats) or (layer.type in INDEX_OUTPUT_TYPES and any(floats))


def pin_rules_digest() -> str:
    """8 hex digits naming the pinning rules in force (their version and constants)."""
    rules = "|".join((PIN_RULES_VERSION, RENDERER_SCOPE, ",".join(FP16_SUBSCOPES), ",".join(sorted(NEVER_PINNED_TYPES)),
                      ",".join(sorted(INDEX_OUTPUT_TYPES)), ",".join(sorted(FLOAT_TYPES))))
    return hashlib.blake2b(rules.encode(), digest_size=4).hexdigest()


def precision_setup(fp16: bool) -> str:
    """The precision setup of a TensorRT build, for the engine cache key and the plan's name:
    ``fp32``, or ``fp16-pin<digest of the pinning rules>``."""
    return f"fp16-pin{pin_rules_digest()}" if fp16 else "fp32"
