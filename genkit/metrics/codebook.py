"""Codebook health of a tokenizer on held-out data (research/multimodal.md §3.6): usage alone can hide a
skewed distribution, so report perplexity too."""

from __future__ import annotations

import torch


def codebook_stats(indices: torch.Tensor, codebook_size: int) -> dict:
    """indices: any shape of code ids in [0, K). Returns
    usage       codes used at least once / K
    perplexity  exp(entropy of the code histogram), in codes (K when every code is equally frequent)
    perplexity_ratio  perplexity / K
    """
    counts = torch.bincount(indices.flatten().long().cpu(), minlength=codebook_size).double()
    if len(counts) > codebook_size:
        raise ValueError(f"indices reach {len(counts) - 1}: not allowed with codebook_size={codebook_size}")
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    perplexity = float(entropy.exp())
    return {"usage": float((counts > 0).sum()) / codebook_size, "perplexity": perplexity,
            "perplexity_ratio": perplexity / codebook_size}
