"""``streamfx doctor``: what this machine can do, what StreamFX will use, and how to go faster.

It measures (the capability probe, about a second the first time, cached afterwards) and
estimates from FLOPs; it runs no benchmark. ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import asdict

from .common import add_runtime_args, engine_options_from_args
from ..io.call_setup import Check, call_checks

STAGE_NAMES = {"vit": "reference ViT", "encoder": "encoder", "decoder": "volume decoder",
               "superres": "super-resolution"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="show this machine's capabilities and the runtime StreamFX picks")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--refresh", action="store_true", help="measure again instead of using the cached probe")
    add_runtime_args(p)
    p.set_defaults(func=run)


def gpu_report() -> dict:
    """GPU, CUDA and TensorRT as torch and the installed packages see them, and what each GPU
    would run: torch-cuda at the precision a short matmul measures fastest there."""
    import torch

    from ..runtime.devices import describe_device
    from ..runtime.estimate import gpu_callers_estimate, gpu_estimate

    from ..models.renderer.presets import PRESETS
    from ..runtime.batching import BatchConfig, batch_sizes_for
    from ..runtime.estimate import graph_memory

    # what torch-cuda captures with the serve defaults: every preset, every batch size the batcher forms
    report: dict = {"torch_cuda": torch.version.cuda, "gpus": [], "tensorrt": None, "tensorrt_problem": None,
                    "driver": None, "graph_memory": graph_memory(tuple(PRESETS), batch_sizes_for(BatchConfig().max_batch))}
    if torch.cuda.is_available():
        try:  # the driver's version, where the gpu extra (nvidia-ml-py) is installed
            import pynvml

            pynvml.nvmlInit()
            report["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # noqa: BLE001 - optional detail
            pass
        from ..runtime.contrib.torch_cuda import gpu_dtype, measure_tflops

        for i in range(torch.cuda.device_count()):
            device = torch.device(f"cuda:{i}")
            dtype, reason = gpu_dtype(device)
            tflops = measure_tflops(device, dtype)
            report["gpus"].append({**describe_device(device), "backend": "torch-cuda",
                                   "precision": "bf16" if dtype == torch.bfloat16 else "fp16", "reason": reason,
                                   "expected": gpu_estimate(tflops), "callers": gpu_callers_estimate(tflops)})
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt

            report["tensorrt"] = tensorrt.__version__
        except Exception as exc:  # noqa: BLE001 - a broken install is worth reporting, not crashing on
            report["tensorrt"] = f"installed but fails to import ({type(exc).__name__})"
        else:
            from ..runtime.base import BackendUnavailable
            from ..runtime.selection import check_tensorrt_version

            try:
                check_tensorrt_version(report["tensorrt"])
            except BackendUnavailable as exc:
                report["tensorrt_problem"] = str(exc)  # the one line the backend refuses with
    return report


def collect(args: argparse.Namespace) -> dict:
    from ..models.checkpoint import find_imported_weights
    from ..runtime.selection import plan_for, resolve_backend
    from ..runtime.estimate import estimate
    from ..runtime.probe import STAGES, probe
    from ..runtime.threads import apply_threads, default_threads

    options = engine_options_from_args(args)
    cores_default = default_threads()
    threads = apply_threads(options.threads)
    caps = probe(refresh=args.refresh)
    backend = resolve_backend(options.backend, options.device)
    plan = plan_for(backend if options.device == "cpu" else "auto")  # the CPU's plan, shown either way
    weights = find_imported_weights()
    expected = estimate(caps, plan)
    fp32 = estimate(caps, plan_for("torch-fp32"))
    return {
        "cpu": {"model": caps.cpu.model, "arch": caps.cpu.arch, "cores": caps.cpu.cores, "flags": list(caps.cpu.flags),
                "torch_capability": caps.cpu.torch_capability, "bf16_instructions": caps.cpu.bf16_hardware()},
        "measured_gflops": {"matmul": caps.measured.matmul, "conv": caps.measured.conv,
                            "probe_seconds": caps.measured.seconds, "cached": caps.cached},
        "gpu": gpu_report(),
        "runtime": {"device": options.device, "backend": backend, "threads": threads, "default_threads": cores_default,
                    "openvino": importlib.util.find_spec("openvino") is not None,
                    "stages": {s: getattr(plan, s) for s in STAGES}, "reason": plan.reason},
        "weights": {"imported": weights is not None, "path": str(weights) if weights else None},
        "expected": {"3dpe": expected.as_dict(), "3dpe_fp32_reference": fp32.as_dict(),
                     "mesh": "real time: about 13-17 ms per frame on 2 cores (tracking ~7 ms of it)",
                     "overlay": "real time: about 2 ms per frame"},
        "defaults": {"threads": f"all {cores_default} cores (--threads N)", "max_fps": "none (--max-fps F)",
                     "max_callers": "measured: callers are admitted while their measured CPU cost fits "
                                    "(--max-callers N caps it)"},
        "advice": advice(caps, plan, weights is not None, importlib.util.find_spec("openvino") is not None,
                         threads, caps.cpu.cores),
        "calls": [asdict(check) for check in call_checks()],
    }


def advice(caps, plan, have_weights: bool, have_openvino: bool, threads: int, cores: int) -> list[str]:
    tips = []
    if plan.summary == "fp32" and caps.cpu.bf16_hardware() is False:
        tips.append("This CPU has no bf16 instructions, so 3DPE runs in fp32. A CPU with AVX-512 BF16 or AMX "
                    "(bf16 2-7x faster), or an NVIDIA GPU, runs it much faster.")
    elif plan.summary == "fp32":
        tips.append("bf16 measured slower than fp32 here, so 3DPE runs in fp32.")
    if not have_openvino:
        tips.append("pip install 'streamfx[cpu-runtimes]' adds OpenVINO, whose encoder is the fastest measured on CPUs.")
    if not have_weights:
        tips.append("No 3DPE weights imported: the weight-free mesh engine runs. Download 3dpe.pt and run "
                    "'streamfx weights import 3dpe.pt' for 3DPE.")
    tips.append("Live 3DPE on a CPU: --quality fast or fastest keeps head motion smooth; expression follows "
                "at the encoder's rate.")
    tips.append("Files: 'streamfx process --keyframe-every N' encodes every Nth frame (about N times faster encoding).")
    if threads < cores:
        tips.append(f"Inference uses {threads} of {cores} cores (--threads); more threads are faster but leave "
                    "less for the call app.")
    return tips


def _fmt_rate(table: dict) -> str:
    from ..runtime.probe import MIN_SPEEDUP

    ratio = table["bf16"] / max(table["fp32"], 1e-9)
    verdict = "bf16 fast here" if ratio >= MIN_SPEEDUP else "bf16 SLOW here"
    return f"fp32 {table['fp32']:.0f}, bf16 {table['bf16']:.0f} GFLOP/s ({ratio:.2f}x, {verdict})"


def _graph_line(gpu: dict) -> str:
    g = gpu["graph_memory"]
    fits = "; ".join(f"{d['device']}: {'fits' if g['total_gib'] < d['memory_gib'] else 'does NOT fit'} its "
                     f"{d['memory_gib']} GiB" for d in gpu["gpus"])
    return (f"graphs     torch-cuda CUDA graphs per GPU with the defaults ({g['graphs']} graphs: "
            f"{len(g['presets'])} presets x batch sizes {','.join(map(str, g['batch_sizes']))}, one shared pool): "
            f"about {g['total_gib']} GiB (an upper bound, not measured on a GPU; --batch-window-ms 0 captures "
            "batch 1 only)"
            + (f"; {fits}" if fits else ""))


def run(args: argparse.Namespace) -> int:
    data = collect(args)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    cpu, m, rt, e = data["cpu"], data["measured_gflops"], data["runtime"], data["expected"]["3dpe"]
    gpu = data["gpu"]
    bf16_hw = {True: "yes", False: "no (emulated)", None: "unknown from flags"}[cpu["bf16_instructions"]]
    lines = [
        f"CPU        {cpu['model']} ({cpu['arch']}, {cpu['cores']} cores, torch kernels {cpu['torch_capability']})",
        f"flags      {' '.join(cpu['flags']) or '(none known)'}; bf16 instructions: {bf16_hw}",
        f"measured   matmul {_fmt_rate(m['matmul'])}; conv {_fmt_rate(m['conv'])}"
        + (" [cached]" if m["cached"] else f" [{m['probe_seconds']:.1f} s]"),
        "GPU        " + ("; ".join(f"{g['device']} {g['name']} {g['memory_gib']} GiB (sm {g['compute_capability']}): "
                                  f"torch-cuda {g['precision']} ({g['reason']}), expected full frame "
                                  f"{g['expected'].get('full_frame_ms', '?')} ms, about "
                                  f"{g['callers']['batched']} callers at 25 fps batched "
                                  f"({g['callers']['unbatched']} unbatched; estimates)" for g in gpu["gpus"])
                        or "none visible to torch")
        + f"; torch CUDA {gpu['torch_cuda'] or 'not built in (CPU build)'}"
        + (f", driver {gpu['driver']}" if gpu["driver"] else "")
        + f"; TensorRT {gpu['tensorrt'] or 'not installed'}",
        *([f"TensorRT   {gpu['tensorrt_problem']}"] if gpu["tensorrt_problem"] else []),
        _graph_line(gpu),
        f"runtime    {rt['device']}: backend {rt['backend']}, {rt['threads']} CPU threads; CPU stages: "
        + ", ".join(f"{STAGE_NAMES[s]} {p}" for s, p in rt["stages"].items()),
        f"           why: {rt['reason']}",
        f"weights    {'imported: ' + data['weights']['path'] if data['weights']['imported'] else 'not imported'}",
        "expected   3dpe encode {:.0f} ms (fp32 reference {:.0f} ms), new reference {:.0f} ms".format(
            e["encode_ms"], data["expected"]["3dpe_fp32_reference"]["encode_ms"], e["reference_ms"]),
    ]
    for preset, ms in e["render_ms"].items():
        lines.append(f"           3dpe {preset:9s} render {ms:7.0f} ms -> live {e['live_render_fps'][preset]:5.1f} fps, "
                     f"files {e['offline_s_per_frame'][preset]:.1f} s/frame")
    lines.append(f"           mesh: {data['expected']['mesh']}")
    lines.append(f"defaults   threads {data['defaults']['threads']}, max fps {data['defaults']['max_fps']}")
    lines.append("for calls (virtual camera and microphone):")
    lines += [f"  {Check(**c).line()}" for c in data["calls"]]
    lines.append("to go faster:")
    lines += [f"  - {tip}" for tip in data["advice"]]
    print("\n".join(lines))
    return 0
