"""Frechet distance between image sets, through torchmetrics' FrechetInceptionDistance with a pluggable
feature network, and reference statistics saved as .npz (mu, sigma, n and the feature id).

    fd = FrechetDistance(net, feature_id)          # net: uint8 (N, 3, H, W) -> (N, d)
    fd.set_reference(ReferenceStats.load("weights/openmoji-features/refs/openmoji-train-32.npz"))
    fd.update(images)                              # generated images, uint8, any number of calls
    fd.compute()                                   # -> float

The metric keeps running sums (sum f, sum f f^T, n) in float64, which torchmetrics adds up across processes
when compute() runs under torch.distributed: each process updates with its own images, and the reference
enters the sums once (on process 0), so the result equals a one-process run on all images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from ..io import atomic_path

MIN_IMAGES = 2


@dataclass
class ReferenceStats:
    """Gaussian statistics of one image set in one feature space.

    mu (d,), sigma (d, d) float64; n images; features: id of the feature network ('openmoji:<sha>' ...);
    resolution: image side the set was measured at; source: what the images were.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: str
    resolution: int
    source: str = ""

    @classmethod
    def from_features(cls, feats: torch.Tensor, features: str, resolution: int, source: str = ""):
        f = feats.double().cpu().numpy()
        if len(f) < MIN_IMAGES:
            raise ValueError(f"{len(f)} images are too few for statistics: at least {MIN_IMAGES}")
        return cls(f.mean(0), np.cov(f, rowvar=False), len(f), features, resolution, source)

    def check(self, feature_id: str, resolution: int | None = None) -> None:
        """Raise unless these stats were built with this feature network (and, if given, at this resolution)."""
        if self.features != feature_id:
            raise ValueError(f"ref was built with features {self.features!r}, not {feature_id!r}: rebuild it "
                             "with `genkit eval ref` and the same --features")
        if resolution is not None and self.resolution and self.resolution != resolution:
            raise ValueError(f"ref is at {self.resolution} px but the images are {resolution} px: "
                             f"use a {resolution} px reference")

    def save(self, path: str | Path) -> None:
        """Atomic: a temp file in the same folder, then a rename."""
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, mu=self.mu, sigma=self.sigma, n=self.n,
                     meta=json.dumps({"features": self.features, "resolution": self.resolution,
                                      "source": self.source}))

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceStats":
        path = Path(path)
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
                return cls(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), int(z["n"]) if "n" in z.files
                           else 0, meta.get("features", "unknown"), int(meta.get("resolution", 0)),
                           meta.get("source", ""))
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"ref={str(path)!r} is not a reference-statistics .npz with mu and sigma ({e})") from None


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), by torchmetrics' own formula (eigenvalues of S1 S2)."""
    from torchmetrics.image.fid import _compute_fid

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    return float(_compute_fid(t(mu1), t(sigma1), t(mu2), t(sigma2)))


class FrechetDistance:
    """FD of generated images against a reference, over torchmetrics' FrechetInceptionDistance."""

    def __init__(self, net: torch.nn.Module, feature_id: str, resolution: int | None = None):
        self.feature_id, self.resolution = feature_id, resolution
        self.metric = FrechetInceptionDistance(feature=net, reset_real_features=False, normalize=False)
        self.metric.to(next(net.parameters()).device)
        self.reference: ReferenceStats | None = None

    def set_reference(self, ref: ReferenceStats) -> None:
        """Load mu, sigma, n into the metric's real-image sums (on process 0 only, see the module doc)."""
        ref.check(self.feature_id, self.resolution)
        self.reference = ref
        m, dev = self.metric, self.metric.real_features_sum.device
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
                or torch.distributed.get_rank() == 0:
            mu, sigma, n = torch.from_numpy(ref.mu), torch.from_numpy(ref.sigma), ref.n
            m.real_features_sum = (n * mu).to(dev)                            # sum f
            m.real_features_cov_sum = ((n - 1) * sigma + n * torch.outer(mu, mu)).to(dev)  # sum f f^T
            m.real_features_num_samples = torch.tensor(n, device=dev)

    def update(self, images: torch.Tensor) -> None:
        """Generated images, uint8 (N, 3, H, W)."""
        if self.resolution is not None and images.shape[-1] != self.resolution:
            raise ValueError(f"images of {images.shape[-1]} px are not allowed here: this FD is at "
                             f"{self.resolution} px")
        with torch.no_grad():
            self.metric.update(images.to(self.metric.real_features_sum.device), real=False)

    @property
    def num_images(self) -> int:
        return int(self.metric.fake_features_num_samples)

    def compute(self) -> float:
        if self.reference is None:
            raise ValueError("FrechetDistance has no reference: call set_reference first")
        n = self.num_images
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([n], device=self.metric.real_features_sum.device)
            torch.distributed.all_reduce(t)
            n = int(t)
        if n < MIN_IMAGES:
            raise ValueError(f"{n} images are too few for a Frechet distance: at least {MIN_IMAGES}")
        return max(0.0, float(self.metric.compute()))  # exact sets give ~ -1e-12

    def reset(self) -> None:
        """Forget the generated images, keep the reference."""
        self.metric.reset()
