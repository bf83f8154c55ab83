"""``streamfx styles``: list the named styles, and train a style pack from image pairs.

* ``streamfx styles list [--styles DIR]``
* ``streamfx styles train NAME --pairs DIR [--ref IMAGE] [--minutes M | --steps N]
  [--device D] [--weights PATH | --random-weights SEED] [--resume] ...`` fine-tunes the
  3DPE encoder's final head and reference fusion as a low-rank adapter (the official
  recipe's trainable modules) and writes ``STYLES/NAME/`` (see :mod:`streamfx.training`).
* ``streamfx styles create NAME --text "..." --photo PHOTO --text-model DIR [--steps N]
  [--guidance G] [--image-guidance I] [--seed S] [--device D]`` edits the aligned photo with
  an instruction-editing diffusion model (InstructPix2Pix, a local folder) and writes
  ``STYLES/NAME/`` with the result as its reference image (see :mod:`streamfx.styles.text`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CliError
from .common import add_device_arg, add_styles_arg, load_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("styles", help="list named styles; train a style pack from image pairs "
                                   "or create one from text")
    sub = parser.add_subparsers(dest="styles_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="the named images and style packs of the styles folder")
    add_styles_arg(ls)
    ls.set_defaults(func=run_list)

    t = sub.add_parser("train", help="fine-tune a style pack (a few MB) from before/after image pairs")
    t.add_argument("name", help="the style's name (the pack folder STYLES/NAME/)")
    t.add_argument("--pairs", type=Path, required=True, metavar="DIR",
                   help="folder with before/ and after/ images paired by file name")
    t.add_argument("--ref", type=Path, default=None, metavar="IMAGE",
                   help="the style's reference image (default: the first aligned 'after' image)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, metavar="M", help="time budget (default 5)")
    budget.add_argument("--steps", type=int, default=None, metavar="N", help="train N steps (in all, with --resume)")
    weights = t.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path, default=None, help="3dpe.pt or imported weights (default: imported)")
    weights.add_argument("--random-weights", type=int, default=None, metavar="SEED", nargs="?", const=0,
                         help="random weights of the official shapes (trying the tool chain)")
    t.add_argument("--resume", action="store_true", help="continue the pack's interrupted or finished training")
    t.add_argument("--aligned", action="store_true", help="the images are EG3D 512x512 crops already")
    t.add_argument("--rank", type=int, default=16, help="adapter rank (default 16, 3 MiB)")
    t.add_argument("--full", action="store_true", help="train dense updates of the target weights instead of low rank")
    t.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-3; 5e-5 with --full)")
    t.add_argument("--seed", type=int, default=0, help="seed of the initialisation, pair order and cameras")
    t.add_argument("--render", default="full", metavar="PRESET",
                   help="render preset of the image losses (default full, the recipe's; fast: 4x cheaper steps "
                        "on a CPU, at a measured cost in quality, see the README)")
    t.add_argument("--loss", default=None, metavar="SPEC",
                   help="loss weights, e.g. tri=1,image=1,raw=1,depth=0.5,mv=1,lpips=0.8,id=0 (0 turns a term off)")
    t.add_argument("--lpips", type=Path, default=None, metavar="PATH", help="LPIPS (AlexNet) weights, .safetensors")
    t.add_argument("--id", type=Path, default=None, metavar="PATH", help="ArcFace IR-SE50 weights, .safetensors")
    t.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="encoder precision (auto: bf16 where measured faster)")
    add_device_arg(t)
    add_styles_arg(t)
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)
    _register_create(sub)


def _register_create(sub) -> None:
    from ..styles import text

    c = sub.add_parser("create", help="make a style from a text instruction (InstructPix2Pix on a photo)")
    c.add_argument("name", help="the style's name (the pack folder STYLES/NAME/)")
    c.add_argument("--text", required=True, help='the edit, as an instruction: "turn him into a bronze statue"')
    c.add_argument("--photo", type=Path, required=True, metavar="PHOTO",
                   help="a portrait to edit (aligned with the face stack; a 512x512 EG3D crop is used as it is)")
    c.add_argument("--text-model", type=Path, required=True, metavar="DIR",
                   help="a local InstructPix2Pix folder (hf download timbrooks/instruct-pix2pix "
                        "--local-dir DIR, on a machine with internet; StreamFX never downloads)")
    c.add_argument("--steps", type=int, default=text.STEPS, metavar="N",
                   help=f"diffusion steps (default {text.STEPS})")
    c.add_argument("--guidance", type=float, default=text.GUIDANCE, metavar="G",
                   help=f"text guidance scale (default {text.GUIDANCE})")
    c.add_argument("--image-guidance", type=float, default=text.IMAGE_GUIDANCE, metavar="I",
                   help=f"image guidance scale; higher keeps more of the photo (default {text.IMAGE_GUIDANCE})")
    c.add_argument("--seed", type=int, default=text.SEED, help=f"noise seed (default {text.SEED})")
    add_device_arg(c)
    add_styles_arg(c)
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_create)


def _styles_dir(args: argparse.Namespace) -> Path:
    from ..styles import default_styles_dir

    return (args.styles or default_styles_dir()).expanduser()


def run_list(args: argparse.Namespace) -> int:
    from ..styles import StyleLibrary

    library = StyleLibrary(_styles_dir(args))
    names, problems = library.names(), library.problems()
    if not names:
        print(f"no styles in {library.folder} (add NAME.png images, or train one: streamfx styles train)")
        return 0
    for name in names:
        if name in problems:
            print(f"{name:<24} refused    {problems[name]}")
            continue
        style = library.style(name)
        extra = ""
        if style.adapter_path is not None:
            training = style.meta.get("training", {})
            extra = (f"{style.adapter_path.stat().st_size / 2**20:5.1f} MiB adapter, {training.get('steps', '?')} steps, "
                     f"base {str(style.base_sha256)[:12]}")
        print(f"{name:<24} {style.kind:<10} {_shown(style):<28} {extra}".rstrip())
    print(f"{len(names)} style(s) in {library.folder}")
    return 0


def _check_new_name(name: str, styles_dir: Path) -> Path:
    """STYLES/NAME for a new style; CliError for a bad name or one that a style already has."""
    from ..styles import StyleLibrary
    from ..training.job import _NAME

    if not _NAME.match(name):
        raise CliError(f"style name {name!r}: use letters, digits, '_', '-' or '.' (at most 64)")
    library = StyleLibrary(styles_dir)
    folder = styles_dir / name
    if name in library.names() or name in library.problems() or folder.exists():
        raise CliError(f"a style {name!r} already exists in {styles_dir}; choose another name or remove it")
    return folder


def run_create(args: argparse.Namespace) -> int:
    from ..runtime.devices import DeviceUnavailable, resolve_device
    from ..styles import StyleError, text

    if args.steps < 1:
        raise CliError("--steps must be at least 1")
    if not args.text.strip():
        raise CliError("--text is empty")
    try:
        device = resolve_device(args.device)
        folder = _check_new_name(args.name, _styles_dir(args))
        text.check_model_folder(args.text_model)
        text.require_text_extra()
        crop = text.align_photo(args.photo)  # all of the above before loading gigabytes
        if not args.quiet:
            print(f"loading {args.text_model} on {device}", file=sys.stderr, flush=True)
        pipe = text.load_text_model(args.text_model, device)
    except (DeviceUnavailable, text.TextModelError, StyleError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    bar = None if args.quiet else _StepBar()
    try:
        style = text.create_text_style(folder, crop, args.text, args.text_model, args.steps, args.guidance,
                                       args.image_guidance, args.seed, device=str(device), pipe=pipe,
                                       progress=bar.update if bar else None)
    except text.TextModelError as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {folder}/ ({args.steps} steps, seed {args.seed}, {style.meta['seconds']:.1f} s on {device}); "
          f"use it with --prompt {args.name} or --style {args.name}")
    return 0


class _StepBar:
    """tqdm over diffusion steps, on stderr."""

    def __init__(self) -> None:
        self.bar = None

    def update(self, k: int, n: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=n, desc="diffusion", unit="step", file=sys.stderr)
        self.bar.update(k - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _shown(style) -> str:
    return f"{style.folder.name}/" if style.folder is not None else style.reference.name


def _config(args: argparse.Namespace, device):
    from ..models.renderer.errors import UnknownPresetError
    from ..models.renderer.presets import get_preset
    from ..training.job import auto_precision
    from ..training.loop import TrainConfig
    from ..training.losses import LossSpecError, LossWeights

    if args.steps is not None and args.steps < 1:
        raise CliError("--steps must be at least 1")
    if args.minutes is not None and not args.minutes > 0:
        raise CliError("--minutes must be positive")
    if args.rank < 1:
        raise CliError("--rank must be at least 1")
    render = args.render
    try:
        get_preset(render)
        weights = LossWeights.parse(args.loss)
    except (UnknownPresetError, LossSpecError) as exc:
        raise CliError(str(exc)) from None
    for term, path, flag in (("lpips", args.lpips, "--lpips"), ("id", args.id, "--id")):
        if getattr(weights, term) > 0 and path is None and args.loss and f"{term}=" in args.loss:
            raise CliError(f"--loss {term}=... needs its weights: {flag} PATH (a .safetensors file)")
    precision = auto_precision(device) if args.precision == "auto" else args.precision
    minutes = args.minutes if args.minutes is not None or args.steps is not None else 5.0
    return TrainConfig(steps=args.steps, minutes=minutes, rank=args.rank, full=args.full, lr=args.lr, seed=args.seed,
                       render=render, weights=weights, device=str(device), precision=precision)


def run_train(args: argparse.Namespace) -> int:
    from ..runtime.devices import DeviceUnavailable, resolve_device
    from ..styles import StyleError
    from ..training.criteria import CriterionWeightsError
    from ..training.job import JobError, StyleJob, check_job, run_job
    from ..training.pairs import PairsError, find_pairs

    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as exc:
        raise CliError(str(exc)) from None
    job = StyleJob(args.name, args.pairs, _styles_dir(args), _config(args, device), args.ref, args.aligned,
                   args.resume, args.lpips, args.id)

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    bar = None
    try:
        check_job(job)  # before loading 700 MB of weights, as are the pairs' names and files
        find_pairs(job.pairs)
        say(f"loading 3DPE weights{' (random)' if args.random_weights is not None else ''}")
        model = load_model(args)
        c = job.config
        say(f"training {args.name!r} on {device} ({c.precision}, render {c.render}, "
            f"{'full updates' if c.full else f'rank {c.rank}'}, "
            f"{f'{c.steps} steps' if c.steps else ''}{' / ' if c.steps and c.minutes else ''}"
            f"{f'{c.minutes:g} min' if c.minutes else ''})")
        bar = None if args.quiet else _Bar(c)
        result, folder = run_job(job, model, say, bar.update if bar else None)
    except (JobError, PairsError, StyleError, CriterionWeightsError, ValueError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    finally:
        if bar is not None:
            bar.close()
    _report(result, folder)
    if result.interrupted:
        print(f"interrupted at step {result.steps}: saved {folder}; continue with --resume", file=sys.stderr)
        return 130
    return 0


class _Bar:
    """tqdm over steps (with --steps) or seconds (a time budget), loss and ETA in the postfix."""

    def __init__(self, config) -> None:
        self.config, self.bar = config, None
        self.by_steps = config.steps is not None

    def update(self, info) -> None:
        if self.bar is None:  # the first step: preparing the pairs is not part of the bar
            from tqdm import tqdm

            total = self.config.steps if self.by_steps else int(self.config.minutes * 60)
            self.bar = tqdm(total=total, desc="training", unit="step" if self.by_steps else "s", file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        value = info.step if self.by_steps else min(int(info.elapsed_s), self.bar.total)
        self.bar.update(value - self.bar.n)
        eta = "" if info.eta_s is None else f", eta {info.eta_s / 60:.1f} min"
        self.bar.set_postfix_str(f"step {info.step}, loss {info.loss:.4f}{eta}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(result, folder: Path) -> None:
    before, after = result.losses_before, result.losses_after
    terms = ", ".join(f"{k} {before[k]:.4f} -> {after.get(k, float('nan')):.4f}" for k in before)
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; training losses: {terms}")
    if result.heldout is not None:
        print(f"held-out pair {result.heldout!r}: image L1 {result.heldout_before:.4f} -> {result.heldout_after:.4f}")
    else:
        print("no held-out pair (4 pairs or more hold one out)")
    size = (folder / "adapter.safetensors").stat().st_size / 2**20
    print(f"wrote {folder}/ ({size:.1f} MiB adapter); use it with --prompt {folder.name} or --style {folder.name}")
