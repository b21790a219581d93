"""The PNG `parameters` text chunk (AUTOMATIC1111's convention): how an image was made, readable by people and tools.

    red apple                                                   <- line 1: the class name or the prompt
    Negative prompt: green apple                                <- optional
    Steps: 20, Sampler: dpmpp_2m, Schedule type: polynomial, CFG scale: 2.0, Seed: 5, Size: 32x32, ...  <- last line:
        ... Model hash: 3f2a9c01b7e4, Model: openmoji-32, Batch size: 4, Batch pos: 1, Version: genkit 0.1.0

A value holding ',', ':' or '"' is written as a JSON string (as A1111 does), so parse(format(...)) round-trips.
The app writes this chunk on every image it shows, `genkit sample` / `genkit draw` on every PNG they save; the
app's PNG-info panel reads it back into the form, and the same settings on the same machine give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re

PARAMETERS = "parameters"  # the tEXt key A1111, ComfyUI importers and exiftool look for
NEGATIVE = "Negative prompt: "
# key: value pairs; a value is a JSON string or runs to the next comma (A1111's re_param)
_PAIR = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _value(v) -> str:
    s = str(v)
    return json.dumps(s) if any(c in s for c in ',:"') else s


def format_parameters(prompt: str, settings: dict, negative_prompt: str | None = None) -> str:
    """(prompt or class, {"Steps": 20, ...}, negative) -> the chunk's text. None values are left out."""
    lines = [prompt.replace("\n", " ")]
    if negative_prompt:
        lines.append(NEGATIVE + negative_prompt.replace("\n", " "))
    lines.append(", ".join(f"{k}: {_value(v)}" for k, v in settings.items() if v is not None))
    return "\n".join(lines)


def parse_parameters(text: str) -> tuple[str, str | None, dict[str, str]]:
    """The chunk's text -> (prompt, negative prompt or None, {key: value string}); values stay strings."""
    lines = text.strip().split("\n")
    if len(lines) < 2 or not _PAIR.match(lines[-1]):
        raise ValueError(f"parameters={text[:80]!r} is not allowed: a first line, then 'Key: value, ...' pairs "
                         "(A1111's convention)")
    settings = {}
    for key, value in _PAIR.findall(lines[-1]):
        value = value.strip()
        settings[key.strip()] = json.loads(value) if value.startswith('"') else value
    negative = None
    middle = lines[1:-1]
    if middle and middle[0].startswith(NEGATIVE):
        negative = middle[0][len(NEGATIVE):]
        middle = middle[1:]
    return "\n".join([lines[0], *middle]), negative, settings


def png_bytes(image, parameters: str | None = None) -> bytes:
    """A PIL image -> PNG bytes with the `parameters` chunk (deterministic: same pixels + text, same bytes)."""
    from PIL.PngImagePlugin import PngInfo

    info = None
    if parameters is not None:
        info = PngInfo()
        info.add_text(PARAMETERS, parameters)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_parameters(image) -> str | None:
    """The `parameters` text of a PNG (a path, bytes or an open PIL image), None if it has none."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.info.get(PARAMETERS)
    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
        return im.info.get(PARAMETERS)


def fingerprint(module) -> str:
    """sha256 (12 hex) of a torch module's parameters and buffers, in state_dict order: which weights made the
    image, whether they came from a folder or were built in memory (the same as A1111's "Model hash" idea)."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def diffusion_settings(*, steps: int, solver: str, grid: str | None, guidance: float, seed: int, size: int,
                       model_hash: str, model: str, **options) -> dict:
    """The settings line of a diffusion image, in one key order for the app and `genkit sample`; `options` are
    method options (e.g. "Skip tuning": 0.9), written after the common keys."""
    from . import __version__

    return {"Steps": steps, "Sampler": solver, "Schedule type": grid, "CFG scale": guidance, "Seed": seed,
            "Size": f"{size}x{size}", "Model hash": model_hash, "Model": model, **options,
            "Version": f"genkit {__version__}"}


def draw_settings(*, steps: int, head_steps: int, solver: str, guidance: float, temperature: float, rerank: int,
                  seed: int, images: int, index: int, model_hash: str, model: str) -> dict:
    """The settings line of a multimodal image (`genkit draw`, the app's Text and image tab): one generator seeded
    with Seed draws all Images images of a prompt at once, so image Index needs all three to be drawn again."""
    from . import __version__

    return {"Steps": steps, "Head steps": head_steps, "Sampler": solver, "CFG scale": guidance,
            "Temperature": temperature, "Rerank": rerank, "Seed": seed, "Images": images, "Index": index,
            "Model hash": model_hash, "Model": model, "Version": f"genkit {__version__}"}
