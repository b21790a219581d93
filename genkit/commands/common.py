"""Shared pieces of the commands: device choice, model loading with clear errors, atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device={name!r} is not allowed: cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device={name!r} is not available: no CUDA device here (use cpu)")
    return device


def load_pipeline(model: str, device="cpu", dtype=None):
    """PixelDiffusionPipeline.from_pretrained(model) offline, with a ValueError for a missing/corrupt folder."""
    from diffusers.utils import logging as diffusers_logging

    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components": noise on a CLI's stderr
    path = Path(model)
    if not (path / "model_index.json").is_file():
        raise ValueError(f"--model={model!r} is not a pipeline folder: it needs model_index.json, unet/ "
                         f"and scheduler/ (e.g. weights/openmoji-32)")
    try:
        pipe = PixelDiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # safetensors / json / config errors: the folder is damaged
        raise ValueError(f"--model={model!r} could not be loaded ({type(e).__name__}: {e}); "
                         f"the folder is incomplete or corrupt") from e
    pipe = pipe.to(device)
    if dtype is not None:
        pipe.unet.to(dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ensure_writable_dir(path: str, name: str = "out") -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=p, prefix=".probe-", delete=True)
        probe.close()
    except OSError as e:
        raise ValueError(f"--{name}={path!r} is not a writable folder ({e.strerror})") from None
    return p


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def save_png_atomic(image, path: Path) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def image_grid(images, cols: int | None = None):
    """PIL images of one size -> one grid image (cols x rows)."""
    from PIL import Image

    n = len(images)
    cols = cols or max(1, int(round(n ** 0.5)))
    rows = (n + cols - 1) // cols
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid
