"""The autoregressive multimodal model: byte text + raw pixel patches in one transformer, RoPE-Tie positions,
a per-patch diffusion head (MAR). See model.py, positions.py, transformer.py, diffusion_head.py, tokens.py."""

from .diffusion_head import DiffusionHead, patch_diffusion_loss, sample_patches
from .model import IMAGE_HEADS, IMAGE_TOKENS, MASK_SCHEDULES, ORDERS, MultimodalAR
from .positions import SCHEMES, layout_positions, rotary_angles
from .tokens import BOI, BOS, EOI, EOS, PAD, VOCAB_SIZE, decode_text, encode_text, patchify, unpatchify

__all__ = ["DiffusionHead", "patch_diffusion_loss", "sample_patches", "IMAGE_HEADS", "IMAGE_TOKENS",
           "MASK_SCHEDULES", "ORDERS", "MultimodalAR",
           "SCHEMES", "layout_positions", "rotary_angles", "BOI", "BOS", "EOI", "EOS", "PAD", "VOCAB_SIZE",
           "decode_text", "encode_text", "patchify", "unpatchify"]
