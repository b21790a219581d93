"""Feature networks for Frechet distances. Both take uint8 images (N, 3, H, W) and return (N, d) float features,
which is the contract of torchmetrics' FrechetInceptionDistance(feature=module).

- OpenMojiFeatureNet: a small CNN classifier of OpenMoji subgroups (training/train_features.py, shipped in
  weights/openmoji-features). Its penultimate layer defines FD-OpenMoji. Every input is resized to 64x64
  first (as Inception resizes to 299), so 32 px and 64 px images share one feature space; the network was
  trained on both.
- InceptionFeatures: the standard 2048-d pool3 features of FID, through torchmetrics + torch-fidelity. Needs
  torchvision and a local weights file; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

FEATURE_KINDS = ("openmoji", "inception")
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"   # torch-fidelity's / torchmetrics' file name
INCEPTION_ENV = "GENKIT_INCEPTION_WEIGHTS"


def to_unit_range(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1] at size x size (bilinear; antialiased when shrinking)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images of dtype {images.dtype} and shape {tuple(images.shape)} are not allowed: "
                         "uint8 (N, 3, H, W)")
    x = images.float() / 127.5 - 1
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    return x


class _Block(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual connection."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class OpenMojiFeatureNet(ModelMixin, ConfigMixin):
    """ResNet-style classifier: 64x64 -> stride-2 stem -> blocks at 32, 16, 8, 4 px -> global average pool ->
    feature_dim (the FD features) -> num_classes logits. The stem sees every input pixel, so 64 px detail counts.

    forward(images) takes uint8 (N, 3, H, W) and returns the features, so the module plugs into torchmetrics;
    logits(x) takes float images in [-1, 1] at input_size for training and class accuracy.
    """

    @register_to_config
    def __init__(self, num_classes: int = 98, channels: tuple = (32, 64, 128, 256), feature_dim: int = 128,
                 input_size: int = 64, class_names: list | None = None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 4, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(channels[0]), nn.ReLU())       # 64 -> 32
        stages, cin = [], channels[0]
        for i, c in enumerate(channels):
            stages += [nn.MaxPool2d(2)] if i else []                  # 32 -> 16 -> 8 -> 4
            stages += [_Block(cin, c)]
            cin = c
        self.stages = nn.Sequential(*stages)
        self.embed = nn.Linear(cin, feature_dim)                      # the FD features (after ReLU)
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def num_features(self) -> int:  # read by torchmetrics
        return self.config.feature_dim

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, 3, S, S) in [-1, 1] -> (N, feature_dim)."""
        h = self.stages(self.stem(x)).mean(dim=(2, 3))
        return F.relu(self.embed(h))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_unit_range(images, self.config.input_size).to(self.device, self.dtype)
        return self.embedding(x).float()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> predicted class ids (N,)."""
        x = to_unit_range(images, self.config.input_size).to(self.device, self.dtype)
        return self.logits(x).argmax(dim=1)


def weights_fingerprint(path: str | Path) -> str:
    """First 12 hex digits of the sha256 of a weights file: names the feature space in reference stats."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def load_openmoji_features(model_dir: str | Path) -> tuple[OpenMojiFeatureNet, str]:
    """The shipped classifier in eval mode, and its feature id 'openmoji:<fingerprint>'."""
    model_dir = Path(model_dir)
    weights = model_dir / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"features={str(model_dir)!r} is not a feature-network folder: it needs config.json "
                         f"and diffusion_pytorch_model.safetensors (e.g. weights/openmoji-features)")
    net = OpenMojiFeatureNet.from_pretrained(str(model_dir), local_files_only=True).eval()
    return net, f"openmoji:{weights_fingerprint(weights)}"


def load_inception(weights_path: str | None = None) -> tuple[nn.Module, str]:
    """torchmetrics' InceptionV3 (2048-d pool3, TF-compatible bilinear resize: antialias=False, as published
    FIDs are computed) from a local weights file. Raises ValueError saying what is missing."""
    weights_path = weights_path or os.environ.get(INCEPTION_ENV)
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        import torch_fidelity  # noqa: F401  (imports torchvision)
    except (ImportError, ModuleNotFoundError) as e:
        raise ValueError(f"features='inception' needs torch-fidelity and torchvision ({e}): "
                         "pip install torch-fidelity torchvision, or use features='openmoji'") from None
    if not weights_path or not Path(weights_path).is_file():
        raise ValueError(f"features='inception' needs the local weights file {INCEPTION_FILE} "
                         f"(got {weights_path!r}): pass --inception-weights PATH or set ${INCEPTION_ENV}; "
                         "nothing is downloaded")
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                             feature_extractor_weights_path=str(weights_path), antialias=False)
    net.num_features = 2048
    return net, f"inception:{weights_fingerprint(weights_path)}"
