"""Train an AMED predictor (genkit.sampling.amed.AMEDPredictor) on a frozen teacher: a pipeline folder.

    python training/train_amed.py --model weights/openmoji-32 --nfe 5                  # AMED-Solver, guidance 2
    python training/train_amed.py --model weights/openmoji-32 --nfe 5 --solver amed-ipndm
    python training/train_amed.py --model weights/openmoji-32 --nfe 5 --solver amed-euler --learn_grid 16
    accelerate launch training/train_amed.py ...            # several processes: each its own seeds
    ... --resume_from_checkpoint latest --max_minutes 20   # continue an interrupted run exactly

With --learn_grid K the student's interior sigmas are learned first (a step past the paper, in the spirit of
LD3, Tong et al. 2025): Nelder-Mead over their logs, sigma_max and sigma_min fixed, minimising the untrained
student's distance to the accurate teacher's final samples on K seeds of their own. On weights/openmoji-32 the
NFE-5 error sits in one long interval (sigma 9.7 -> 0.47 on the polynomial grid), and moving its ends does what
no intermediate point can. The predictor records the learned sigmas (grid "learned"); the pipeline samples on
them whenever it uses that predictor.

Per batch (Zhou et al. 2024, Alg. 1):
  1. noise x_T = sigma_max n from seed (seed, step, rank), class labels drawn the same way;
  2. a teacher trajectory from that noise on the student's grid with M points inserted per interval
     (interpolated in the grid's own parametrization), kept at the student's sigmas. The teacher must be
     accurate: the student learns to copy it, errors included. Default Heun with M chosen so that the teacher
     takes at least 64 steps (127 NFE; its ODE error on weights/openmoji-32 is far below any NFE-5 solver's);
     a crude teacher (the paper's M = 1, or DPM-Solver++ at 12 NFE) is itself off the ODE by about as much
     as the student at NFE 5 (measured: see weights/openmoji-32/README.md);
  3. the student steps interval by interval, L2 loss to the teacher point and one Adam step per interval;
     it continues from its own (detached) output with its own history, so each interval learns to correct
     what the earlier ones left; --teacher_forcing restarts every single-step interval from the teacher point
     instead. Gradients reach the predictor through the one network evaluation at s_mid; the network is frozen.
     --loss final instead runs the whole student with gradients and takes one Adam step on the L2 of its final
     sample to the teacher's (the ODE error itself; the per-interval loss is greedy: each step is trained for
     its own next point, not for where the run ends). On weights/openmoji-32 neither wins everywhere (16
     held-out seeds, learned grids): final is better at NFE 3 (0.274 vs 0.286), worse at NFE 5 (0.157 vs 0.140)
     and NFE 7 (0.119 vs 0.115).
The predictor folder (config + safetensors + metrics.json) is rewritten atomically at every checkpoint; by
default it goes to <model>/amed/<solver>-nfe<N>-g<guidance>/ where the pipeline finds it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from genkit.checks import OneLineParser, bad, check_choice, check_float, check_int
from genkit.sampling import get_solver, solver_entry, solver_names, steps_for_nfe
from genkit.sampling.grids import LEARNED
from genkit.sampling.amed import (MULTISTEP, AMEDPredictor, AMEDState, BottleneckTap, amed_interval,
                                  unet_fingerprint)
from training.utils import minutes_before, resolve_checkpoint, run_script, save_checkpoint, save_model_folder


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", required=True, help="teacher: a pipeline folder (genkit, or a plain diffusers DDPM folder)")
    a("--solver", default="amed", help="amed (AMED-Solver) or amed-<base>: " + ", ".join(solver_names(True)))
    a("--nfe", type=int, default=5, help="network evaluations per sample (with AFS: 3, 5, 7, 9 ...; CFG not counted)")
    a("--grid", default=None, help="sigma grid (default: the model's; polynomial for a diffusers folder); with "
                                   "--learn_grid the grid the search starts from")
    a("--learn_grid", type=int, default=0, metavar="K",
      help="learn the interior sigmas first on K seeds of their own (0: off; 32 is plenty for 1-4 numbers)")
    a("--grid_evals", type=int, default=60, help="--learn_grid: student runs the search may spend (each: K samples)")
    a("--guidance", type=float, default=None, help="CFG scale (default 2 for a class-conditional model, else 1)")
    a("--no_afs", dest="afs", action="store_false", help="no analytical first step (then NFE is even)")
    a("--teacher", default=None, help="teacher solver (default: heun, or the base solver for multistep plugins)")
    a("--M", type=int, default=None,
      help="teacher points inserted per interval (default: enough for >= 64 teacher steps in all)")
    a("--loss", default="interval", help="interval: L2 to the teacher point after every interval (the paper's); "
      "final: L2 of the final sample only, backpropagated through the whole student run (the ODE error itself)")
    a("--teacher_forcing", action="store_true",
      help="single-step bases restart each interval from the teacher point (default: the student's own output)")
    a("--dtype", default="float32", help="the frozen network's dtype: float32 or bfloat16 (CPU autocast: about 2x "
                                         "faster on a CPU with AVX512-BF16, far slower without one; its own error "
                                         "is about 0.006, far below NFE 5's)")
    a("--scale_dir", type=float, default=0.01, help="c in [1 - s, 1 + s] (0: off)")
    a("--scale_time", type=float, default=None, help="a in [1 - s, 1 + s] (default 0 for amed, 0.2 for plugins)")
    a("--no_feature", dest="use_feature", action="store_false",
      help="a time-only predictor: (r, c, a) per step, not per sample (the bottleneck feature overfits a small pool)")
    a("--num_trajectories", type=int, default=10000, help="teacher trajectories in all (the paper: 10k)")
    a("--teacher_pool", type=int, default=None,
      help="reuse a pool of this many teacher trajectories (cached in output_dir/teacher-pool.pt, resumable) "
           "instead of a fresh one per student trajectory: the teacher is the costly part on a CPU")
    a("--batch_size", type=int, default=32)
    a("--learning_rate", type=float, default=5e-3)
    a("--seed", type=int, default=0)
    a("--output_dir", default=None, help="default <model>/amed/<solver>-nfe<N>-g<guidance>")
    a("--checkpointing_steps", type=int, default=20)
    a("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-N folder")
    a("--max_minutes", type=float, default=None, help="stop after a checkpoint once this much time passed")
    a("--eval_num", type=int, default=64, help="held-out seeds for the before/after error to the teacher")
    a("--device", default=None)
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    args.solver = check_choice("--solver", args.solver, solver_names(predictor=True))
    check_int("--nfe", args.nfe, 1, 99)
    check_int("--num_trajectories", args.num_trajectories, 1)
    check_int("--batch_size", args.batch_size, 1, 1024)
    check_int("--checkpointing_steps", args.checkpointing_steps, 1)
    check_int("--eval_num", args.eval_num, 1, 4096)
    check_int("--learn_grid", args.learn_grid, 0, 4096)
    check_int("--grid_evals", args.grid_evals, 1, 10000)
    check_float("--learning_rate", args.learning_rate, 1e-8, 1.0)
    check_float("--scale_dir", args.scale_dir, 0.0, 0.99)
    if args.scale_time is not None:
        check_float("--scale_time", args.scale_time, 0.0, 0.99)
    if args.guidance is not None:
        check_float("--guidance", args.guidance, 0.0, 50.0)
    if args.M is not None:
        check_int("--M", args.M, 0, 256)
    check_choice("--dtype", args.dtype, ("float32", "bfloat16"))
    check_choice("--loss", args.loss, ("interval", "final"))
    if args.loss == "final" and args.teacher_forcing:
        bad("--teacher_forcing", True, "off with --loss final (the final loss follows the student's own run)")
    if args.teacher is not None:
        check_choice("--teacher", args.teacher, solver_names(predictor=False))
    if args.max_minutes is not None:
        check_float("--max_minutes", args.max_minutes, 0.0)
    if args.teacher_pool is not None:
        check_int("--teacher_pool", args.teacher_pool, args.batch_size)


# -- the pieces (tests call them on toy denoisers) ----------------------------------------------------------

def refine_grid(sigmas: torch.Tensor, M: int, grid: str = "polynomial", rho: float = 7.0) -> torch.Tensor:
    """Insert M points in every interval of a decreasing grid (no 0), evenly in the grid's own coordinate:
    sigma^(1/rho) for polynomial, log sigma otherwise (eq. 13). (N,) -> ((N - 1)(M + 1) + 1,)."""
    s, poly = sigmas.double(), grid in ("polynomial", LEARNED)
    u = s ** (1 / rho) if poly else s.log()
    w = torch.linspace(0, 1, M + 2, dtype=torch.float64)[:-1]
    fine = torch.cat([u[i] + w * (u[i + 1] - u[i]) for i in range(len(u) - 1)] + [u[-1:]])
    return fine ** rho if poly else fine.exp()


def teacher_M(intervals: int, min_steps: int = 64) -> int:
    """Points to insert per student interval so that the teacher takes at least min_steps steps in all."""
    return max(1, math.ceil(min_steps / intervals) - 1)


@torch.no_grad()
def teacher_points(denoise, x_start, sigmas, teacher: str, M: int, grid: str, rho: float = 7.0,
                   desc: str | None = None) -> list:
    """The teacher's x at each student sigma (sigmas: the student's grid without its final 0), from x_start.
    desc: show a progress bar over the teacher's steps (the one-off teachers take minutes on a CPU)."""
    fine = refine_grid(sigmas, M, grid, rho).to(x_start.device)
    keep = {k * (M + 1) for k in range(len(sigmas))}
    points = [x_start]
    bar = tqdm(total=len(fine) - 1, desc=desc, disable=desc is None, leave=False)

    def record(info):
        bar.update()
        if info["i"] + 1 in keep:
            points.append(info["x"])

    get_solver(teacher)(denoise, x_start, fine, callback=record)
    bar.close()
    return points


def train_batch(denoise, predict, optimizer, sigmas, points, base: str, afs: bool,
                teacher_forcing: bool = False) -> list[float]:
    """One trajectory batch: per interval, the student's step from its own last output (or, with
    teacher_forcing and a single-step base, from the teacher point), L2 to the next teacher point, one optimizer
    step. -> loss per interval."""
    state, x, losses = AMEDState(), points[0], []
    for n in range(len(sigmas) - 1):
        x_in = points[n] if teacher_forcing and base not in MULTISTEP else x
        with torch.enable_grad():
            x_next, *_ = amed_interval(denoise, x_in, float(sigmas[n]), float(sigmas[n + 1]), predict, base, state,
                                       use_afs=afs and n == 0)
            loss = (x_next - points[n + 1]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        losses.append(loss.item())
        x = x_next.detach()
    return losses


def student_run(denoise, predict, sigmas, x, base: str, afs: bool) -> torch.Tensor:
    """The student from x at sigmas[0] down to sigmas[-1] (sigma_min), interval by interval, with its history;
    gradients flow wherever the caller enables them."""
    state = AMEDState()
    for n in range(len(sigmas) - 1):
        x, *_ = amed_interval(denoise, x, float(sigmas[n]), float(sigmas[n + 1]), predict, base, state,
                              use_afs=afs and n == 0)
    return x


def train_batch_final(denoise, predict, optimizer, sigmas, points, base: str, afs: bool) -> list[float]:
    """--loss final: the student's whole run with gradients, L2 of its final sample to the teacher's (what the
    ODE error measures; the per-interval loss trains each step greedily), one optimizer step. -> [loss]"""
    with torch.enable_grad():
        loss = (student_run(denoise, predict, sigmas, points[0], base, afs) - points[-1]).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    return [loss.item()]


@torch.no_grad()
def student_error(denoise, predict, sigmas, points, base: str, afs: bool) -> float:
    """RMS distance of the student's final sample (stops at sigma_min) to the teacher's, per image, averaged."""
    x = student_run(denoise, predict, sigmas, points[0], base, afs)
    return float((x - points[-1]).flatten(1).square().mean(1).sqrt().mean())


def learn_grid(error_of, sigmas: torch.Tensor, max_evals: int = 60) -> tuple[torch.Tensor, list]:
    """The interior sigmas that minimise error_of(sigmas), the ends fixed: Nelder-Mead over the N - 2 free
    logits of the N - 1 interval widths in log sigma (a softmax of them: the grid stays strictly decreasing).
    sigmas (N,) decreasing, no final 0 -> (learned (N,), [(sigmas, error) per evaluation])."""
    import numpy as np
    from scipy.optimize import minimize

    hi, lo = math.log(float(sigmas[0])), math.log(float(sigmas[-1]))
    history = []

    def grid_of(v):  # 1. logits (N - 2,) -> widths (first logit 0, each within e^+-6) -> a decreasing grid
        w = np.exp(np.clip(np.concatenate([[0.0], v]), -6, 6))
        steps = np.concatenate([[0.0], np.cumsum(w / w.sum())]) * (hi - lo)
        out = torch.tensor(hi - steps, dtype=torch.float64).exp()
        out[0], out[-1] = sigmas[0], sigmas[-1]
        return out.to(sigmas.dtype)

    def objective(v):  # 2. the student's error on that grid
        g = grid_of(v)
        history.append(([float(x) for x in g], float(error_of(g))))
        return history[-1][1]

    if len(sigmas) < 3:  # one interval: nothing to learn
        return sigmas, [([float(x) for x in sigmas], float(error_of(sigmas)))]
    widths = -np.diff(np.log(sigmas.double().numpy()))
    start = np.log(widths[1:] / widths[0])
    res = minimize(objective, start, method="Nelder-Mead",  # 3. first simplex: each width x e^0.3
                   options={"maxfev": max_evals, "xatol": 0.01, "fatol": 1e-5,
                            "initial_simplex": np.vstack([start] + [start + 0.3 * e for e in np.eye(len(start))])})
    return grid_of(res.x), history


def predict_with(module, tap: BottleneckTap):
    """predict(x, s, s_next, use_afs) through `module` (the accelerate-wrapped predictor: synced gradients)."""
    def predict(x, s, s_next, use_afs):
        n = len(x)
        feature = None if use_afs else tap.feature[:n]
        full = lambda v: torch.full((n,), float(v), device=x.device)  # noqa: E731
        return module(feature, full(s), full(s_next))
    return predict


def _save(path, obj) -> None:
    from genkit.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _check_made_by(path, have, made_by: dict) -> None:
    """ValueError if a cached file in --output_dir (teacher pool / eval, grid.json) was made with other settings:
    a resumed run reuses it, a different run must not."""
    if have != made_by:
        raise ValueError(f"--output_dir={str(path.parent)!r} is not allowed: its {path.name} was made with "
                         f"{have}, this run asks {made_by}; use another --output_dir")


def _load_made_by(path, made_by: dict, empty: dict) -> dict:
    """A cached teacher file (dict with "made_by") or `empty`; ValueError if it was made with other settings."""
    cached = torch.load(path) if path.is_file() else {**empty, "made_by": made_by}
    _check_made_by(path, cached.get("made_by"), made_by)
    return cached


def teacher_pool(out_dir, args, pipe, denoiser_for, sigmas, teacher, M, grid, rho, num_classes, device,
                 made_by: dict) -> dict:
    """{"points": [(K, C, H, W) per student sigma], "labels"}: built in chunks of --batch_size, each chunk
    saved atomically to out_dir/teacher-pool.pt, so an interrupted build resumes."""
    path = out_dir / "teacher-pool.pt"
    pool = _load_made_by(path, made_by, {"points": None, "labels": None, "n": 0})
    bar = tqdm(total=args.teacher_pool, initial=pool["n"], desc=f"teacher pool ({teacher}, M={M})")
    while pool["n"] < args.teacher_pool:
        n = min(args.batch_size, args.teacher_pool - pool["n"])
        noise, labels = draw(pipe, 10 ** 8 + args.seed * 10 ** 6 + pool["n"], n, num_classes, device)
        pts = [p.cpu() for p in teacher_points(denoiser_for(labels), noise * sigmas[0], sigmas, teacher, M, grid, rho)]
        pool["points"] = pts if pool["points"] is None else [torch.cat([a, b]) for a, b in zip(pool["points"], pts)]
        if labels is not None:
            pool["labels"] = labels.cpu() if pool["labels"] is None else torch.cat([pool["labels"], labels.cpu()])
        pool["n"] += n
        _save(path, pool)
        bar.update(n)
    bar.close()
    return {"points": [p.to(device) for p in pool["points"]],
            "labels": None if pool["labels"] is None else pool["labels"].to(device)}


def UNTRAINED(x, s, s_next, use_afs):
    """The untrained predictor: r = 0.5, c = 1, a = 1 (for AMED-Solver: DPM-Solver-2)."""
    return 0.5, 1.0, 1.0


def search_grid(out_dir, args, pipe, denoiser_for, sigmas, base, teacher, M, grid, rho, guidance, num_classes,
                device, is_main: bool) -> torch.Tensor:
    """--learn_grid: the accurate teacher's final samples on K seeds of their own (2 * 10^8 + --seed), then
    learn_grid with the untrained student. Every process runs the same search (same seeds: same answer);
    the main one writes out_dir/grid.json."""
    from genkit.commands.common import atomic_write_json

    path = out_dir / "grid.json"
    made_by = {"teacher": teacher, "M": M, "start": [round(float(s), 6) for s in sigmas], "seed": args.seed,
               "K": args.learn_grid, "evals": args.grid_evals, "base": base, "afs": args.afs,
               "guidance": float(guidance), "dtype": args.dtype}
    if path.is_file():  # a resumed run: the same search, or a refusal (never a silent second search)
        done = json.loads(path.read_text())
        _check_made_by(path, done.get("made_by"), made_by)
        return torch.tensor(done["sigmas"], dtype=torch.float32)
    noise, labels = draw(pipe, 2 * 10 ** 8 + args.seed, args.learn_grid, num_classes, device)
    den = denoiser_for(labels)
    with torch.no_grad():
        x_start = noise * sigmas[0]
        x_end = teacher_points(den, x_start, sigmas, teacher, M, grid, rho,
                               desc=f"teacher for the grid search ({args.learn_grid} seeds)")[-1]
    bar = tqdm(total=args.grid_evals, desc=f"learn grid ({args.learn_grid} seeds)")

    def error_of(g):
        bar.update()
        return student_error(den, UNTRAINED, g, [x_start, x_end], base, args.afs)

    learned, history = learn_grid(error_of, sigmas, args.grid_evals)
    bar.close()
    if is_main:
        atomic_write_json(path, {"made_by": made_by, "sigmas": [float(s) for s in learned],
                                 "error_start": history[0][1], "error_learned": min(e for _, e in history),
                                 "history": history})
    tqdm.write(f"learned grid {[round(float(s), 4) for s in learned]}: error {history[0][1]:.4f} -> "
               f"{min(e for _, e in history):.4f} on {args.learn_grid} seeds")
    return learned


# -- the job ------------------------------------------------------------------------------------------------

def setup(args, device):
    """-> (pipe, denoise builder, student sigmas (with final 0), grid name, rho, guidance, class count)."""
    from genkit.commands.common import load_pipeline
    from genkit.guidance import classifier_free_guidance
    from genkit.sampling import default_sigma_range, make_grid
    from genkit.scheduler import GenkitScheduler

    pipe = load_pipeline(args.model, device)
    pipe.unet.requires_grad_(False).eval()
    entry = solver_entry(args.solver)
    num_steps = steps_for_nfe(args.solver, args.nfe, args.afs)
    if entry.nfe(num_steps, args.afs) != args.nfe:
        raise ValueError(f"--nfe={args.nfe} is not allowed: {args.solver} with{'out' if not args.afs else ''} AFS "
                         f"costs 2 (N - 1){' - 1' if args.afs else ''} for N grid steps (e.g. "
                         f"{entry.nfe(num_steps, args.afs)})")
    genkit_model = isinstance(pipe.scheduler, GenkitScheduler)
    grid = args.grid or (pipe.scheduler.config.grid if genkit_model else "polynomial")
    den = pipe.denoiser()
    if genkit_model:
        sigmas = pipe.scheduler.sigma_grid(num_steps, grid)
        rho = float(pipe.scheduler.config.get("rho", 7.0))
    else:
        lo, hi = default_sigma_range(None, den.sigma_range)
        sigmas, rho = make_grid(grid, num_steps, lo, hi), 7.0
    num_classes = pipe.num_classes
    guidance = args.guidance if args.guidance is not None else (2.0 if num_classes else 1.0)
    if guidance != 1.0 and not num_classes:
        raise ValueError(f"--guidance={guidance} is not allowed: the model is unconditional (use 1)")

    def denoiser_for(labels):
        plain = (lambda x, s: den(x, s)) if labels is None else \
            classifier_free_guidance(den, labels, num_classes, guidance)
        if args.dtype == "float32":
            return plain

        def low_precision(x, s):                                   # the network in bf16, the solver in fp32
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return plain(x, s).float()
        return low_precision

    return pipe, denoiser_for, torch.as_tensor(sigmas, dtype=torch.float32), grid, rho, guidance, num_classes


def draw(pipe, seed: int, n: int, num_classes: int, device):
    """Noise (n, C, H, W) and class labels (or None) from one seed."""
    g = torch.Generator().manual_seed(seed)
    size, ch = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    noise = torch.randn(n, ch, size, size, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g) if num_classes else None
    return noise.to(device), None if labels is None else labels.to(device)


def main(args):
    accelerator = Accelerator(cpu=args.device == "cpu")
    device = accelerator.device
    pipe, denoiser_for, sigmas_full, grid, rho, guidance, num_classes = setup(args, device)
    base = args.solver.removeprefix("amed-")
    teacher = args.teacher or ("heun" if base not in MULTISTEP else base)
    M = args.M if args.M is not None else teacher_M(len(sigmas_full) - 2)
    scale_time = args.scale_time if args.scale_time is not None else (0.0 if base == "amed" else 0.2)
    sigmas = sigmas_full[:-1]                                         # the student stops at sigma_min
    name = f"{args.solver}-nfe{args.nfe}-g{guidance:g}" + ("-learned" if args.learn_grid else "")
    out_dir = Path(args.output_dir or Path(args.model) / "amed" / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    start_sigmas = sigmas
    if args.learn_grid:  # 0. the grid first (cached in grid.json: a resumed run does not search again)
        sigmas = search_grid(out_dir, args, pipe, denoiser_for, sigmas, base, teacher, M, grid, rho, guidance,
                             num_classes, device, accelerator.is_main_process)
        grid = LEARNED

    torch.manual_seed(args.seed)
    predictor = AMEDPredictor(solver=args.solver, num_steps=len(sigmas_full) - 1, grid=grid,
                              sigmas=[float(s) for s in sigmas], guidance_scale=float(guidance), afs=args.afs,
                              teacher=unet_fingerprint(pipe.unet), scale_dir=args.scale_dir, scale_time=scale_time,
                              use_feature=args.use_feature)
    opt = torch.optim.Adam(predictor.parameters(), lr=args.learning_rate, betas=(0.9, 0.999))
    wrapped, opt = accelerator.prepare(predictor, opt)
    model = accelerator.unwrap_model(wrapped)
    path, step = resolve_checkpoint(out_dir, args.resume_from_checkpoint)
    if path is not None:
        accelerator.load_state(str(path))

    total = -(-args.num_trajectories // (args.batch_size * accelerator.num_processes))
    tap = BottleneckTap(pipe.unet).__enter__()
    predict = predict_with(wrapped, tap)

    # held-out seeds (seed 10^9 + --seed: apart from the training seeds) for the error before / after training
    eval_noise, eval_labels = draw(pipe, 10 ** 9 + args.seed, args.eval_num, num_classes, device)
    eval_den = denoiser_for(eval_labels)
    made_by = {"teacher": teacher, "M": M, "sigmas": [round(float(s), 6) for s in sigmas], "seed": args.seed,
               "guidance": float(guidance), "dtype": args.dtype}
    eval_path = out_dir / "teacher-eval.pt"                         # cached: the accurate teacher is costly
    cached = _load_made_by(eval_path, {**made_by, "eval_num": args.eval_num}, {"points": None})
    if cached["points"] is None:
        cached["points"] = [p.cpu() for p in teacher_points(eval_den, eval_noise * sigmas[0], sigmas, teacher, M,
                                                             grid, rho, desc=f"teacher for {args.eval_num} "
                                                             "held-out seeds")]
        if accelerator.is_main_process:
            _save(eval_path, cached)
    eval_points = [p.to(device) for p in cached["points"]]
    err_before = student_error(eval_den, UNTRAINED, sigmas, eval_points, base, args.afs)

    def checkpoint(row):
        if accelerator.is_main_process:  # the folder first: a kill before the checkpoint redoes both
            save_model_folder(model, out_dir, {**row, "args": {k: str(v) for k, v in vars(args).items()}})
        save_checkpoint(accelerator, out_dir, step, keep=1)

    t0, spent, row = time.time(), minutes_before(out_dir, step), {}
    bar = tqdm(total=total, initial=step, desc=f"train {args.solver} nfe {args.nfe}",
               disable=not accelerator.is_local_main_process)
    wrapped.train()
    pool = None
    if args.teacher_pool:
        pool = teacher_pool(out_dir, args, pipe, denoiser_for, sigmas, teacher, M, grid, rho, num_classes, device,
                            made_by)
    while step < total:
        seed = args.seed * 10 ** 6 + step * accelerator.num_processes + accelerator.process_index
        if pool is None:
            noise, labels = draw(pipe, seed, args.batch_size, num_classes, device)
            den = denoiser_for(labels)
            points = teacher_points(den, noise * sigmas[0], sigmas, teacher, M, grid, rho)
        else:                                                          # a seeded draw from the pool
            idx = torch.randperm(args.teacher_pool, generator=torch.Generator().manual_seed(seed))[:args.batch_size]
            labels = pool["labels"][idx] if pool["labels"] is not None else None
            den = denoiser_for(labels)
            points = [p[idx] for p in pool["points"]]
        losses = train_batch_final(den, predict, opt, sigmas, points, base, args.afs) if args.loss == "final" \
            else train_batch(den, predict, opt, sigmas, points, base, args.afs, args.teacher_forcing)
        if not all(math.isfinite(v) for v in losses):
            raise RuntimeError(f"loss is {losses} at step {step}: lower --learning_rate")
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{sum(losses):.4g}")
        out_of_time = args.max_minutes is not None and (time.time() - t0) / 60 > args.max_minutes
        if step % args.checkpointing_steps == 0 or step == total or out_of_time:
            row = {"step": step, "trajectories": step * args.batch_size * accelerator.num_processes,
                   "loss_per_interval": losses, "minutes": round(spent + (time.time() - t0) / 60, 3)}
            if step == total or out_of_time:
                model.eval()
                row.update(teacher=f"{teacher}, {(M + 1) * (len(sigmas) - 1)} steps",
                           error_to_teacher_untrained=err_before,                 # r = 0.5, c = 1, a = 1
                           error_to_teacher_untrained_start_grid=student_error(  # ... on --grid, unlearned
                               eval_den, UNTRAINED, start_sigmas, [eval_points[0], eval_points[-1]], base,
                               args.afs) if args.learn_grid else err_before,
                           error_to_teacher_trained=student_error(eval_den, predict_with(model, tap), sigmas,
                                                               eval_points, base, args.afs))
                model.train()
            if accelerator.is_main_process:
                with open(out_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                tqdm.write(json.dumps(row))
            checkpoint(row)
        if out_of_time:
            break
    bar.close()
    tap.__exit__(None, None, None)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main, parse_args)
