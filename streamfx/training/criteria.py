"""Optional perceptual losses of style fine-tuning, as in the official 3DPE recipe
(``training/coach.py``: LPIPS weighted by ``lpips_lambda``, default 0.8, and an ArcFace
identity loss weighted by ``id_lambda``, default 0.0).

* :class:`LPIPS` - learned perceptual distance, AlexNet variant (v0.1): the five ReLU
  feature maps of AlexNet, unit-normalised over channels, squared difference, a learned
  1x1 projection to one channel, spatial mean, summed over layers, mean over the batch.
* :class:`IdentityLoss` - ``1 - cos`` between IR-SE50 (ArcFace) embeddings of a face crop:
  resize to 256x256, crop ``[35:223, 32:220]``, average-pool to 112x112.

Both take images (B, 3, H, W) in [-1, 1], return a scalar, stay in eval mode and never
train their own weights, while gradients reach the input images.

Weights are never downloaded: the user converts the official files once to ``.safetensors``
(plain tensors, no pickle). Names: LPIPS uses torchvision's ``features.{0,3,6,8,10}.{weight,
bias}`` and ``lin{0..4}.weight`` (the lpips package's ``lin{i}.model.1.weight`` with
``.model.1`` dropped); IR-SE50 uses the names of pSp/e4e's ``model_ir_se50.pth`` unchanged
(``num_batches_tracked`` is optional, BatchNorm running statistics are required). The
README's styles section shows the conversion (a few lines of ``torch.load(weights_only=True)``
and ``safetensors.torch.save_file``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class CriterionWeightsError(ValueError):
    """A loss weights file is missing, unreadable or does not fit (one line, naming the file)."""


class _Frozen(nn.Module):
    """A fixed criterion: always in eval mode, its own parameters never require grad."""

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> _Frozen:  # a parent's .train() must not flip BN/Dropout
        return super().train(False)


# (torchvision feature index, in channels, out channels, kernel, stride, padding) of AlexNet
_ALEX = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
         (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))


class LPIPS(_Frozen):
    """LPIPS v0.1, AlexNet. ``forward(a, b)``: a, b (B, 3, H, W) in [-1, 1], H, W >= 64 -> ()."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for idx, cin, cout, k, s, p in _ALEX:
            if idx in (3, 6):  # max-pool 3/2 after relu1 and relu2
                layers.append(nn.MaxPool2d(3, 2))
            layers += [nn.Conv2d(cin, cout, k, s, p), nn.ReLU()]
        self.features = nn.Sequential(*layers)  # indices 0..11 as in torchvision
        self.taps = (1, 4, 7, 9, 11)  # the five ReLUs
        for i, spec in enumerate(_ALEX):
            setattr(self, f"lin{i}", nn.Conv2d(spec[2], 1, 1, bias=False))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> five (B, C_l, H_l, W_l) maps, each of unit length over channels."""
        x, out = (x - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:  # vector_norm: same value as sqrt(sum x^2), zero-safe gradient
                out.append(x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0
        for i, (fa, fb) in enumerate(zip(self._feats(a), self._feats(b))):
            total = total + getattr(self, f"lin{i}")((fa - fb) ** 2).mean((1, 2, 3))  # (B,)
        return total.mean()


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 16, 1, bias=False), nn.Conv2d(c // 16, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class _UnitIRSE(nn.Module):
    """Residual unit (B, cin, H, W) -> (B, depth, H/stride, W/stride)."""

    def __init__(self, cin: int, depth: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if cin == depth else
                               nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), _SqueezeExcite(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IdentityLoss(_Frozen):
    """ArcFace IR-SE50 identity loss. ``forward(a, b)``: a rendered, b target (no gradient),
    both (B, 3, H, W) in [-1, 1] -> mean over the batch of ``1 - cos(emb(a), emb(b))``."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, cin = [], 64
        for depth, count in ((64, 3), (128, 4), (256, 14), (512, 3)):
            units += [_UnitIRSE(cin if j == 0 else depth, depth, 2 if j == 0 else 1) for j in range(count)]
            cin = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))
        self._freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 512) unit-length embeddings of the face crop."""
        x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
        x = F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], 112)  # (B, 3, 112, 112)
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.embed(b)
        return (1 - (self.embed(a) * target).sum(1)).mean()


def _state_names(cls: type[nn.Module]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only, nothing allocated
        state = cls().state_dict()
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith(".num_batches_tracked")}


def lpips_state_names() -> dict[str, tuple[int, ...]]:
    """Every tensor an LPIPS weights file must hold -> its shape (15 tensors)."""
    return _state_names(LPIPS)


def identity_state_names() -> dict[str, tuple[int, ...]]:
    """Every tensor an IR-SE50 weights file must hold -> its shape (``num_batches_tracked``
    entries are also accepted, and ignored)."""
    return _state_names(IdentityLoss)


def _load(cls: type[_Frozen], kind: str, path: str | os.PathLike) -> _Frozen:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()

    def fail(problem: str) -> CriterionWeightsError:
        return CriterionWeightsError(f"{kind} weights {path}: {problem}")

    if not path.is_file():
        raise fail("no such file")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise fail(f"not a readable safetensors file ({reason})") from None
    expected = _state_names(cls)
    for name, shape in expected.items():
        if name not in tensors:
            raise fail(f"missing tensor {name!r}")
        if tuple(tensors[name].shape) != shape:
            raise fail(f"tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
        if not tensors[name].is_floating_point():
            raise fail(f"tensor {name!r} has dtype {tensors[name].dtype}, expected floating point")
    counters = {k.replace(".running_mean", ".num_batches_tracked") for k in expected if k.endswith(".running_mean")}
    for name in tensors:
        if name not in expected and name not in counters:  # BatchNorm counters: optional, unused
            raise fail(f"unexpected tensor {name!r}")
    module = cls()
    module.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=False)
    return module


def load_lpips(path: str | os.PathLike) -> LPIPS:
    """LPIPS (AlexNet) from a converted ``.safetensors`` (see the module docstring)."""
    return _load(LPIPS, "lpips", path)


def load_identity(path: str | os.PathLike) -> IdentityLoss:
    """IR-SE50 identity loss from a converted ``.safetensors`` (see the module docstring)."""
    return _load(IdentityLoss, "identity", path)
