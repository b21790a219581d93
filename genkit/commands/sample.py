"""`genkit sample`: seeds K..K+N-1 -> one PNG per seed, grid.png and manifest.json."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from .. import __version__
from .common import (atomic_write_json, default_steps, ensure_writable_dir, generate, image_grid, is_one_step,
                     load_pipeline, pick_device, process_state, resolve_conditioning, save_png_atomic)


def check_solver_grid(pipe, solver: str | None, grid: str | None, steps: int, guidance: float) -> tuple[str, int]:
    """--solver / --grid with the CLI's flag names, before any work: (solver, NFE per image, CFG counted)."""
    from genkit.sampling import GRIDS, SOLVERS, nfe

    if is_one_step(pipe):
        if solver not in (None, "one_step") or grid is not None:
            flag, value = ("--solver", solver) if solver not in (None, "one_step") else ("--grid", grid)
            raise ValueError(f"{flag}={value!r} is not allowed: a one-step generator has no solver or grid "
                             "(leave it out)")
        return "one_step", 1
    if solver is not None and solver not in SOLVERS:
        raise ValueError(f"--solver={solver!r} is not allowed: one of {', '.join(SOLVERS)}")
    if grid is not None and grid not in GRIDS:
        raise ValueError(f"--grid={grid!r} is not allowed: one of {', '.join(GRIDS)}")
    solver = solver or pipe.scheduler.config.get("solver", "dpmpp_2m")
    return solver, nfe(solver, steps) * (2 if guidance != 1.0 else 1)


def check_batch_size(batch_size: int) -> None:
    from pipelines.pixel_diffusion import MAX_BATCH_SIZE

    if batch_size > MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size={batch_size} is not allowed: an int in [1, {MAX_BATCH_SIZE}]")


def run_sample(args) -> None:
    with process_state() as state:
        _sample(args, state)


def _sample(args, state) -> None:
    from pipelines.pixel_diffusion import to_uint8

    check_batch_size(args.batch_size)
    device = pick_device(args.device) if state.num_processes == 1 else state.device
    out = ensure_writable_dir(args.out)
    pipe = load_pipeline(args.model, device)
    args.steps = default_steps(pipe, args.steps)
    cls, args.guidance = resolve_conditioning(pipe, args.class_label, args.guidance)
    solver, nfe = check_solver_grid(pipe, args.solver, args.grid, args.steps, args.guidance)

    seeds = list(range(args.seed, args.seed + args.num))
    name = lambda s: out / f"{s:06d}.png"  # noqa: E731
    t0 = time.time()
    with state.split_between_processes(seeds) as my_seeds:
        todo = [s for s in my_seeds if not name(s).exists()]  # resume: skip what is already written
        bar = tqdm(total=len(todo), desc=f"sampling (rank {state.process_index})", unit="img",
                   disable=not state.is_local_main_process)
        for batch, x in generate(pipe, todo, args.batch_size, cls, device, num_inference_steps=args.steps,
                                 solver=solver, grid=args.grid, guidance_scale=args.guidance):
            for s, img in zip(batch, to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()):
                save_png_atomic(Image.fromarray(img), name(s))
            bar.update(len(batch))
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        images = [Image.open(name(s)).convert("RGB") for s in seeds]
        save_png_atomic(image_grid(images), out / "grid.png")
        atomic_write_json(out / "manifest.json", {
            "model": str(Path(args.model)), "num": args.num, "seeds": [seeds[0], seeds[-1]],
            "steps": args.steps, "solver": solver, "grid": None if solver == "one_step" else (args.grid or pipe.scheduler.config.get("grid")),
            "class": cls, "guidance": args.guidance, "batch_size": args.batch_size,
            "nfe_per_image": nfe,
            "wall_time_s": round(time.time() - t0, 3), "device": str(device),
            "num_processes": state.num_processes, "torch": torch.__version__, "genkit": __version__,
        })
        print(f"wrote {args.num} images, grid.png and manifest.json to {out}")
