"""The pieces of tokenizer training shared by training/train_vq.py and `genkit bench vq`: a seeded batch
sampler, one optimisation step, and the held-out evaluation (reconstruction MSE, codebook usage,
perplexity, quantisation error)."""

from __future__ import annotations

import torch

from ..metrics.codebook import codebook_stats


def batch_indices(n: int, batch_size: int, seed: int, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """The images of one step: a function of (seed, step, rank) only, so a resumed run draws the same batches."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * world + rank)
    return torch.randint(n, (batch_size,), generator=g)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 127.5 - 1


@torch.no_grad()
def evaluate_tokenizer(tok, images_u8: torch.Tensor, batch_size: int = 200) -> dict:
    """On held-out uint8 images (N, 3, S, S): mse (reconstruction, [-1, 1] units), usage, perplexity,
    perplexity_ratio, quant_error; tok is put in eval mode and restored."""
    was_training = tok.training
    tok.eval()
    mse, qerr, idx = 0.0, 0.0, []
    for i in range(0, len(images_u8), batch_size):
        x = to_float(images_u8[i:i + batch_size]).to(tok.device)
        rec, out = tok(x)
        mse += torch.nn.functional.mse_loss(rec.clamp(-1, 1), x, reduction="sum").item()
        qerr += out.quant_error.item() * len(x)
        idx.append(out.indices.cpu())
    tok.train(was_training)
    n = len(images_u8)
    stats = codebook_stats(torch.cat(idx), tok.codebook_size)
    return {"mse": mse / images_u8[0].numel() / n, "quant_error": qerr / n, **stats,
            "codebook_size": tok.codebook_size}
