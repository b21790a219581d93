"""Positions of text and image tokens for 2-axis rotary embeddings (research/multimodal.md §2).

Every token gets a float (row, col) position; a text token at step n sits at (n, n). How an h x w patch grid
after a text token at position L is placed (patch (i, j), 1-based):

  tie_v2 (default)  (L + (wh - h)/2 + i, L + (wh - w)/2 + j); next text at L + wh + 1   (Su's RoPE-Tie-v2)
  tie_v1            (L + i (w + 1), L + j (h + 1));            next text at L + (w+1)(h+1) (RoPE-Tie)
  rope1d            flattened: L + (i - 1) w + j on both axes;  next text at L + wh + 1   (Fuyu-style)
  mrope             (L + i, L + j);                             next text at L + max(h, w) + 1 (Qwen2-VL, 2 axes)

Rotary pair k (frequency theta_k = base^(-2k/d)) turns by the row or the col coordinate: interleaved (k even:
row, k odd: col; the default, so each axis gets the full frequency range) or chunked (first half row, second
half col: Qwen2-VL's M-RoPE). A text token at (n, n) thus turns every pair by n theta_k: exactly RoPE-1D.
"""

from __future__ import annotations

import torch

SCHEMES = ("tie_v2", "tie_v1", "rope1d", "mrope")
SPLITS = ("interleaved", "chunked")


def layout_positions(segments, scheme: str = "tie_v2") -> torch.Tensor:
    """segments: [("text", n) | ("image", h, w), ...] -> float64 (T, 2) (row, col) positions, text from 1."""
    if scheme not in SCHEMES:
        raise ValueError(f"positions={scheme!r} is not allowed: one of {', '.join(SCHEMES)}")
    pos, last = [], 0.0                                    # last: position of the previous token
    for seg in segments:
        if seg[0] == "text":
            for _ in range(seg[1]):
                last += 1
                pos.append((last, last))
            continue
        _, h, w = seg
        for i in range(1, h + 1):
            for j in range(1, w + 1):
                if scheme == "tie_v2":
                    pos.append((last + (w * h - h) / 2 + i, last + (w * h - w) / 2 + j))
                elif scheme == "tie_v1":
                    pos.append((last + i * (w + 1), last + j * (h + 1)))
                elif scheme == "rope1d":
                    pos.append((last + (i - 1) * w + j,) * 2)
                else:
                    pos.append((last + i, last + j))
        last += {"tie_v2": w * h, "rope1d": w * h, "tie_v1": (w + 1) * (h + 1) - 1, "mrope": max(h, w)}[scheme]
    return torch.tensor(pos, dtype=torch.float64).view(-1, 2)


def rotary_angles(pos: torch.Tensor, head_dim: int, base: float = 10000.0, split: str = "interleaved"):
    """pos (..., 2) -> angles (..., head_dim / 2): pair k turns by pos[axis(k)] * base^(-2k/head_dim)."""
    if split not in SPLITS:
        raise ValueError(f"rope_split={split!r} is not allowed: one of {', '.join(SPLITS)}")
    if head_dim % 4:
        raise ValueError(f"head_dim={head_dim} is not allowed: a multiple of 4 (two axes of rotary pairs)")
    n = head_dim // 2
    k = torch.arange(n, dtype=torch.float64, device=pos.device)
    theta = base ** (-2 * k / head_dim)
    axis = (k % 2).long() if split == "interleaved" else (k >= n // 2).long()
    return pos.double()[..., axis] * theta                # picks row or col per pair


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) with pairs (2k, 2k+1) rotated by angles (B, T, D/2)."""
    cos = angles.cos().to(x.dtype).unsqueeze(1)           # (B, 1, T, D/2)
    sin = angles.sin().to(x.dtype).unsqueeze(1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)
