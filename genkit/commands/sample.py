"""`genkit sample`: seeds K..K+N-1 -> one PNG per seed, grid.png and manifest.json."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from .. import __version__
from .common import atomic_write_json, ensure_writable_dir, image_grid, load_pipeline, pick_device, save_png_atomic


DEFAULT_GUIDANCE = 2.0


def run_sample(args) -> None:
    from accelerate import PartialState
    from pipelines.pixel_diffusion import MAX_BATCH_SIZE

    if args.batch_size > MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size={args.batch_size} is not allowed: an int in [1, {MAX_BATCH_SIZE}]")
    # torchrun without GPUs: accelerate forms gloo ranks only with cpu=True (else each process samples every seed)
    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available())
    device = pick_device(args.device) if state.num_processes == 1 else state.device
    out = ensure_writable_dir(args.out)
    pipe = load_pipeline(args.model, device)
    conditional = pipe.num_classes > 0
    if args.guidance is None:  # CFG is what makes a small class-conditional model draw clear emoji
        args.guidance = DEFAULT_GUIDANCE if conditional else 1.0
    cls = args.class_label
    if cls is None:
        cls = "cycle" if conditional else "none"
    if cls not in ("cycle", "none"):  # validate once, early, with the CLI's flag name
        try:
            pipe.class_ids(cls, 1)
        except ValueError as e:
            raise ValueError(str(e).replace("class=", "--class=", 1)) from None
    elif cls == "cycle" and not conditional:
        raise ValueError("--class=cycle needs a class-conditional model: this one is unconditional")
    if cls == "none" and args.guidance != 1.0:
        raise ValueError(f"--guidance={args.guidance} needs a class (--class NAME|ID|cycle): use --guidance 1")
    _validate(pipe, args)  # before any work is done

    def labels_for(batch):  # image k's class depends only on its seed
        if cls == "none":
            return None
        return [s % pipe.num_classes for s in batch] if cls == "cycle" else cls
    from genkit.sampling import nfe as solver_nfe

    solver = args.solver or pipe.scheduler.config.get("solver", "dpmpp_2m")
    nfe = solver_nfe(solver, args.steps) * (2 if args.guidance != 1.0 else 1)

    seeds = list(range(args.seed, args.seed + args.num))
    name = lambda s: out / f"{s:06d}.png"  # noqa: E731
    t0 = time.time()
    with state.split_between_processes(seeds) as my_seeds:
        todo = [s for s in my_seeds if not name(s).exists()]  # resume: skip what is already written
        bar = tqdm(total=len(todo), desc=f"sampling (rank {state.process_index})", unit="img",
                   disable=not state.is_local_main_process)
        for i in range(0, len(todo), args.batch_size):
            batch = todo[i:i + args.batch_size]
            gens = [torch.Generator(device).manual_seed(s) for s in batch]
            res = pipe(batch_size=len(batch), num_inference_steps=args.steps, solver=solver, grid=args.grid,
                       guidance_scale=args.guidance, class_labels=labels_for(batch), generator=gens)
            assert res.nfe == nfe
            for s, img in zip(batch, res.images):
                save_png_atomic(img, name(s))
            bar.update(len(batch))
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        images = [Image.open(name(s)).convert("RGB") for s in seeds]
        save_png_atomic(image_grid(images), out / "grid.png")
        atomic_write_json(out / "manifest.json", {
            "model": str(Path(args.model)), "num": args.num, "seeds": [seeds[0], seeds[-1]],
            "steps": args.steps, "solver": solver, "grid": args.grid or pipe.scheduler.config.get("grid"),
            "class": cls, "guidance": args.guidance, "batch_size": args.batch_size,
            "nfe_per_image": nfe,
            "wall_time_s": round(time.time() - t0, 3), "device": str(device),
            "num_processes": state.num_processes, "torch": torch.__version__, "genkit": __version__,
        })
        print(f"wrote {args.num} images, grid.png and manifest.json to {out}")


def _validate(pipe, args) -> None:
    """Check solver, grid and guidance with the CLI's flag names before generating anything."""
    from genkit.sampling import GRIDS, SOLVERS

    if args.solver is not None and args.solver not in SOLVERS:
        raise ValueError(f"--solver={args.solver!r} is not allowed: one of {', '.join(SOLVERS)}")
    if args.grid is not None and args.grid not in GRIDS:
        raise ValueError(f"--grid={args.grid!r} is not allowed: one of {', '.join(GRIDS)}")
    if args.guidance < 0:
        raise ValueError(f"--guidance={args.guidance} is not allowed: a number >= 0")
    if args.guidance != 1.0 and pipe.num_classes == 0:
        raise ValueError(f"--guidance={args.guidance} needs a class-conditional model: use 1")
