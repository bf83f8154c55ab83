"""Per-stage FP16 sensitivity of 3DPE: which layers must an FP16 TensorRT build keep in FP32?

A TensorRT FP16 build may pin chosen layers to FP32. Pinning costs speed, not pinning may
cost quality, so the choice should come from a measurement rather than from a guess. This
run takes one stage at a time, runs only that stage on fp16 values (its inputs, weights,
intermediates and outputs), casts its outputs back to float32, lets the rest of the network
run in float32, and reports how far the final output moves from the all-float32 reference:

* renderer, presets ``full`` and ``fast``: ray directions and coarse depths (``rays``), the
  tri-plane lookup (``lookup``), the OSG decoder MLP (``decoder``), compositing weights and
  importance sampling (``weights``), compositing (``composite``), super-resolution
  (``superres``), the candidate TensorRT configuration (decoder and super-resolution in fp16,
  the volume math in float32: ``all_but_volume``) and every stage at once (``all``); image
  and ``image_raw`` PSNR (peak 2, the width of [-1, 1]), image max |diff|, depth max relative
  error and whether any NaN/inf appeared, worst case over the inputs and cameras;
* encoder: each top-level child module alone and the whole encoder; tri-plane PSNR (peak =
  the reference planes' max - min), max |diff| / max |reference|, and the image PSNR of the
  ``fast`` render of those planes (float32 renderer);
* reference ViT: the whole ViT, its LayerNorms, its attention modules, the attention core
  (softmax(QK^T)V) and its MLPs; token PSNR and max relative error as for the planes.

How a stage runs "in fp16" (:class:`Fp16Ops`, a torch function mode active only while the
stage runs): every torch call inside the stage is intercepted, so an explicit ``.float()`` or
``dtype=torch.float32`` inside the code cannot quietly keep it in float32.

* ``native`` arithmetic: float tensors are cast to ``torch.float16`` before each call and
  float results after it, so the real half kernels run. This is the GPU mode (``--device
  cuda``). On CPUs without fp16 hardware, half convolutions and matmuls run hundreds of times
  slower than float32 (too slow for the encoder and super-resolution), and torch 2.13's CPU
  half ``grid_sample`` returns NaN or garbage for some points, so do not use it there.
* ``emulated`` arithmetic (the CPU default): tensors stay float32, but each call's float
  inputs (weights included) and results are rounded to the nearest fp16 value, overflow
  giving inf as in fp16. Each call then computes in float32, which is how fp16 tensor-core
  kernels accumulate.

Either way the CPU result is a proxy: it reproduces fp16 storage and per-op output
rounding, not a GPU's accumulation order, split-K reductions, TensorRT's layer fusions or
its own kernel choices (a fused LayerNorm or softmax here is one rounded op; TensorRT may
compute such a layer in fp16 internally). Rerun on a GPU with ``--device cuda`` before
changing the FP32-pinned layers (``streamfx/runtime/contrib/trt_precision.py``).

Inputs: the smooth analytic scene (``scenes.analytic_planes(1.0)``), the same scene at the
known-answer fixture's gain 60 (``analytic60``: opaque surfaces and a spread of depths), and
the encoder's tri-planes of two aligned faces from ``../shared/testdata`` (ffhq_1/2 with
their references style_1/2), each seen frontally and turned (yaw +0.35 rad, pitch -0.1 rad).
Weights: the imported 3DPE weights where present, else random ones of the official shapes
(seed 0), recorded in the JSON. With random weights the gain-1 scene and the face planes
render as a thin, uniform fog (opacity about 0.4, one depth everywhere), which hardly
exercises the volume math; ``analytic60`` is the input closest to a trained model's sharp
surfaces, so read the volume stages there. Renderer code outside the stages (the sample
points, sorting and gathering, the colour bmm, the final resize) stays float32 throughout.

The quick run (``--quick``: one face, frontal, ``fast`` only, whole encoder and ViT) takes
about 15 s on a 2-core CPU; the full run about 6.5 minutes.

    python -m benchmarks.fp16_sensitivity [--quick] [--device cuda] [--arith native] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import math
import platform
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from benchmarks.common import RESULTS, TESTDATA
from benchmarks.harness import result, write

DEFAULT_JSON = RESULTS / "fp16_sensitivity.json"
FACES = (("faces/ffhq_1.png", "styles/style_1.png"), ("faces/ffhq_2.png", "styles/style_2.png"))
IMAGE_PEAK = 2.0  # images are in [-1, 1]
NOTICEABLE_DB = 45.0  # stages below this image PSNR are flagged in the table

Target = tuple[object, str]  # (owner, attribute): a function in a module namespace or a module's forward


# ---------------------------------------------------------------------------- fp16 execution


def _map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in nested tuples, lists and dicts (structseqs included)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        items = [_map_tensors(fn, x) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, list):
        return [_map_tensors(fn, x) for x in obj]
    if isinstance(obj, dict):
        return {k: _map_tensors(fn, v) for k, v in obj.items()}
    return obj


def _is_inplace(func: Callable, kwargs: dict) -> bool:
    name = getattr(func, "__name__", "")
    dunder = name.startswith("__")
    return ((name.endswith("_") and not dunder) or name in ("__setitem__", "__iadd__", "__isub__", "__imul__",
                                                            "__itruediv__") or kwargs.get("inplace") is True)


def _rounds(t: torch.Tensor) -> bool:
    """Tensors that fp16 execution touches: floating point, not already half."""
    return t.is_floating_point() and t.dtype != torch.float16


class Fp16Ops(TorchFunctionMode):
    """While active, every torch call works on fp16 values (see the module docstring).

    Args:
        native: cast to ``torch.float16`` and run the half kernels; else keep float32 tensors
            and round each call's float inputs and results to fp16 values.
    """

    def __init__(self, native: bool) -> None:
        super().__init__()
        self.native = native
        self._exact: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        storages: set[int] = set()
        args, kwargs = _map_tensors(lambda t: self._operand(t, storages), (args, kwargs))
        out = func(*args, **kwargs)
        if not self.native and _is_inplace(func, kwargs) and args and isinstance(args[0], torch.Tensor):
            self._round_in_place(args[0])
        return _map_tensors(lambda t: self._result(t, storages), out)

    def _operand(self, t: torch.Tensor, storages: set[int]) -> torch.Tensor:
        if not _rounds(t):
            return t
        if self.native:
            return t.half()
        if self._exact.get(id(t)) is not t:
            t = t.half().to(t.dtype)
            self._exact[id(t)] = t
        storages.add(t.untyped_storage().data_ptr())
        return t

    def _result(self, t: torch.Tensor, storages: set[int]) -> torch.Tensor:
        if not _rounds(t):
            return t
        if self.native:
            return t.half()
        if self._exact.get(id(t)) is t:
            return t
        if t.untyped_storage().data_ptr() not in storages:  # a new tensor, not a view of an operand
            t = t.half().to(t.dtype)
        self._exact[id(t)] = t
        return t

    def _round_in_place(self, t: torch.Tensor) -> None:
        if _rounds(t):
            t.copy_(t.half())
            self._exact[id(t)] = t


def in_fp16(fn: Callable, native: bool) -> Callable:
    """``fn`` run under :class:`Fp16Ops`, its float outputs returned as float32."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with Fp16Ops(native):
            out = fn(*args, **kwargs)
        return _map_tensors(lambda t: t.float() if t.is_floating_point() else t, out)

    return run


@contextlib.contextmanager
def fp16_targets(targets: Iterable[Target], native: bool) -> Iterator[None]:
    """Replace each target by its fp16 version for the duration (restored on exit, errors included)."""
    from unittest import mock

    with contextlib.ExitStack() as stack:
        for owner, name in targets:
            stack.enter_context(mock.patch.object(owner, name, in_fp16(getattr(owner, name), native)))
        yield


class _FunctionalWith:
    """``torch.nn.functional`` with some functions replaced (to patch one call site's ``F``)."""

    def __init__(self, **replaced: Callable) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)


# ---------------------------------------------------------------------------- metrics


def psnr(ref: torch.Tensor, out: torch.Tensor, peak: float) -> float:
    """PSNR in dB (inf when identical, nan when ``out`` is not finite)."""
    mse = float(((out.double() - ref.double()) ** 2).mean())
    if mse == 0:
        return math.inf
    return 10 * math.log10(peak**2 / mse) if math.isfinite(mse) else math.nan


def max_abs(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max())


def nonfinite(*tensors: torch.Tensor) -> bool:
    return any(not bool(torch.isfinite(t).all()) for t in tensors)


def render_metrics(ref: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> dict[str, Any]:
    depth_rel = (out["image_depth"].double() - ref["image_depth"].double()).abs() / ref["image_depth"].double().abs()
    return {"psnr_image": psnr(ref["image"], out["image"], IMAGE_PEAK),
            "max_abs_image": max_abs(ref["image"], out["image"]),
            "psnr_raw": psnr(ref["image_raw"], out["image_raw"], IMAGE_PEAK),
            "depth_max_rel": float(depth_rel.max()),
            "nonfinite": nonfinite(*out.values())}


def tensor_metrics(ref: torch.Tensor, out: torch.Tensor) -> dict[str, Any]:
    """PSNR with the reference's max - min as peak, and max |diff| / max |ref|."""
    peak = float(ref.max() - ref.min())
    return {"psnr": psnr(ref, out, peak), "max_rel": max_abs(ref, out) / float(ref.abs().max()),
            "nonfinite": nonfinite(out)}


def worst(cases: list[dict[str, Any]], key_psnr: str) -> dict[str, Any]:
    """One row from per-case metrics: the lowest PSNRs, the largest errors, any non-finite, and
    which case gave the lowest ``key_psnr``."""
    lowest = min(cases, key=lambda c: -math.inf if math.isnan(c[key_psnr]) else c[key_psnr])
    row: dict[str, Any] = {}
    if lowest[key_psnr] != math.inf:  # all identical: no worst case
        row["worst_case"] = "/".join(str(lowest[k]) for k in ("input", "camera") if k in lowest)
    for key in cases[0]:
        values = [c[key] for c in cases]
        if key == "nonfinite":
            row[key] = any(values)
        elif isinstance(values[0], float):
            pick = min if key.startswith("psnr") else max
            row[key] = math.nan if any(math.isnan(v) for v in values) else pick(values)
    return row


def _json_number(x: Any) -> Any:
    """Floats rounded for the JSON; inf (identical) and nan (not finite) become null."""
    if isinstance(x, float):
        return round(x, 6) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_number(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_number(v) for v in x]
    return x


def _unsupported(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]


# ---------------------------------------------------------------------------- stages


def renderer_stages(renderer: nn.Module) -> dict[str, list[Target]]:
    """Stage name -> what to run in fp16, the last two being combinations."""
    volume = importlib.import_module("streamfx.models.renderer.volume")
    module = importlib.import_module("streamfx.models.renderer.module")
    alone = {
        "rays": [(volume, "camera_rays"), (volume, "coarse_depths")],
        "lookup": [(module, "sample_triplanes")],
        "decoder": [(renderer.decoder, "forward")],
        "weights": [(volume, "alpha_weights"), (volume, "importance_depths")],
        "composite": [(volume, "sample_coefficients"), (volume, "composite_depth"), (volume, "finish_rgb")],
        "superres": [(renderer.superresolution, "forward")],
    }
    return alone | {"all_but_volume": alone["decoder"] + alone["superres"],
                    "all": [t for targets in alone.values() for t in targets]}


def encoder_stages(encoder: nn.Module, quick: bool) -> dict[str, list[Target]]:
    children = {} if quick else {name: [(child, "forward")] for name, child in encoder.named_children()}
    return children | {"whole": [(encoder, "forward")]}


def vit_stages(vit: nn.Module, quick: bool) -> dict[str, list[Target]]:
    whole: dict[str, list[Target]] = {"whole": [(vit, "forward")]}
    if quick:
        return whole
    vit_ns = importlib.import_module(type(vit).__module__)

    def of_type(kind: type) -> list[Target]:
        return [(m, "forward") for m in vit.modules() if isinstance(m, kind)]

    return {"layernorms": of_type(nn.LayerNorm),
            "attention": of_type(type(vit.blocks[0].attn)),
            "mlp": of_type(type(vit.blocks[0].mlp)),
            "attention_core": [(vit_ns, "F")]} | whole


def _fp16_context(targets: list[Target], native: bool) -> contextlib.AbstractContextManager:
    """Patch ``targets``; the ViT's ``F`` target replaces only its scaled_dot_product_attention."""
    functional = [(owner, name) for owner, name in targets if name == "F"]
    if not functional:
        return fp16_targets(targets, native)
    from unittest import mock

    [(owner, name)] = functional
    sdpa = in_fp16(F.scaled_dot_product_attention, native)
    return mock.patch.object(owner, name, _FunctionalWith(scaled_dot_product_attention=sdpa))


# ---------------------------------------------------------------------------- inputs


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_rgb(path: Path, size: int | None = None) -> np.ndarray:
    """RGB uint8; with ``size``, centre-cropped to a square and resized to size x size."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this benchmark reads the face crops of ../shared/testdata")
    image = Image.open(path).convert("RGB")
    if size is not None and image.size != (size, size):
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(image)


def load_model(device: torch.device) -> tuple[Any, dict[str, Any]]:
    from streamfx.models import checkpoint, random_weights, threedpe

    path = checkpoint.find_imported_weights()
    if path is not None:
        return threedpe.load(path, device=device), {"kind": "imported", "path": str(path)}
    model = threedpe.from_state(random_weights.random_state_dicts(seed=0), device=device)
    return model, {"kind": "random", "seed": 0}


def cameras(device: torch.device, quick: bool) -> dict[str, torch.Tensor]:
    from streamfx.models.renderer import look_at_camera

    views = {"frontal": look_at_camera(math.pi / 2, math.pi / 2, device=device)}
    if not quick:
        views["turned"] = look_at_camera(math.pi / 2 + 0.35, math.pi / 2 - 0.1, device=device)
    return views


# ---------------------------------------------------------------------------- runs


Case = tuple[dict[str, str], Any]  # (label for the JSON, what ``run`` takes)


def measure(row: dict[str, Any], targets: list[Target], cases: list[Case], run: Callable[[Any], Any],
            score: Callable[[Any, Any], dict[str, Any]], native: bool, key_psnr: str) -> dict[str, Any]:
    """Run every case with ``targets`` in fp16, score it against float32, and fill ``row``."""
    began = time.perf_counter()
    per_case = []
    for label, case in cases:
        try:
            with _fp16_context(targets, native):
                out = run(case)
        except (RuntimeError, NotImplementedError, TypeError) as exc:  # e.g. no half kernel for an op
            row["unsupported"] = _unsupported(exc)
            break
        per_case.append(label | score(case, out))
    if "unsupported" not in row:
        row |= worst(per_case, key_psnr) | {"cases": per_case}
    row["seconds"] = round(time.perf_counter() - began, 2)
    print(_line(row), flush=True)
    return row


def run_renderer(model: Any, planes: dict[str, torch.Tensor], views: dict[str, torch.Tensor],
                 presets: list[str], native: bool) -> list[dict[str, Any]]:
    rows = []
    for preset in presets:
        def render(case: tuple[str, str], preset: str = preset) -> dict[str, torch.Tensor]:
            return model.render(planes[case[0]], views[case[1]], preset)

        cases = [({"input": p, "camera": v}, (p, v)) for p in planes for v in views]
        refs = {case: render(case) for _, case in cases}
        for stage, targets in {"float32": [], **renderer_stages(model.renderer)}.items():
            rows.append(measure({"section": "renderer", "preset": preset, "stage": stage}, targets, cases, render,
                                lambda case, out: render_metrics(refs[case], out), native, "psnr_image"))
    return rows


def run_encoder(model: Any, inputs: dict[str, tuple[torch.Tensor, torch.Tensor]], ref_planes: dict[str, torch.Tensor],
                frontal: torch.Tensor, quick: bool, native: bool) -> list[dict[str, Any]]:
    """Planes against float32, and the ``fast`` float32 render of those planes against that of float32 planes."""
    ref_images = {name: model.render(ref_planes[name], frontal, "fast")["image"] for name in inputs}

    def score(name: str, planes: torch.Tensor) -> dict[str, Any]:
        image_db = math.nan
        if bool(torch.isfinite(planes).all()):
            image_db = psnr(ref_images[name], model.render(planes, frontal, "fast")["image"], IMAGE_PEAK)
        return tensor_metrics(ref_planes[name], planes) | {"psnr_image_fast": image_db}

    cases = [({"input": name}, name) for name in inputs]
    return [measure({"section": "encoder", "stage": stage}, targets, cases, lambda name: model.encode(*inputs[name]),
                    score, native, "psnr")
            for stage, targets in encoder_stages(model.encoder, quick).items()]


def run_vit(model: Any, refs: dict[str, torch.Tensor], ref_tokens: dict[str, torch.Tensor], quick: bool,
            native: bool) -> list[dict[str, Any]]:
    cases = [({"input": name}, name) for name in refs]
    return [measure({"section": "vit", "stage": stage}, targets, cases, lambda name: model.reference_tokens(refs[name]),
                    lambda name, tokens: tensor_metrics(ref_tokens[name], tokens), native, "psnr")
            for stage, targets in vit_stages(model.vit, quick).items()]


# ---------------------------------------------------------------------------- output


def _db(x: float | None) -> str:
    if x is None:
        return "-"
    return "identical" if x == math.inf else ("NaN" if math.isnan(x) else f"{x:.1f}")


def _line(row: dict[str, Any]) -> str:
    """One table line of a row (printed as soon as it is measured)."""
    where = f"{row['section']:<8} {row.get('preset', ''):<5} {row['stage']:<15}"
    worst_case = f"  worst {row['worst_case']}" if row.get("worst_case") else ""
    if "unsupported" in row:
        return f"{where} unsupported: {row['unsupported']}"
    flag = " NaN/inf" if row.get("nonfinite") else ""
    if row["section"] == "renderer":
        low = " <45dB" if row["psnr_image"] < NOTICEABLE_DB else ""
        return (f"{where} image {_db(row['psnr_image']):>9} dB  max|d| {row['max_abs_image']:.2e}  "
                f"raw {_db(row['psnr_raw']):>9} dB  depth rel {row['depth_max_rel']:.1e}{flag}{low}{worst_case}")
    tail = f"  image(fast) {_db(row['psnr_image_fast']):>9} dB" if "psnr_image_fast" in row else ""
    name = "planes" if row["section"] == "encoder" else "tokens"
    return f"{where} {name} {_db(row['psnr']):>9} dB  max rel {row['max_rel']:.1e}{tail}{flag}{worst_case}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--arith", choices=("auto", "native", "emulated"), default="auto",
                        help="fp16 arithmetic: native half kernels or float32 kernels on fp16-rounded values "
                             "(auto: native on cuda, emulated on cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="one face, frontal camera, 'fast' preset, whole encoder and ViT only (CI)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)

    from streamfx.models import threedpe
    from streamfx.models.renderer.scenes import analytic_planes
    from streamfx.runtime.devices import DeviceUnavailable, resolve_device

    began = time.perf_counter()
    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as exc:
        print(f"fp16_sensitivity: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":  # a TF32 reference would not be float32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    native = args.arith == "native" or (args.arith == "auto" and device.type == "cuda")
    model, weights = load_model(device)
    print(f"fp16 sensitivity on {device} ({cpu_model()}), {'native' if native else 'emulated'} fp16, "
          f"{weights['kind']} weights", flush=True)

    faces = FACES[:1] if args.quick else FACES
    views = cameras(device, args.quick)
    refs224, inputs = {}, {}
    for face, style in faces:
        name = Path(face).stem
        refs224[name] = threedpe.prepare_reference(read_rgb(TESTDATA / style)).to(device)
        inputs[name] = threedpe.prepare_input(read_rgb(TESTDATA / face, size=threedpe.INPUT_SIZE)).to(device)
    tokens = {name: model.reference_tokens(ref) for name, ref in refs224.items()}
    face_planes = {name: model.encode(inputs[name], tokens[name]) for name in inputs}

    planes = {} if args.quick else {"analytic": analytic_planes(1.0).to(device),
                                    "analytic60": analytic_planes(60.0).to(device)}
    planes |= face_planes
    presets = ["fast"] if args.quick else ["full", "fast"]
    rows = run_renderer(model, planes, views, presets, native)
    rows += run_encoder(model, {n: (inputs[n], tokens[n]) for n in inputs}, face_planes, views["frontal"],
                        args.quick, native)
    rows += run_vit(model, refs224, tokens, args.quick, native)

    seconds = round(time.perf_counter() - began, 1)
    data = result("fp16_sensitivity", device, _json_number(rows), weights=weights,
                  arithmetic="native" if native else "emulated", quick=args.quick, seconds=seconds,
                  inputs=list(planes), cameras=list(views), image_peak=IMAGE_PEAK)
    data["machine"]["cpu_model"] = cpu_model()
    path = write(args.json, data)
    print(f"{len(rows)} rows in {seconds} s -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
