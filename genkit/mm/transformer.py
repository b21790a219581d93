"""A small pre-norm transformer with 2-axis rotary attention (PyTorch SDPA) and a KV cache.

Attention masks are boolean, True = may attend, shape (B, 1, T_query, T_key). `attention_mask` builds the
multimodal one: causal over the sequence, bidirectional inside the image block (MAR-style generation), no
attention to padding. With a cache, new tokens see every cached token plus the given mask among themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .positions import apply_rotary


def attention_mask(is_image: torch.Tensor, valid: torch.Tensor, bidirectional_image: bool = True) -> torch.Tensor:
    """is_image, valid: (B, T) bool -> (B, 1, T, T): j <= i, or both in the image block (one image per
    sequence); keys must be valid. Every query may attend itself, so no row is empty (no NaN for padding)."""
    t = is_image.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=is_image.device).tril()
    allowed = causal.unsqueeze(0).expand(is_image.shape[0], t, t)
    if bidirectional_image:
        allowed = allowed | (is_image.unsqueeze(2) & is_image.unsqueeze(1))
    allowed = allowed & valid.unsqueeze(1)
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=is_image.device)
    return allowed.unsqueeze(1)


class KVCache:
    """Keys and values per layer, (B, H, T_cached, D) each; `positions` of the cached tokens are the caller's."""

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def expand(self, batch: int) -> "KVCache":
        """The same cache repeated for `batch` sequences (a cached prefix shared by several samples)."""
        out = KVCache(len(self.k))
        out.k = [k.expand(batch, -1, -1, -1).contiguous() for k in self.k]
        out.v = [v.expand(batch, -1, -1, -1).contiguous() for v in self.v]
        return out


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, angles, mask, cache: KVCache | None = None, layer: int = 0, update_cache: bool = True):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, angles), apply_rotary(k, angles)          # (B, H, T, Dh)
        if cache is not None:
            if cache.k[layer] is not None:
                past = cache.k[layer].shape[2]
                k_all = torch.cat([cache.k[layer], k], dim=2)
                v_all = torch.cat([cache.v[layer], v], dim=2)
                # new tokens see all cached ones, and each other as `mask` says
                mask = torch.cat([mask.new_ones(b, 1, t, past), mask], dim=-1)
            else:
                k_all, v_all = k, v
            if update_cache:
                cache.k[layer], cache.v[layer] = k_all, v_all
            k, v = k_all, v_all
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x, angles, mask, cache=None, layer=0, update_cache=True):
        x = x + self.attn(self.norm1(x), angles, mask, cache, layer, update_cache)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, d_model: int, n_layers: int, n_heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not allowed with n_heads={n_heads}: a multiple of it")
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, angles, mask, cache: KVCache | None = None, update_cache: bool = True):
        """x (B, T, d), angles (B, T, Dh/2), mask (B, 1, T, T) for the new tokens -> (B, T, d)."""
        for i, block in enumerate(self.blocks):
            x = block(x, angles, mask, cache, i, update_cache)
        return self.norm(x)
