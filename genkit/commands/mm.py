"""`genkit draw` (text -> images) and `genkit caption` (images -> text) with a MultimodalARPipeline folder.

    genkit draw --model weights/openmoji-mm --prompt "red apple" --prompt "flag: Japan" --num 8 --out apples/
    genkit caption --model weights/openmoji-mm apples/ some.png

`draw` writes one PNG per image (`<prompt index>-<slug>-<k>.png`), grid.png (a row per prompt, labelled, 3x) and
manifest.json. Each prompt's images come from one generator seeded with --seed, so a prompt's images do not
depend on the other prompts; prompts whose files are all written are skipped (an interrupted job resumes).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from .. import __version__
from ..checks import LIMITS, bad, check_choice, check_new_file, check_text
from ..loading import load_mm_pipeline  # noqa: F401  (re-exported: the one loader)
from ..png_info import fingerprint
from .common import (atomic_write_json, ensure_writable_dir, labelled_grid, pick_device, remove_if_created,
                     save_png_atomic, weights_fingerprint)
from .sample import check_resume, sweep_temp_files


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a prompt: "flag: Japan" -> "flag-japan"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


# MultimodalARPipeline.__call__ argument -> genkit draw flag
FLAGS = {"num_images_per_prompt": "--num", "num_inference_steps": "--steps", "head_steps": "--head-steps",
         "solver": "--solver", "guidance_scale": "--guidance", "temperature": "--temperature",
         "negative_prompt": "--negative-prompt", "rerank": "--rerank"}


def flag_names(message: str) -> str:
    """'num_inference_steps=65 is not allowed ...' -> '--steps=65 is not allowed ...' (also 'name has ...')."""
    for name, flag in FLAGS.items():
        for sep in ("=", " "):
            if message.startswith(name + sep):
                return flag + message[len(name):]
    return message


def read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
    out = list(prompts)
    if prompts_file is not None:
        try:
            out += [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--prompts-file={prompts_file!r} is unreadable ({e}): a UTF-8 text file, "
                             f"one prompt per line") from None
    if not out:
        raise ValueError("genkit draw needs at least one --prompt TEXT (or --prompts-file FILE)")
    if len(out) > LIMITS["prompts"]:
        bad("--prompt", f"<{len(out)} prompts>", f"at most {LIMITS['prompts']} prompts per run")
    for p in out:
        check_text("--prompt", p)  # None-free, non-empty, valid UTF-8 (a non-UTF-8 argv byte is refused here)
    return out


def draw_parameters(args, model_hash: str, prompt: str, k: int) -> str:
    """The PNG `parameters` text of image k of a prompt (genkit/png_info.py): one generator seeded with --seed
    draws all --num images of a prompt, so image k needs Seed, Images and Index to be drawn again."""
    from genkit.png_info import draw_settings, format_parameters

    return format_parameters(prompt, draw_settings(
        steps=args.steps, head_steps=args.head_steps, solver=args.solver, guidance=args.guidance,
        temperature=args.temperature, rerank=args.rerank, seed=args.seed, images=args.num, index=k,
        model_hash=model_hash, model=Path(args.model).name), args.negative_prompt)


def run_draw(args) -> None:
    from genkit.sampling import solver_names
    from pipelines.multimodal import MAX_CANDIDATES, MAX_IMAGES_PER_PROMPT

    prompts = read_prompts(args.prompt, args.prompts_file)  # checks that need no model: before the load
    check_choice("--solver", args.solver, solver_names(predictor=False))  # as the pipeline allows
    if args.num > MAX_IMAGES_PER_PROMPT:
        bad("--num", args.num, f"an int in [1, {MAX_IMAGES_PER_PROMPT}]")
    if args.num * args.rerank > MAX_CANDIDATES:
        bad("--rerank", args.rerank, f"an int in [1, {MAX_CANDIDATES // args.num}] (--num x --rerank <= "
                                     f"{MAX_CANDIDATES})")
    with remove_if_created(args.out):
        _draw(args, prompts)


def _draw(args, prompts) -> None:
    from genkit.mm import encode_text

    device = pick_device(args.device)
    out = ensure_writable_dir(args.out)
    pipe = load_mm_pipeline(args.model, device)
    for p in prompts:  # all prompts checked before any work (the other flags by the pipeline's first call)
        encode_text(p, pipe.model.config.max_text_bytes, "--prompt")
    if args.negative_prompt and args.negative_prompt.strip():
        encode_text(args.negative_prompt, pipe.model.config.max_text_bytes, "--negative-prompt")
    names = [[out / f"{i:03d}-{slug(p)}-{k}.png" for k in range(args.num)] for i, p in enumerate(prompts)]
    settings = {"model_sha256": weights_fingerprint(args.model), "prompts": prompts, "num_per_prompt": args.num,
                "seed": args.seed, "steps": args.steps, "head_steps": args.head_steps, "solver": args.solver,
                "guidance": args.guidance, "negative_prompt": args.negative_prompt, "rerank": args.rerank,
                "temperature": args.temperature}
    check_resume(out, settings, args.restart, [f for row in names for f in row if f.exists()])
    sweep_temp_files(out)
    manifest = {"model": str(Path(args.model)), **settings, "files": [[f.name for f in row] for row in names],
                "complete": False}
    atomic_write_json(out / "manifest.json", manifest)  # first: a killed run's images are described
    model_hash = fingerprint(pipe.model)
    t0 = time.time()
    for p, files in zip(tqdm(prompts, desc="drawing", unit="prompt"), names):
        if all(f.exists() for f in files):
            continue  # resume
        try:
            images = pipe(p, num_images_per_prompt=args.num, num_inference_steps=args.steps,
                          head_steps=args.head_steps, solver=args.solver, guidance_scale=args.guidance,
                          temperature=args.temperature, negative_prompt=args.negative_prompt, rerank=args.rerank,
                          generator=torch.Generator().manual_seed(args.seed)).images
        except ValueError as e:  # the pipeline's check, under the CLI's flag name
            raise ValueError(flag_names(str(e))) from None
        for k, (im, f) in enumerate(zip(images, files)):
            save_png_atomic(im, f, draw_parameters(args, model_hash, p, k))
    rows = [[Image.open(f).convert("RGB") for f in row] for row in names]
    save_png_atomic(labelled_grid(rows, prompts), out / "grid.png")
    atomic_write_json(out / "manifest.json", {
        **manifest, "complete": True,
        "wall_time_s": round(time.time() - t0, 3), "device": str(device), "torch": torch.__version__,
        "genkit": __version__})
    print(f"wrote {len(prompts) * args.num} images, grid.png and manifest.json to {out}")


def image_files(paths: list[str]) -> list[Path]:
    from genkit.data.folder import EXTENSIONS

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file()
                            and f.name != "grid.png")
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"image {str(p)!r} does not exist: give image files or folders of them")
    if not files:
        raise ValueError(f"images {paths!r} hold no image files: allowed types {sorted(EXTENSIONS)}")
    return files


def run_caption(args) -> None:
    import numpy as np

    from genkit.data.folder import load_image_file

    if args.out:
        check_new_file("--out", args.out)  # before the captions are computed, not after
    files = image_files(args.images)
    pipe = load_mm_pipeline(args.model, pick_device(args.device))
    arrays = [load_image_file(f, pipe.model.config.image_size) for f in files]   # on white, cropped, resized
    rows = []
    for i in range(0, len(files), args.batch_size):
        captions = pipe.caption(np.stack(arrays[i:i + args.batch_size]), max_new_tokens=args.max_new_tokens)
        for f, c in zip(files[i:i + args.batch_size], captions):
            rows.append({"image": str(f), "caption": c})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    if args.out:
        atomic_write_json(Path(args.out), rows)
