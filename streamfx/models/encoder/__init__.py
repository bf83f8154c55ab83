"""The 3DPE encoder half: reference ViT and the image-to-tri-plane encoder."""

from .live_encoder import LiveEncoder, with_coordinates
from .vit import MaeViT, ViTConfig

__all__ = ["LiveEncoder", "MaeViT", "ViTConfig", "with_coordinates"]
