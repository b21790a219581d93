"""The one model loader that the CLI (genkit/commands) and the app (genkit/ui, app.py) share: device choice and
offline from_pretrained with a ValueError that names the folder and says what is wrong with it."""

from __future__ import annotations

import json
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


def pipeline_class(path: Path) -> str | None:
    """The _class_name in a pipeline folder's model_index.json (None if unreadable: loading then says why)."""
    try:
        return json.loads((Path(path) / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


def load_folder(cls, model: str, contents: str, example: str):
    """cls.from_pretrained(model) offline (a diffusers pipeline class), with a ValueError for a missing or corrupt
    folder, or for a multimodal folder given where a diffusion one is wanted and vice versa."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components": noise on a CLI's stderr
    path = Path(model)
    if not (path / "model_index.json").is_file():
        raise ValueError(f"--model={model!r} is not a pipeline folder: it needs model_index.json, {contents} "
                         f"(e.g. {example})")
    kind = pipeline_class(path)
    multimodal = kind == "MultimodalARPipeline"
    if kind is not None and multimodal != (cls.__name__ == "MultimodalARPipeline"):
        raise ValueError(f"--model={model!r} holds a {kind}: " + (
            "draw with it by `genkit draw`, caption with `genkit caption`" if multimodal else
            "a diffusion model, for genkit sample / eval (genkit draw and caption need a MultimodalARPipeline)"))
    try:
        return cls.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # safetensors / json / config errors: the folder is damaged
        raise ValueError(f"--model={model!r} could not be loaded ({type(e).__name__}: {e}); "
                         f"the folder is incomplete or corrupt") from e


def load_pipeline(model: str, device="cpu", dtype=None, attention: str = "auto"):
    """PixelDiffusionPipeline.from_pretrained(model) offline, with a ValueError for a missing/corrupt folder.
    attention="auto": xformers' memory-efficient attention on CUDA when xformers is importable (the [gpu] extra),
    else PyTorch SDPA (diffusers' default processor); "sdpa" always SDPA."""
    from pipelines.one_step import OneStepPipeline
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    if attention not in ("auto", "sdpa"):
        raise ValueError(f"attention={attention!r} is not allowed: one of auto, sdpa")
    # a one-step generator's folder (SiD) loads as its own class: one network evaluation, no solver
    cls = OneStepPipeline if pipeline_class(Path(model)) == "OneStepPipeline" else PixelDiffusionPipeline
    pipe = load_folder(cls, model, "unet/ and scheduler/", "weights/openmoji-32").to(device)
    if dtype is not None:
        pipe.unet.to(dtype)
    if attention == "auto" and torch.device(device).type == "cuda" and xformers_available():
        pipe.unet.enable_xformers_memory_efficient_attention()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def xformers_available() -> bool:
    try:
        import xformers  # noqa: F401,F811
    except ImportError:
        return False
    return True


def load_mm_pipeline(model: str, device):
    """MultimodalARPipeline.from_pretrained(model) offline, with a ValueError for a missing/corrupt folder."""
    from pipelines.multimodal import MultimodalARPipeline

    pipe = load_folder(MultimodalARPipeline, model, "model/", "weights/openmoji-mm")
    pipe.model.eval()
    return pipe.to(device)


def load_tokenizer(model: str):
    """VQTokenizer.from_pretrained(model) offline, in eval mode."""
    from genkit.vq import VQTokenizer

    return VQTokenizer.from_pretrained(model, local_files_only=True).eval()
