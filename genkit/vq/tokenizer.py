"""VQTokenizer: a small conv autoencoder with a quantizer in the middle: 32x32 RGB <-> an 8x8 grid of codes.

    tok = VQTokenizer.from_pretrained("weights/openmoji-vq")
    idx = tok.encode(images)          # uint8 (N, 3, 32, 32) or float in [-1, 1] -> LongTensor (N, 8, 8)
    rec = tok.decode(idx)             # -> float (N, 3, 32, 32) in [-1, 1]

Every quantizer arm of `genkit bench vq` uses the same encoder and decoder; only `quantizer` and its options
change (config: quantizer = "vq" | "fsq", estimator, simvq, cosine, kmeans_init, codebook_size, fsq_levels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .quantizers import FSQ, QuantizerOutput, VectorQuantizer

QUANTIZERS = ("vq", "fsq")


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                   nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.block(x)


def tokenizer_loss(x: torch.Tensor, rec: torch.Tensor, out: QuantizerOutput) -> tuple[torch.Tensor, dict]:
    """Training objective from a forward pass: |rec - x|^2 + the quantizer's codebook / commitment loss."""
    mse = F.mse_loss(rec, x)
    return mse + out.loss, {"mse": mse.detach(), "quant_error": out.quant_error, "indices": out.indices}


class VQTokenizer(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, image_size: int = 32, channels: tuple = (32, 64, 128), latent_dim: int = 32,
                 quantizer: str = "vq", codebook_size: int = 1024, estimator: str = "ste", simvq: bool = False,
                 cosine: bool = False, kmeans_init: bool = False, beta: float = 0.25,
                 fsq_levels: tuple | None = None, seed: int = 0):
        super().__init__()
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer={quantizer!r} is not allowed: one of {', '.join(QUANTIZERS)}")
        c0, c1, c2 = channels
        # encoder: 32 -> 16 -> 8, latent_dim channels at 8x8
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c0, 3, padding=1), ResBlock(c0),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1), ResBlock(c1),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), ResBlock(c2),
            nn.GroupNorm(8, c2), nn.SiLU(), nn.Conv2d(c2, latent_dim, 1))
        # decoder: the mirror image, nearest-neighbour upsampling
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_dim, c2, 3, padding=1), ResBlock(c2),
            nn.Upsample(scale_factor=2), nn.Conv2d(c2, c1, 3, padding=1), ResBlock(c1),
            nn.Upsample(scale_factor=2), nn.Conv2d(c1, c0, 3, padding=1), ResBlock(c0),
            nn.GroupNorm(8, c0), nn.SiLU(), nn.Conv2d(c0, 3, 3, padding=1))
        if quantizer == "fsq":
            if not fsq_levels:
                raise ValueError("quantizer='fsq' needs fsq_levels, e.g. [8, 5, 5, 5]")
            self.quant = FSQ(list(fsq_levels), latent_dim)
        else:
            self.quant = VectorQuantizer(latent_dim, codebook_size, estimator, simvq, cosine, kmeans_init,
                                             beta, seed)

    @property
    def codebook_size(self) -> int:
        return self.quant.codebook_size

    @property
    def grid_size(self) -> int:
        return self.config.image_size // 4

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float images (N, 3, S, S) -> float in [-1, 1] on the model's device."""
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (3, s, s):
            raise ValueError(f"images of shape {tuple(images.shape)} are not allowed: (N, 3, {s}, {s}) RGB")
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
        return x.to(self.device)

    def quantize(self, x: torch.Tensor) -> QuantizerOutput:
        return self.quant(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """float (N, 3, S, S) in [-1, 1] -> (reconstruction, quantizer output)."""
        out = self.quantize(x)
        return self.decoder(out.z_q), out

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Reconstruction MSE + the quantizer's loss; and the figures to log."""
        return tokenizer_loss(x, *self(x))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, S, S), uint8 or float in [-1, 1] -> code indices (N, S/4, S/4)."""
        return self.quantize(self._check_images(images)).indices

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (N, h, w) -> images (N, 3, 4h, 4w), float in [-1, 1]."""
        g = self.grid_size
        if indices.ndim != 3 or indices.shape[1:] != (g, g):
            raise ValueError(f"indices of shape {tuple(indices.shape)} are not allowed: (N, {g}, {g})")
        if indices.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"indices of dtype {indices.dtype} are not allowed: integer code ids")
        return self.decoder(self.quant.indices_to_codes(indices.long().to(self.device))).clamp(-1, 1)
