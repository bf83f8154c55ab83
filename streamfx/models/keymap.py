"""Key map from the official 3DPE ``encoder_state_dict`` to StreamFX's module names.

StreamFX names its encoder modules by role (``trunk``, ``aspp``, ``branch_f`` ...) instead
of the official Sequential positions. :func:`encoder_key` maps one official key to the
StreamFX key inside :class:`~streamfx.models.threedpe.ThreeDPE` (prefix ``vit.`` for the
reference ViT, ``encoder.`` for the rest), or to ``None`` for weights that never run
(ResNet layers 3 and 4: DeepLabV3 at depth 3 stops at layer 2).

The renderer keeps the official names (``renderer_state_dict`` goes to the renderer's own
``load_state_dict`` as is).
"""

from __future__ import annotations

import re
from typing import Callable

# Official Sequential index -> StreamFX ModuleList index.
_ASPP_ATROUS = {"1": "0", "2": "1", "3": "2"}
_HIGH_CONVS = {str(2 * i): str(i) for i in range(7)}          # net.0, net.2, ..., net.12
_FINAL_HEAD = {"0": "0", "3": "1", "5": "2", "7": "3", "9": "4"}  # output_net convs
_F_CONVS = {"0": "conv1", "2": "conv2"}

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]]


def _segformer(rest: str) -> str:
    """Rename inside a SegFormer block: ``attn.norm`` -> ``attn.sr_norm``,
    ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``."""
    rest = re.sub(r"^attn\.norm\.", "attn.sr_norm.", rest)
    return re.sub(r"^mlp\.dwconv\.dwconv\.", "mlp.dwconv.", rest)


_RULES: list[_Rule] = [
    (re.compile(r"encoder\.layer[34]\..*"), lambda m: None),
    (re.compile(r"encoder\.conv1\.(\w+)"), lambda m: f"encoder.trunk.stem.{m[1]}"),
    (re.compile(r"encoder\.(layer[12]\.\d+)\.downsample\.0\.(\w+)"), lambda m: f"encoder.trunk.{m[1]}.shortcut.{m[2]}"),
    (re.compile(r"encoder\.(layer[12]\.\d+\.conv[12]\.\w+)"), lambda m: f"encoder.trunk.{m[1]}"),
    (re.compile(r"decoder\.0\.convs\.0\.0\.(\w+)"), lambda m: f"encoder.aspp.branch1x1.{m[1]}"),
    (re.compile(r"decoder\.0\.convs\.([123])\.0\.(\w+)"), lambda m: f"encoder.aspp.atrous.{_ASPP_ATROUS[m[1]]}.{m[2]}"),
    (re.compile(r"decoder\.0\.convs\.4\.1\.(\w+)"), lambda m: f"encoder.aspp.pooled.{m[1]}"),
    (re.compile(r"decoder\.0\.project\.0\.(\w+)"), lambda m: f"encoder.aspp.project.{m[1]}"),
    (re.compile(r"decoder\.1\.(\w+)"), lambda m: f"encoder.aspp.head.{m[1]}"),
    (re.compile(r"F_encoder\.patchembed\.(.+)"), lambda m: f"encoder.branch_f.embed.{m[1]}"),
    (re.compile(r"F_encoder\.blocks\.(\d+)\.(.+)"), lambda m: f"encoder.branch_f.blocks.{m[1]}.{_segformer(m[2])}"),
    (re.compile(r"F_encoder\.net\.([02])\.(\w+)"), lambda m: f"encoder.branch_f.{_F_CONVS[m[1]]}.{m[2]}"),
    (re.compile(r"EHigh_encoder\.net\.(\d+)\.(\w+)"), lambda m: f"encoder.branch_high.convs.{_HIGH_CONVS[m[1]]}.{m[2]}"),
    (re.compile(r"Final_encoder\.net\.0\.(\w+)"), lambda m: f"encoder.final.fuse.{m[1]}"),
    (re.compile(r"Final_encoder\.pathembed\.(.+)"), lambda m: f"encoder.final.embed.{m[1]}"),
    (re.compile(r"Final_encoder\.block\.(.+)"), lambda m: f"encoder.final.block.{_segformer(m[1])}"),
    (re.compile(r"Final_encoder\.output_net\.(\d+)\.(\w+)"), lambda m: f"encoder.final.head.{_FINAL_HEAD[m[1]]}.{m[2]}"),
    (re.compile(r"Ref_encoder\.mae_encoder\.patch_embed\.proj\.(\w+)"), lambda m: f"vit.patch_embed.{m[1]}"),
    (re.compile(r"Ref_encoder\.mae_encoder\.(.+)"), lambda m: f"vit.{m[1]}"),
    (re.compile(r"Ref_encoder\.pre_conv\.(\w+)"), lambda m: f"encoder.fusion.pre_conv.{m[1]}"),
    (re.compile(r"Ref_encoder\.patch_emb\.(.+)"), lambda m: f"encoder.fusion.embed.{m[1]}"),
    (re.compile(r"Ref_encoder\.proj_tail\.(\w+)"), lambda m: f"encoder.fusion.proj_tail.{m[1]}"),
]


def encoder_key(official: str) -> str | None:
    """StreamFX key for an official ``encoder_state_dict`` key; None if unused.

    Raises KeyError for a key no rule knows (the checkpoint validator rejects those first).
    """
    for pattern, target in _RULES:
        match = pattern.fullmatch(official)
        if match:
            try:
                return target(match)
            except KeyError:
                break
    raise KeyError(official)
