"""A user's own images: every readable image file under a folder, resized and center-cropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img.resize((size, size), Image.Resampling.BICUBIC if s < size else Image.Resampling.BOX)


def on_white(img: Image.Image) -> Image.Image:
    """Any PIL image -> RGB, transparent parts composited on white (as OpenMoji is rendered)."""
    img = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")


def square_rgb(img: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> uint8 (size, size, 3): on white, center-cropped and resized (what a 32 px model reads)."""
    return np.asarray(center_crop_resize(on_white(img), size), dtype=np.uint8)


def read_image(path: str | Path, convert) -> np.ndarray:
    """convert(PIL image) of an image file, or a ValueError naming the file: unreadable, or a decompression bomb
    (more than PIL's Image.MAX_IMAGE_PIXELS pixels: refused before its pixels are decoded)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit: refuse, not warn
            with Image.open(path) as img:
                return convert(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"image file {str(path)!r} is not allowed: at most Image.MAX_IMAGE_PIXELS="
                         f"{Image.MAX_IMAGE_PIXELS} pixels ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"image file {str(path)!r} is unreadable ({e}): remove it or replace it") from None


def load_image_file(path: str | Path, size: int) -> np.ndarray:
    """square_rgb of an image file; a ValueError naming the file if it is not a readable image."""
    return read_image(path, lambda img: square_rgb(img, size))


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images under `root` (recursively) as (3, size, size) tensors in [-1, 1], label 0.

    Transparent images are composited on white (as OpenMoji is). Raises ValueError for a missing or
    empty folder and for a file that is not a readable image.
    """

    def __init__(self, root: str | Path, size: int = 32):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"data_dir={str(root)!r} is not a folder: give a folder of image files")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not self.files:
            raise ValueError(f"data_dir={str(root)!r} holds no images: allowed types {sorted(EXTENSIONS)}")
        self.root, self.size = root, size

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> np.ndarray:
        return load_image_file(self.files[i], self.size)

    def __getitem__(self, i):
        x = torch.from_numpy(self.load(i)).permute(2, 0, 1).float().div(127.5).sub(1)
        return x, 0

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([self[i][0] for i in range(len(self))])
        return x, torch.zeros(len(self), dtype=torch.long)


def read_images_as_is(root: str | Path, exclude: tuple[str, ...] = ("grid.png",), name: str = "samples"):
    """Every image under `root` at its own size, as uint8 (N, 3, S, S), for evaluation: nothing is resized, so
    all images must be square and of one size. `exclude` names files to skip (genkit sample's grid.png).
    Transparent images are composited on white. ValueError for a missing or empty folder, an unreadable file
    or mixed sizes, naming the parameter `name`."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--{name}={str(root)!r} is not a folder: give a folder of image files")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                   and p.name not in exclude)
    if not files:
        raise ValueError(f"--{name}={str(root)!r} holds no images: allowed types {sorted(EXTENSIONS)}")
    arrays, size = [], None
    for path in files:
        a = read_image(path, lambda img: np.asarray(on_white(img), dtype=np.uint8))
        if a.shape[0] != a.shape[1] or (size is not None and a.shape[0] != size):
            raise ValueError(f"--{name}={str(root)!r} mixes image sizes: {path.name} is {a.shape[1]}x{a.shape[0]}, "
                             f"expected {size or a.shape[1]}x{size or a.shape[1]} like {files[0].name} (square, "
                             "one size; nothing is resized for evaluation)")
        size = a.shape[0]
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
