"""Reading, validating and importing 3DPE weights.

Two formats:

* the **official** ``3dpe.pt`` (a ``torch.save`` of ``{"encoder_state_dict": ...,
  "renderer_state_dict": ...}``), read with ``torch.load(weights_only=True)`` only, never a
  full unpickler;
* an **imported** StreamFX directory: ``3dpe.safetensors`` holding every official tensor
  under ``"<entry>/<official key>"`` (entry ``encoder`` or ``renderer``), plus
  ``manifest.json`` (format, source file and its sha256, sha256 of the safetensors,
  shapes). This is what runs at run time.

Both are validated against :data:`~streamfx.models.checkpoint_spec.CHECKPOINT_SPEC` (every
key and shape of the official checkpoint). Problems raise :class:`CheckpointError` with a
one-line message naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import time
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import torch

from .. import log
from .checkpoint_spec import CHECKPOINT_SPEC

logger = log.get(__name__)

ENTRIES = ("encoder_state_dict", "renderer_state_dict")
SHORT = {"encoder_state_dict": "encoder", "renderer_state_dict": "renderer"}
WEIGHTS_FILE = "3dpe.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT = "streamfx-3dpe/1"
GET_WEIGHTS_HINT = ("download 3dpe.pt from the 3DPE repository's pretrained_models link "
                    "(github.com/EzioBy/3dpe), then run: streamfx weights import PATH/3dpe.pt")

StateDicts = dict[str, dict[str, torch.Tensor]]


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one line naming the problem."""


def expected_shapes(entry: str) -> dict[str, tuple[int, ...]]:
    """Official key -> shape for one checkpoint entry."""
    return {key: shape for e, key, shape, _ in CHECKPOINT_SPEC if e == entry}


def expected_parameters(entry: str) -> list[str]:
    """Official keys of kind ``parameter`` for one entry, in Python string order."""
    return sorted(key for e, key, _, kind in CHECKPOINT_SPEC if e == entry and kind == "parameter")


def _name_some(keys: Iterable[str], limit: int = 3) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def validate(state: Mapping[str, Mapping[str, torch.Tensor]], source: str = "checkpoint") -> None:
    """Check entries, key sets, shapes and dtypes against the official table."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: expected a dict of state dicts, found {type(state).__name__}")
    missing_entries = [e for e in ENTRIES if e not in state]
    if missing_entries:
        raise CheckpointError(f"{source}: missing entries {', '.join(missing_entries)} "
                              f"(found {_name_some(map(str, state.keys()))})")
    for entry in ENTRIES:
        sd = state[entry]
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{source}: {entry} is a {type(sd).__name__}, not a state dict")
        want = expected_shapes(entry)
        missing = want.keys() - sd.keys()
        unexpected = sd.keys() - want.keys()
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing keys: {_name_some(missing)}")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected keys: {_name_some(map(str, unexpected))}")
            raise CheckpointError(f"{source}: {entry} has the wrong key set, " + "; ".join(parts))
        for key, shape in want.items():
            tensor = sd[key]
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{source}: {entry}.{key} is a {type(tensor).__name__}, not a tensor")
            if tuple(tensor.shape) != shape:
                raise CheckpointError(f"{source}: {entry}.{key} has shape {_fmt(tensor.shape)}, "
                                      f"expected {_fmt(shape)}")
            if not tensor.is_floating_point():
                raise CheckpointError(f"{source}: {entry}.{key} has dtype {tensor.dtype}, expected floating point")


def _fmt(shape: Iterable[int]) -> str:
    shape = tuple(shape)
    return "x".join(map(str, shape)) if shape else "scalar"


# ---------------------------------------------------------------------------- reading


def read_official(path: str | os.PathLike) -> StateDicts:
    """Read and validate an official ``3dpe.pt`` with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    try:
        state = _torch_load(path)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it references {found[1]}" if found else "it contains objects other than tensors"
        raise CheckpointError(f"{path}: refused by the weights-only loader ({what}); "
                              "not a plain tensor checkpoint") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or not a torch checkpoint ({_first_line(exc)})") from None
    validate(state, source=str(path))
    return {entry: dict(state[entry]) for entry in ENTRIES}


def _torch_load(path: Path) -> object:
    try:  # mmap avoids holding the file twice in memory; needs the zip format
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception message, without terminal escapes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return first.split(". ")[0].rstrip(".")[:160]


def read_imported(path: str | os.PathLike, verify_hash: bool = False) -> StateDicts:
    """Read and validate an imported StreamFX model (a directory or its ``.safetensors``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS_FILE} (import weights with: streamfx weights import PATH/3dpe.pt)")
    manifest_path = weights.with_name(MANIFEST_FILE)
    if verify_hash:
        if not manifest_path.is_file():
            raise CheckpointError(f"{weights.parent}: no {MANIFEST_FILE} to verify against")
        manifest = json.loads(manifest_path.read_text())
        digest = sha256_file(weights)
        if digest != manifest.get("sha256"):
            raise CheckpointError(f"{weights}: sha256 {digest[:12]}... does not match the manifest")
    try:
        flat = load_file(weights, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: truncated or not a safetensors file ({_first_line(exc)})") from None
    state: StateDicts = {entry: {} for entry in ENTRIES}
    by_short = {v: k for k, v in SHORT.items()}
    for name, tensor in flat.items():
        short, _, key = name.partition("/")
        if short not in by_short:
            raise CheckpointError(f"{weights}: unexpected tensor {name!r}")
        state[by_short[short]][key] = tensor
    validate(state, source=str(weights))
    return state


def read_any(path: str | os.PathLike) -> StateDicts:
    """Official ``.pt``/``.pth`` or imported (directory or ``.safetensors``), validated."""
    path = Path(path).expanduser()
    if path.is_dir() or path.suffix == ".safetensors":
        return read_imported(path)
    return read_official(path)


# ---------------------------------------------------------------------------- importing


def default_weights_dir() -> Path:
    """``$STREAMFX_HOME/weights``, else ``$XDG_DATA_HOME/streamfx/weights``
    (default ``~/.local/share/streamfx/weights``)."""
    home = os.environ.get("STREAMFX_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    data = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(data).expanduser() / "streamfx" / "weights"


def find_imported_weights() -> Path | None:
    """The imported-weights directory if it holds a model and a manifest, else None."""
    root = default_weights_dir()
    if (root / WEIGHTS_FILE).is_file() and (root / MANIFEST_FILE).is_file():
        return root
    return None


def sha256_file(path: Path, progress: bool = False, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, _bar(size, f"sha256 {path.name}", progress) as bar:
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def import_official(source: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    progress: bool = False) -> Path:
    """Validate an official ``3dpe.pt`` and write ``3dpe.safetensors`` + ``manifest.json``
    into ``out_dir`` (default :func:`default_weights_dir`). Returns the directory."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    source = Path(source).expanduser()
    out = Path(out_dir).expanduser() if out_dir else default_weights_dir()
    with tqdm(total=4, desc="import 3dpe", unit="step", disable=not progress, leave=False) as steps:
        steps.set_postfix_str("reading")
        state = read_official(source)
        steps.update()
        steps.set_postfix_str("hashing source")
        source_sha = sha256_file(source, progress=progress)
        steps.update()
        steps.set_postfix_str("writing")
        flat = {f"{SHORT[entry]}/{key}": tensor.detach().to("cpu").contiguous()
                for entry in ENTRIES for key, tensor in state[entry].items()}
        out.mkdir(parents=True, exist_ok=True)
        weights = out / WEIGHTS_FILE
        partial = weights.with_suffix(".safetensors.partial")
        try:
            save_file(flat, str(partial), metadata={"format": FORMAT})
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        steps.update()
        steps.set_postfix_str("hashing output")
        manifest = {
            "format": FORMAT,
            "file": WEIGHTS_FILE,
            "sha256": sha256_file(partial, progress=progress),
            "bytes": partial.stat().st_size,
            "source": {"path": str(source.resolve()), "name": source.name, "sha256": source_sha,
                       "bytes": source.stat().st_size},
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "key_naming": "'<encoder|renderer>/<official key of encoder_state_dict|renderer_state_dict>'",
            "parameters": {SHORT[e]: sum(math.prod(state[e][k].shape) for k in expected_parameters(e))
                           for e in ENTRIES},
            "shapes": {name: list(t.shape) for name, t in flat.items()},
            "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in flat.values()}),
        }
        manifest_partial = out / (MANIFEST_FILE + ".partial")
        manifest_partial.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(partial, weights)
        os.replace(manifest_partial, out / MANIFEST_FILE)
        steps.update()
    logger.info("weights imported", extra={"out": str(out), "source": str(source)})
    return out
