"""Train a learned multistep solver (genkit.sampling.bns.BNSWeights) on a frozen teacher: a pipeline folder.

    python training/train_bns.py --model weights/openmoji-32 --nfe 5                  # guidance 2
    ... --resume_from_checkpoint latest --max_minutes 20   # continue an interrupted run exactly

What is learned: the weights w (N, N) with which each of the N = NFE steps mixes every denoiser output so far,
and the N - 1 sigmas after sigma_max (sigma_max and the final 0 stay), 19 numbers at NFE 5; with
--learn_sigma_max sigma_0 as well (the first evaluation moves off sigma_max, where D is nearly a class mean); or, with
--afs, that first evaluation is not made: D at sigma_max is read from a per-class table, so NFE 5 has 6 grid
steps and 5 evaluations below sigma_max. The loss
is the ODE error itself: the mean per-image RMS distance between the solver's final sample and an accurate
solution of the same guided ODE from the same noise, backpropagated through all N network evaluations (the
network frozen).

  1. pool: --num_trajectories noises and class labels (seeded) and their solutions by Heun with --ref_steps steps
     on the model's grid (what `genkit bench samplers` measures against), built in chunks and cached in
     output_dir/teacher-pool.pt, so an interrupted build resumes;
  2. with --afs, the table: the teacher's guided D at sigma_max for every class label (and the null class),
     averaged over 4 seeded noises, stored in the weights (bns.BNSWeights.first_table, float16, 0.6 MB at 32 px);
  3. start: w of Euler (identity) or DPM-Solver++(2M) (--init) on the model's grid with its last nonzero sigma
     lifted off sigma_min (see Grid); the sigmas as softmax fractions of [log sigma_0, log sigma_min] (any
     logits give a decreasing grid); or another run's w and grid (--init_from, a warm start);
  4. epochs over the pool in a seeded order, one Adam step per batch (--learning_rate for w, --grid_lr for the
     grid's logits; --lr_schedule cosine decays both to 0);
  5. held-out seeds (10^9 + --seed): the error before and after, into metrics.json. The folder (config.json with
     the learned sigmas + safetensors + metrics.json) is rewritten atomically at every checkpoint; by default it
     goes to <model>/amed/bns-nfe<N>[-afs]-g<guidance>/, where the pipeline, `genkit sample --solver bns` and
     `genkit bench samplers` find it. One process (the pool is small and the parameters few).
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

from genkit.checks import OneLineParser, check_choice, check_float, check_int
from genkit.metrics.ode_error import ode_error
from genkit.sampling import get_solver
from genkit.sampling.amed import unet_fingerprint
from genkit.sampling.bns import TABLE_DTYPE, BNSWeights, bns_sample, dpmpp_2m_weights, table_rows
from genkit.sampling.grids import LEARNED
from training.train_amed import _load_made_by, _save, draw, setup
from training.utils import run_script, save_model_folder


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", required=True, help="teacher: a pipeline folder (genkit, or a plain diffusers DDPM folder)")
    a("--nfe", type=int, default=5,
      help="network evaluations per sample, CFG not counted: NFE grid steps, or NFE + 1 with --afs")
    a("--grid", default=None, help="the grid the learned one starts from (default: the model's)")
    a("--guidance", type=float, default=None, help="CFG scale (default 2 for a class-conditional model, else 1)")
    a("--init", default="euler", help="starting weights: euler (identity) or dpmpp_2m")
    a("--ref_steps", type=int, default=64, help="Heun steps of the accurate solutions (2 x steps - 1 NFE)")
    a("--num_trajectories", type=int, default=256, help="noises in the training pool")
    a("--epochs", type=int, default=8)
    a("--batch_size", type=int, default=16)
    a("--learning_rate", type=float, default=1e-2, help="Adam lr of the weights w")
    a("--grid_lr", type=float, default=3e-2, help="Adam lr of the grid's logits")
    a("--lr_schedule", default="constant", help="constant, or cosine: both lrs decay to 0 over the run's steps")
    a("--learn_sigma_max", action="store_true", help="learn sigma_0 too (below the model's sigma_max; see Grid)")
    a("--afs", action="store_true", help="read D at sigma_max from a per-class table instead of evaluating it: "
      "--nfe evaluations on --nfe + 1 grid steps (not with --learn_sigma_max)")
    a("--init_from", default=None, help="start w and the grid from another run's output_dir (its state.pt); "
      "the optimizer starts fresh")
    a("--eval_num", type=int, default=32, help="held-out seeds for the error before / after")
    a("--dtype", default="float32", help="the frozen network's dtype: float32 or bfloat16 (autocast)")
    a("--seed", type=int, default=0)
    a("--output_dir", default=None, help="default <model>/amed/bns-nfe<N>[-afs]-g<guidance>")
    a("--checkpointing_steps", type=int, default=8, help="batches between checkpoints")
    a("--resume_from_checkpoint", default=None, help="'latest': continue from output_dir/state.pt")
    a("--max_minutes", type=float, default=None, help="stop after a checkpoint once this much time passed")
    a("--device", default=None)
    args = p.parse_args(argv)
    check_int("--nfe", args.nfe, 2, 50)
    check_choice("--init", args.init, ("euler", "dpmpp_2m"))
    check_choice("--dtype", args.dtype, ("float32", "bfloat16"))
    check_choice("--lr_schedule", args.lr_schedule, ("constant", "cosine"))
    if args.init_from is not None and not (Path(args.init_from) / "state.pt").is_file():
        raise ValueError(f"--init_from={args.init_from!r} is not allowed: no state.pt there (a train_bns output_dir)")
    for name in ("ref_steps", "num_trajectories", "epochs", "batch_size", "eval_num", "checkpointing_steps"):
        check_int(f"--{name}", getattr(args, name), 1)
    check_float("--learning_rate", args.learning_rate, 1e-8, 1.0)
    check_float("--grid_lr", args.grid_lr, 0.0, 1.0)
    if args.guidance is not None:
        check_float("--guidance", args.guidance, 0.0, 20.0)
    if args.max_minutes is not None:
        check_float("--max_minutes", args.max_minutes, 0.0)
    if args.resume_from_checkpoint is not None:
        check_choice("--resume_from_checkpoint", args.resume_from_checkpoint, ("latest",))
    if args.afs and args.learn_sigma_max:
        raise ValueError("--afs with --learn_sigma_max is not allowed: the table holds D at the model's sigma_max, "
                         "so sigma_0 must stay there (use one of them)")
    args.solver = "bns"                                             # what train_amed.setup reads (with args.afs)
    return args


class Grid(torch.nn.Module):
    """sigma_0 > sigma_1 > ... > sigma_{N-1} > sigma_min, then 0: the N - 1 learned log-sigmas are cumulative
    softmax fractions of [log sigma_0, log sigma_min] (N logits: the last fraction is the gap left to sigma_min).
    sigma_{N-1} is learned too: an evaluation at sigma_min itself would be wasted (D is nearly the identity there),
    so the last step jumps to 0 from wherever it pays most.

    sigma_0 stays at the start grid's sigma_max unless learn_max: then it is sigma_min + a sigmoid fraction of
    the log range up to sigma_max (starting at 0.995 of it). At sigma_max = 80 the final sample hardly depends on
    what the guided D returns beyond its class (see bns.py, AFS), so the first evaluation may be better spent
    lower; the solver then starts from the same unit noise scaled by sigma_0. (--afs keeps sigma_0 and reads that
    evaluation from a table instead.)"""

    def __init__(self, sigmas, sigma_min: float, learn_max: bool = False):
        super().__init__()
        s = [float(v) for v in sigmas] + [float(sigma_min)]         # N values (no final 0), then the floor
        if s[-2] <= s[-1]:
            raise ValueError(f"the start grid must end above sigma_min={sigma_min}: {s[:-1]}")
        self.hi, self.lo = math.log(s[0]), math.log(s[-1])
        frac = torch.tensor([(math.log(a) - math.log(b)) / (self.hi - self.lo) for a, b in zip(s, s[1:])])
        self.logits = torch.nn.Parameter(frac.log())
        self.top = torch.nn.Parameter(torch.tensor(math.log(0.995 / 0.005))) if learn_max else None

    def forward(self) -> torch.Tensor:
        """(N + 1,) sigmas ending at 0."""
        hi = self.logits.new_tensor(self.hi) if self.top is None else \
            self.lo + (self.hi - self.lo) * torch.sigmoid(self.top)
        log_s = hi - (hi - self.lo) * torch.cumsum(torch.softmax(self.logits, 0), 0)
        return torch.cat([hi.exp().view(1), log_s[:-1].exp(), self.logits.new_zeros(1)])


def start_grid(sigmas) -> torch.Tensor:
    """The model's grid (N + 1,) with its last nonzero sigma (sigma_min) moved to the geometric mean of its
    neighbours above: where the learned grid starts."""
    s = sigmas.clone()
    s[-2] = (s[-3] * s[-2]).sqrt()
    return s


def build_pool(path: Path, args, pipe, denoiser_for, fine, num_classes, device, n: int, seed0: int, desc: str):
    """{"noise", "labels", "ref"}: n seeded noises (unit variance) and labels, and their accurate solutions on the
    `fine` grid; built in chunks of --batch_size, each saved atomically, so an interrupted build resumes."""
    made_by = {"model": str(args.model), "ref_steps": args.ref_steps, "guidance": args.guidance_used,
               "seed0": seed0, "dtype": args.dtype}
    pool = _load_made_by(path, made_by, {"noise": [], "labels": [], "ref": []})   # refuses another run's pool
    done = sum(len(z) for z in pool["noise"])
    heun = get_solver("heun")
    with tqdm(total=n, initial=done, desc=desc) as bar:
        while done < n:
            b = min(args.batch_size, n - done)
            noise, labels = draw(pipe, seed0 + done, b, num_classes, device)
            with torch.no_grad():
                ref = heun(denoiser_for(labels), noise * fine[0], fine)
            pool["noise"].append(noise.cpu())
            pool["labels"].append(None if labels is None else labels.cpu())
            pool["ref"].append(ref.float().cpu())
            done += b
            _save(path, pool)
            bar.update(b)
    return pool


def chunk(pool, i: int, device):
    """(noise, labels or None, accurate solution) of the pool's i-th chunk, on device."""
    lab = pool["labels"][i]
    return pool["noise"][i].to(device), None if lab is None else lab.to(device), pool["ref"][i].to(device)


def first_table(denoiser_for, sigma_max: float, num_classes: int, shape, device, seed: int, draws: int = 4):
    """(K, C, H, W): the teacher's D at sigma_max for each label it takes (the classes, then the null class;
    K = 1 for an unconditional model), averaged over `draws` seeded noises: AFS's stand-in for D_0. Rounded to the
    dtype BNSWeights stores it in, so that training and evaluation here use the values that ship."""
    labels = torch.arange(num_classes + 1, device=device) if num_classes else None
    k = 1 if labels is None else len(labels)
    gen, total = torch.Generator().manual_seed(seed), 0.0
    sigma = torch.tensor(sigma_max, device=device)
    with torch.no_grad():
        for _ in range(draws):
            z = torch.randn(k, *shape, generator=gen).to(device)
            total = total + denoiser_for(labels)(z * sigma, sigma).float()
    return (total / draws).to(TABLE_DTYPE).float()


def pool_error(pool, denoiser_for, sigmas, weights, device, table=None) -> float:
    """Mean per-image ODE error of the solver (sigmas, weights; AFS with `table`) over a pool."""
    errs = []
    with torch.no_grad():
        for z, lab, ref in (chunk(pool, i, device) for i in range(len(pool["noise"]))):
            x = bns_sample(denoiser_for(lab), z * sigmas[0], sigmas, weights, first=table_rows(table, lab, len(z)))
            errs.append(ode_error(x.float().cpu(), ref.cpu()))
    return float(torch.cat(errs).mean())


def main(args):
    accelerator = Accelerator(cpu=args.device == "cpu")
    device = accelerator.device
    pipe, denoiser_for, start, grid_name, _, guidance, num_classes = setup(args, device)
    args.guidance_used = float(guidance)
    n = len(start) - 1                                              # grid steps: --nfe, + 1 with --afs
    name = f"bns-nfe{args.nfe}{'-afs' if args.afs else ''}-g{guidance:g}"
    out_dir = Path(args.output_dir or Path(args.model) / "amed" / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    fine = torch.as_tensor(pipe.scheduler.sigma_grid(args.ref_steps, grid_name), dtype=torch.float32).to(device)

    # 1. pools: training noises from seed 10^8 + seed * 10^6, held-out ones from 10^9 + seed
    train = build_pool(out_dir / "teacher-pool.pt", args, pipe, denoiser_for, fine, num_classes, device,
                       args.num_trajectories, 10 ** 8 + args.seed * 10 ** 6, "accurate solutions (train)")
    held = build_pool(out_dir / "teacher-eval.pt", args, pipe, denoiser_for, fine, num_classes, device,
                      args.eval_num, 10 ** 9 + args.seed, "accurate solutions (held-out)")

    # 2. AFS: the table of D at sigma_max (the same every run: seeded)
    table = None
    if args.afs:
        shape = train["noise"][0].shape[1:]
        table = first_table(denoiser_for, float(start[0]), num_classes, shape, device, 10 ** 7 + args.seed)

    # 3. parameters: w and the grid's logits; resume from state.pt
    model_grid, start = start, start_grid(start)
    start_w = torch.eye(n, dtype=torch.float64) if args.init == "euler" else dpmpp_2m_weights(start)
    w = torch.nn.Parameter(start_w.float().to(device))
    grid = Grid(start[:-1], float(model_grid[-2]), learn_max=args.learn_sigma_max).to(device)
    if args.init_from is not None:  # a warm start: another run's w and grid (its sigma_0 too, if it learned one)
        init = torch.load(Path(args.init_from) / "state.pt")
        if init["w"].shape != w.shape:
            raise ValueError(f"--init_from={args.init_from!r} is not allowed: its w is {tuple(init['w'].shape)}, "
                             f"this run's ({n}, {n}) (another --nfe)")
        w.data.copy_(init["w"])
        grid.load_state_dict(init["grid"], strict=False)          # an old grid has no "top": sigma_0 starts high
        start_w, start = w.detach().clone().cpu().double(), grid().detach().cpu()
    opt = torch.optim.Adam([{"params": [w], "lr": args.learning_rate},
                            {"params": grid.parameters(), "lr": args.grid_lr}])
    mask = torch.tril(torch.ones(n, n, device=device))
    state_path, step, spent = out_dir / "state.pt", 0, 0.0
    if args.resume_from_checkpoint and state_path.is_file():
        state = torch.load(state_path)
        w.data.copy_(state["w"])
        grid.load_state_dict(state["grid"])
        opt.load_state_dict(state["opt"])
        step, spent, (err_start, err_euler) = state["step"], state["minutes"], state["errors"]
    else:  # the held-out error at the start and of Euler on the model's grid, with the table under --afs (kept in
        # state.pt: measured once)
        err_start = pool_error(held, denoiser_for, start.to(device), start_w.float().to(device), device, table)
        err_euler = pool_error(held, denoiser_for, model_grid.to(device), torch.eye(n, device=device), device, table)
    per_epoch = len(train["noise"])
    total = args.epochs * per_epoch
    base_lrs = (args.learning_rate, args.grid_lr)

    def set_lr(k: int):  # a function of the step alone: a resume continues the same schedule
        f = 0.5 * (1 + math.cos(math.pi * k / total)) if args.lr_schedule == "cosine" else 1.0
        for group, lr in zip(opt.param_groups, base_lrs):
            group["lr"] = lr * f

    def checkpoint(final: bool):
        sig = grid().detach()
        row = {"step": step, "epochs": round(step / per_epoch, 3), "minutes": round(minutes(), 3),
               "init": args.init, "reference": f"heun, {args.ref_steps} steps", "train_num": args.num_trajectories,
               "eval_num": args.eval_num, "error_heldout_euler": err_euler,  # the model's grid
               "error_heldout_start": err_start}
        if final:
            row["error_heldout_trained"] = pool_error(held, denoiser_for, sig, (w * mask).detach(), device, table)
        model = BNSWeights(num_steps=n, grid=LEARNED, sigmas=[float(s) for s in sig[:-1]],
                           guidance_scale=float(guidance), teacher=unet_fingerprint(pipe.unet), init=args.init,
                           afs=args.afs, table_shape=None if table is None else list(table.shape))
        model.weights.data.copy_((w * mask).detach().cpu())
        if table is not None:
            model.first_table.copy_(table.cpu())
        save_model_folder(model, out_dir, {**row, "args": {k: str(v) for k, v in vars(args).items()}})
        _save(state_path, {"w": w.detach().cpu(), "grid": grid.state_dict(), "opt": opt.state_dict(), "step": step,
                           "minutes": minutes(), "errors": (err_start, err_euler)})
        tqdm.write(json.dumps(row))

    t0 = time.time()

    def minutes():
        return spent + (time.time() - t0) / 60

    # 4. epochs over the pool, one Adam step per batch, in a seeded order per epoch
    bar = tqdm(total=total, initial=step, desc=f"train bns (NFE {args.nfe}, {n} grid steps)")
    while step < total:
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(per_epoch, generator=torch.Generator().manual_seed(args.seed * 10 ** 4 + epoch))
        i = int(order[k])
        z, lab, ref = chunk(train, i, device)
        sig = grid()
        x = bns_sample(denoiser_for(lab), z * sig[0], sig, w * mask, first=table_rows(table, lab, len(z)))
        loss = (x.float() - ref).pow(2).flatten(1).mean(1).add(1e-12).sqrt().mean()  # the ODE error
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"loss is {loss.item()} at step {step}: lower --learning_rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        set_lr(step)
        opt.step()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        out_of_time = args.max_minutes is not None and (time.time() - t0) / 60 > args.max_minutes
        if step % args.checkpointing_steps == 0 or step == total or out_of_time:
            checkpoint(final=step == total or out_of_time)
        if out_of_time:
            break
    bar.close()


if __name__ == "__main__":
    run_script(main, parse_args)
