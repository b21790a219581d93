"""`genkit sample`: seeds K..K+N-1 -> one PNG per seed, grid.png and manifest.json.

Resume: manifest.json is written first, with the settings that decide an image (model weights, steps, solver,
grid, class, guidance, batch invariance); a rerun into the same --out skips the PNGs already there only when
those settings match, and otherwise refuses, naming what differs (--restart deletes the old images first).
Seeds are streamed batch by batch: memory does not grow with --num.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from .. import __version__
from .resolution import resolution_fields, size_ug_kwargs
from ..checks import bad, check_choice
from .common import (atomic_write_json, class_ids_for, default_steps, ensure_writable_dir, generate, image_grid,
                     is_one_step, load_pipeline, pick_device, process_state, remove_if_created, resolve_conditioning,
                     save_png_atomic, weights_fingerprint)

GRID_MAX = 64                       # grid.png shows the first 64 images (a grid of 100,000 would not help anyone)
PNG_NAME = re.compile(r"^\d{6,}\.png$")
TMP_NAME = re.compile(r"^\..+\.tmp(\.\w+)?$")   # genkit.io.atomic_path's temp files, left by a killed run


def resolve_solver(pipe, args, guidance: float) -> tuple[str, str | None, int]:
    """--solver / --grid with the CLI's flag names -> (solver, grid, NFE per image with CFG counted): what a run
    really samples with, as manifests and PNG parameters record it and the pipeline is called. A learned solver's
    weights (--amed-predictor, else found in --model as the pipeline finds them) are loaded once: their AFS decides
    the NFE (one evaluation saved where they use it) and, with no --grid, their learned grid is the grid (else the
    model's). A one-step generator: ("one_step", None, 1)."""
    from genkit.sampling import nfe, solver_entry
    from genkit.sampling.amed import find_predictor, load_predictor, run_grid

    solver, grid = args.solver, args.grid
    if is_one_step(pipe):
        if solver not in (None, "one_step") or grid is not None:
            flag, value = ("--solver", solver) if solver not in (None, "one_step") else ("--grid", grid)
            raise ValueError(f"{flag}={value!r} is not allowed: a one-step generator has no solver or grid "
                             "(leave it out)")
        return "one_step", None, 1
    check_early(solver, grid)
    solver = solver or pipe.scheduler.config.get("solver", "dpmpp_2m")
    pred = None
    if solver_entry(solver).needs_predictor:
        path = getattr(args, "amed_predictor", None) or find_predictor(args.model, solver, args.steps, guidance, grid)
        pred = load_predictor(path, "--amed-predictor")
    cfg_factor = 2 if guidance != 1.0 else 1
    return (solver, run_grid(pred, grid, pipe.scheduler.config.get("grid")),
            nfe(solver, args.steps, pred.config.afs if pred is not None else None) * cfg_factor)


def method_kwargs(args) -> dict:
    """--amed-predictor / --skip-tuning / --skip-sigma-range -> pipeline keyword arguments."""
    from genkit.checks import check_float

    kw = {}
    if getattr(args, "amed_predictor", None):
        kw["amed_predictor"] = args.amed_predictor
    skip = getattr(args, "skip_tuning", None)
    if skip is not None:
        kw["skip_tuning"] = True if skip == "best" else _float_flag("--skip-tuning", skip)
    rng = getattr(args, "skip_sigma_range", None)
    if rng:
        parts = rng.split(",")
        if len(parts) != 2:
            raise ValueError(f"--skip-sigma-range={rng!r} is not allowed: LO,HI (EDM sigmas, e.g. 0.5,10)")
        kw["skip_sigma_range"] = tuple(check_float("--skip-sigma-range", _float_flag("--skip-sigma-range", p), 0)
                                       for p in parts)
    interval = guidance_interval(getattr(args, "guidance_sigma_range", None))
    if interval is not None:
        kw["guidance_sigma_range"] = interval
    return kw


def guidance_interval(text: str | None) -> tuple[float, float] | None:
    """--guidance-sigma-range LO,HI -> (lo, hi) (hi may be inf; the pipeline checks lo < hi), or None."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--guidance-sigma-range={text!r} is not allowed: LO,HI (EDM sigmas, e.g. 0,1 or 0.3,inf)")
    lo, hi = (_float_flag("--guidance-sigma-range", p) for p in parts)
    if not (0 <= lo < hi):   # NaN fails this too
        raise ValueError(f"--guidance-sigma-range={text!r} is not allowed: LO,HI with 0 <= LO < HI")
    return lo, hi


def _float_flag(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not allowed: a number (or 'best' for --skip-tuning)") from None


def check_early(solver: str | None, grid: str | None) -> None:
    """The checks that need no model, so that a typo fails in a second, not after a 15 s load."""
    from genkit.sampling import GRIDS, solver_entry, solver_names
    from genkit.sampling.grids import LEARNED

    if solver is not None:
        check_choice("--solver", solver, solver_names())
    if grid is not None:
        check_choice("--grid", grid, (*GRIDS, LEARNED))
        if grid == LEARNED and (solver is None or not solver_entry(solver).needs_predictor):
            bad("--grid", grid, f"one of {', '.join(GRIDS)} with --solver={solver}: a learned grid belongs to an "
                "AMED predictor (--solver amed-...)")


def check_batch_size(batch_size: int) -> None:
    from pipelines.pixel_diffusion import MAX_BATCH_SIZE

    if batch_size > MAX_BATCH_SIZE:
        bad("--batch-size", batch_size, f"an int in [1, {MAX_BATCH_SIZE}]")


def my_batches(first: int, num: int, batch_size: int, rank: int, world: int):
    """This process's batches of the seeds first..first+num-1: blocks [first + k B, first + (k + 1) B), k = rank,
    rank + world, ... Aligned to the run's first seed, a batch holds the same seeds whatever the process count
    and on every resume, so batched images are the same bytes too (a batch's last bits depend on its
    neighbours). Streamed: a range per batch, never a list of all seeds."""
    end = first + num
    for start in range(first + rank * batch_size, end, world * batch_size):
        yield range(start, min(start + batch_size, end))


def sweep_temp_files(out: Path) -> int:
    """Remove the .NAME.XXXX.tmp files a killed run left (only the main process, before any work)."""
    stale = [p for p in out.iterdir() if p.is_file() and TMP_NAME.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def check_resume(out: Path, settings: dict, restart: bool, ours: list[Path] | None = None) -> None:
    """Refuse to mix images made with other settings into --out (or, with restart, delete them first).

    ours: this command's image files already in out (default: genkit sample's NNNNNN.png); their settings are
    read from out/manifest.json, which the commands write before any image."""
    import json

    ours = [p for p in out.iterdir() if PNG_NAME.match(p.name)] if ours is None else ours
    manifest = out / "manifest.json"
    if restart:
        for p in ours + [out / "grid.png", manifest]:
            p.unlink(missing_ok=True)
        return
    if not ours:
        return
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise ValueError(f"--out={str(out)!r} holds {len(ours)} images (such as {ours[0].name}) but no "
                         "readable manifest.json, so whether they match these settings is unknown: use --restart "
                         "to delete them, or another --out") from None
    differ = [f"{k} {old.get(k)!r} (now {v!r})" for k, v in settings.items() if old.get(k) != v]
    if differ:
        raise ValueError(f"--out={str(out)!r} holds {len(ours)} images made with other settings: "
                         f"{'; '.join(differ)}. Use --restart to delete them and start over, or another --out")


def png_parameters(pipe, args, cls: str, solver: str, size_kw: dict | None = None):
    """seed -> the PNG `parameters` text of that seed's image (genkit/png_info.py; the app reads it back)."""
    from genkit.png_info import diffusion_settings, fingerprint, format_parameters

    names = pipe.config.class_names or [str(i) for i in range(pipe.num_classes)]
    common = dict(steps=args.steps, solver=solver, grid=args.grid,
                  guidance=args.guidance, size=(size_kw or {}).get("height", pipe.trained_size),
                  model_hash=fingerprint(pipe.unet), model=Path(args.model).name)
    interval = guidance_interval(getattr(args, "guidance_sigma_range", None))
    if interval is not None and args.guidance != 1.0:
        common["Guidance interval"] = f"{interval[0]:g}-{interval[1]:g}"
    if (size_kw or {}).get("upsample_guidance_scale"):
        lo, hi = size_kw["upsample_guidance_window"]
        common.update({"Upsample guidance": size_kw["upsample_guidance_scale"], "UG window": f"{lo:g}-{hi:g}"})
    # batch-invariant images regenerate alone (the app's PNG info sets batch size 1); others need their batch
    invariant = {"Batch invariant": True} if getattr(args, "batch_invariant", False) else {}
    first, size = args.seed, args.batch_size

    def batch_of(seed: int) -> dict:  # batched: the aligned batch (sample.my_batches) that drew this seed
        if invariant:
            return {}
        start = first + (seed - first) // size * size
        return {"Batch size": min(size, first + args.num - start), "Batch pos": seed - start}

    def text(seed: int) -> str:
        ids = class_ids_for(pipe, cls, [seed])
        return format_parameters("(unconditional)" if ids is None else names[ids[0]],
                                 diffusion_settings(seed=seed, **common, **invariant, **batch_of(seed)))

    return text


def run_sample(args) -> None:
    check_early(args.solver, args.grid)  # before the folder is made and the model loaded
    check_batch_size(args.batch_size)
    with process_state() as state, remove_if_created(args.out, state.is_main_process):
        _sample(args, state)


def _sample(args, state) -> None:
    from pipelines.pixel_diffusion import to_uint8

    device = pick_device(args.device) if state.num_processes == 1 else state.device
    out = ensure_writable_dir(args.out)
    pipe = load_pipeline(args.model, device)
    args.steps = default_steps(pipe, args.steps)
    cls, args.guidance = resolve_conditioning(pipe, args.class_label, args.guidance)
    solver, args.grid, nfe = resolve_solver(pipe, args, args.guidance)
    invariant = args.batch_invariant
    # what decides an image besides its seed: a resume must match these (a rerun may change --num, --seed,
    # --device, and --batch-size when batch-invariant)
    settings = {"model_sha256": weights_fingerprint(args.model), "steps": args.steps, "solver": solver,
                "grid": args.grid, "class": cls, "guidance": args.guidance,
                "batch_invariant": invariant, **{k: str(v) for k, v in method_kwargs(args).items()}}
    if not invariant:  # then the batch size decides the last bits of an image too
        settings["batch_size"] = args.batch_size
    size_kw = size_ug_kwargs(pipe, args)
    info = {"nfe_low_res": 0}
    settings.update({k: v for k, v in resolution_fields(pipe, args, size_kw, info).items()
                     if k != "nfe_low_res_per_image"})  # --size / --ug decide the images too (only when given)
    manifest = {"model": str(Path(args.model)), "num": args.num, "seeds": [args.seed, args.seed + args.num - 1],
                **settings, "batch_size": args.batch_size, "nfe_per_image": nfe, "complete": False}
    if state.is_main_process:
        # an older folder at another --size / --ug is refused too (absent keys: the defaults)
        check_resume(out, {"size": None, "ug": None, "ug_window": None, **settings}, args.restart)
        sweep_temp_files(out)
        atomic_write_json(out / "manifest.json", manifest)  # first: a killed run's images are described
    state.wait_for_everyone()

    name = lambda s: out / f"{s:06d}.png"  # noqa: E731
    t0 = time.time()
    mine = lambda: my_batches(args.seed, args.num, args.batch_size, state.process_index,  # noqa: E731
                              state.num_processes)
    bar = tqdm(total=sum(map(len, mine())), desc=f"sampling (rank {state.process_index})", unit="img",
               disable=not state.is_local_main_process)
    text = png_parameters(pipe, args, cls, solver, size_kw)
    for seeds in mine():
        missing = [s for s in seeds if not name(s).exists()]  # resume: a batch is redrawn whole, its gaps written
        if missing:
            batch, x = next(generate(pipe, seeds, len(seeds), cls, device, info, num_inference_steps=args.steps,
                                     solver=solver, grid=args.grid, guidance_scale=args.guidance,
                                     batch_invariant=invariant, **size_kw, **method_kwargs(args)))
            for s, img in zip(batch, to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()):
                if s in missing:
                    save_png_atomic(Image.fromarray(img), name(s), text(s))
        bar.update(len(seeds))
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        images = [Image.open(name(s)).convert("RGB") for s in itertools.islice(range(args.seed, args.seed + args.num),
                                                                                GRID_MAX)]
        save_png_atomic(image_grid(images), out / "grid.png")
        atomic_write_json(out / "manifest.json", {
            **manifest, **resolution_fields(pipe, args, size_kw, info), "complete": True,
            "nfe_per_image": info.get("nfe", nfe),  # what ran (a guidance interval saves the null branch)
            "grid_png": f"the first {len(images)} images",
            "wall_time_s": round(time.time() - t0, 3), "device": str(device),
            "num_processes": state.num_processes, "torch": torch.__version__, "genkit": __version__,
        })
        print(f"wrote {args.num} images, grid.png and manifest.json to {out}")
