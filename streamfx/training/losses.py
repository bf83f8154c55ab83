"""The fine-tuning losses (the official recipe, EzioBy/3dpe ``training/coach.py``; weights
from its ``options/train_options.py`` where the term exists there).

Against the target (the base model's encoding of ``after``, see :mod:`.loop`):

==========  ==========================================================  =======
term        what                                                        default
==========  ==========================================================  =======
``tri``     L1 between the edited and the target tri-planes             1.0
``image``   L1 of the 512 image at the photo's camera                   1.0
``raw``     L1 of the raw (volume) image at the photo's camera          1.0
``depth``   L1 of the depth at the photo's camera                       0.5
``mv``      the image, raw and depth terms (same weights) again at a    1.0
            random camera against a render of the target tri-planes
``lpips``   LPIPS (AlexNet) of image and raw, both cameras; needs       0.8
            ``--lpips PATH``
``id``      ArcFace identity (1 - cos) of the image, both cameras;      0.0
            needs ``--id PATH``
==========  ==========================================================  =======

The official recipe's adversarial term needs its discriminator, which ``3dpe.pt`` does not
carry: there is no GAN term. Its feature-image term has weight 0 there and is left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import torch
import torch.nn.functional as F

Renders = dict[str, torch.Tensor]


class LossSpecError(ValueError):
    """A ``--loss`` value that cannot be parsed (one line)."""


@dataclass(frozen=True)
class LossWeights:
    tri: float = 1.0
    image: float = 1.0
    raw: float = 1.0
    depth: float = 0.5
    mv: float = 1.0
    lpips: float = 0.8
    id: float = 0.0

    @classmethod
    def parse(cls, spec: str | None, base: "LossWeights | None" = None) -> "LossWeights":
        """``"tri=1,image=1,mv=0"`` over ``base`` (the defaults): unknown names and values that
        are not finite non-negative numbers are refused."""
        weights = base or cls()
        if not spec:
            return weights
        names = [f.name for f in fields(cls)]
        changes = {}
        for item in spec.split(","):
            name, eq, value = item.strip().partition("=")
            if not eq or name not in names:
                raise LossSpecError(f"--loss: {item.strip()!r} is not NAME=WEIGHT with NAME one of {', '.join(names)}")
            try:
                number = float(value)
            except ValueError:
                raise LossSpecError(f"--loss: {value!r} is not a number") from None
            if not (number >= 0.0 and number != float("inf")):
                raise LossSpecError(f"--loss: {name} must be a finite weight >= 0, got {value}")
            changes[name] = number
        return replace(weights, **changes)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _image_terms(edit: Renders, target: Renders, w: LossWeights, lpips: Criterion | None,
                 identity: Criterion | None, prefix: str) -> dict[str, tuple[float, torch.Tensor]]:
    terms = {f"{prefix}{name}": (weight, F.l1_loss(edit[key], target[key]))
             for name, key, weight in (("image", "image", w.image), ("raw", "image_raw", w.raw),
                                       ("depth", "image_depth", w.depth)) if weight > 0}
    if lpips is not None and w.lpips > 0:
        terms[f"{prefix}lpips"] = (w.lpips, lpips(edit["image"], target["image"]) + lpips(edit["image_raw"], target["image_raw"]))
    if identity is not None and w.id > 0:
        terms[f"{prefix}id"] = (w.id, identity(edit["image"], target["image"]))
    return terms


def total_loss(edit_planes: torch.Tensor, target_planes: torch.Tensor | None, edit: Renders, target: Renders,
               weights: LossWeights, mv_edit: Renders | None = None, mv_target: Renders | None = None,
               lpips: Criterion | None = None, identity: Criterion | None = None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """(weighted sum, each term's unweighted value). Terms with weight 0 are not computed;
    the multi-view terms only when ``mv_edit`` is given and ``weights.mv`` > 0."""
    terms = {}
    if weights.tri > 0:
        terms["tri"] = (weights.tri, F.l1_loss(edit_planes, target_planes))
    terms.update(_image_terms(edit, target, weights, lpips, identity, ""))
    if mv_edit is not None and mv_target is not None and weights.mv > 0:
        for name, (w, value) in _image_terms(mv_edit, mv_target, weights, lpips, identity, "mv_").items():
            terms[name] = (w * weights.mv, value)
    if not terms:
        raise LossSpecError("--loss: every term has weight 0; nothing to train")
    total = sum(w * value for w, value in terms.values())
    return total, {name: float(value.detach()) for name, (_, value) in terms.items()}
