"""Tokens of the multimodal model: UTF-8 bytes for text, raw pixel patches for images (research/multimodal.md §5.1).

Text: byte values 0..255 plus five specials. No learned tokenizer: emoji names are short, and bytes make every
string (any language, any emoji) representable. Images: 4x4 patches of a 32x32 RGB image in [-1, 1], an 8x8 grid
of 48-d vectors, row-major. Nothing is quantised: the model reads images losslessly.
"""

from __future__ import annotations

import torch
from einops import rearrange

BOS, EOS, BOI, EOI, PAD = 256, 257, 258, 259, 260
VOCAB_SIZE = 261
SPECIAL_NAMES = {BOS: "[BOS]", EOS: "[EOS]", BOI: "[BOI]", EOI: "[EOI]", PAD: "[PAD]"}


def encode_text(text: str, max_bytes: int, name: str = "prompt") -> list[int]:
    """A non-empty string -> its UTF-8 bytes (ValueError naming `name` if empty or longer than max_bytes)."""
    if not isinstance(text, str):
        raise ValueError(f"{name}={text!r} is not allowed: a string")
    data = text.strip().encode("utf-8")
    if not data:
        raise ValueError(f"{name}={text!r} is not allowed: a non-empty text")
    if len(data) > max_bytes:
        raise ValueError(f"{name} has {len(data)} UTF-8 bytes: at most {max_bytes} are allowed")
    return list(data)


def decode_text(ids) -> str:
    """Byte ids -> text; specials are dropped, invalid UTF-8 (a model can emit any byte) becomes U+FFFD."""
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def patchify(images: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """(N, C, H, W) -> (N, (H/p)(W/p), p*p*C), row-major over the patch grid."""
    return rearrange(images, "n c (h p) (w q) -> n (h w) (p q c)", p=patch, q=patch)


def unpatchify(patches: torch.Tensor, grid: int, patch: int = 4, channels: int = 3) -> torch.Tensor:
    """(N, grid*grid, p*p*C) -> (N, C, grid*p, grid*p)."""
    return rearrange(patches, "n (h w) (p q c) -> n c (h p) (w q)", h=grid, w=grid, p=patch, q=patch, c=channels)
