"""How noisy is SiD's generator gradient, and does bf16 autocast change it? Two checks at one checkpoint of
training/distill_sid.py (its generator and fake score), on the same draws the generator step makes:

1. precision: on the same batch, the generator's parameter gradient under bf16 autocast against float32
   (cosine, relative error);
2. gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"): from K float32
   gradients of K independent batches of B images, the per-image B_noise = tr(Sigma_1) / |mu|^2, the batch size
   above which a larger batch stops buying progress per image. With K small, |mu|^2 is poorly estimated: the
   JSON keeps both terms, and the cosine between two batches' gradients.

    python training/sid_grad_noise.py runs/sid/checkpoint-250 --teacher weights/openmoji-32 --batch 16 --batches 32 \\
        --alpha 1.2 --out runs/sid/grad_noise.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from genkit.checks import OneLineParser, check_float, check_int
from genkit.denoiser import Denoiser
from genkit.distill import generate, generator_loss, generator_sigmas, guided_teacher
from genkit.io import atomic_write_bytes
from training.distill_sid import load_teacher, teacher_guidance
from training.utils import run_script


def noise_scale(grads: torch.Tensor, batch: int) -> dict:
    """grads (K, P): K gradients, each the mean over `batch` images. Unbiased |mu|^2 and tr(Sigma_B) (the
    covariance of one batch's gradient), and B_noise = batch tr(Sigma_B) / |mu|^2 in images."""
    k = grads.shape[0]
    sq_of_mean = grads.mean(0).pow(2).sum().item()            # E = |mu|^2 + tr(Sigma_B) / K
    mean_of_sq = grads.pow(2).sum(1).mean().item()            # E = |mu|^2 + tr(Sigma_B)
    mu2 = (k * sq_of_mean - mean_of_sq) / (k - 1)
    tr_b = mean_of_sq - mu2
    return {"mu_sq": mu2, "trace_sigma_batch": tr_b, "b_noise": batch * tr_b / mu2 if mu2 > 0 else float("inf")}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a @ b / (a.norm() * b.norm())).item()


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint-N folder of distill_sid.py (model.safetensors: generator, "
                                      "model_1.safetensors: fake score)")
    p.add_argument("--teacher", default="weights/openmoji-32")
    p.add_argument("--batch", type=int, default=16, help="images per gradient")
    p.add_argument("--batches", type=int, default=32, help="independent batches for the noise scale (>= 2)")
    p.add_argument("--alpha", type=float, default=1.2)
    p.add_argument("--tmax", type=float, default=800)
    p.add_argument("--sigma_init", type=float, default=2.5)
    p.add_argument("--teacher_guidance", type=float, default=None, help="default as distill_sid.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file (written atomically); stdout always")
    args = p.parse_args(argv)
    check_int("--batch", args.batch, 1)
    check_int("--batches", args.batches, 2)
    check_float("--alpha", args.alpha, 0.0, 10.0)
    for name in ("model.safetensors", "model_1.safetensors"):
        if not (Path(args.checkpoint) / name).is_file():
            raise ValueError(f"checkpoint={args.checkpoint!r} has no {name}: a checkpoint-N folder of "
                             "training/distill_sid.py is needed")
    return args


def main(args):

    # 1. the three networks as the generator step sees them: teacher and fake score frozen, G in train mode
    teacher_unet, scheduler, names, null, _ = load_teacher(args.teacher)
    teacher_unet.requires_grad_(False).eval()
    g, f = copy.deepcopy(teacher_unet), copy.deepcopy(teacher_unet)
    g.load_state_dict(load_file(str(Path(args.checkpoint) / "model.safetensors")))
    f.load_state_dict(load_file(str(Path(args.checkpoint) / "model_1.safetensors")))
    g.requires_grad_(True).train()
    f.eval()
    guidance = teacher_guidance(args.teacher_guidance, null)
    den = lambda net: Denoiser.from_scheduler(net, scheduler)  # noqa: E731
    teacher, G, F = guided_teacher(den(teacher_unet), guidance, null), den(g), den(f)
    res, ch = teacher_unet.config.sample_size, teacher_unet.config.in_channels

    def grad(index: int, bf16: bool) -> torch.Tensor:
        """(P,) the generator loss's parameter gradient on batch `index` (its own seeded draws)."""
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + index)
        z = torch.randn(args.batch, ch, res, res, generator=gen)
        labels = torch.randint(len(names), (args.batch,), generator=gen) if names else None
        sigma = generator_sigmas(args.batch, args.tmax, generator=gen)
        noise = torch.randn(args.batch, ch, res, res, generator=gen)
        g.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = generator_loss(teacher, F, generate(G, z, labels, args.sigma_init), sigma, noise, labels,
                                     args.alpha)
        loss.backward()
        return torch.cat([q.grad.flatten().float() for q in g.parameters() if q.grad is not None])

    # 2. precision: bf16 against float32 on the same two batches
    grads = [grad(i, False) for i in range(args.batches)]
    precision = []
    for i in range(2):
        low = grad(i, True)
        precision.append({"cosine": cosine(grads[i], low), "relative_error": ((low - grads[i]).norm()
                                                                              / grads[i].norm()).item()})
    # 3. noise: two batches' agreement, and the noise scale over all K
    result = {"checkpoint": str(args.checkpoint), "teacher": args.teacher, "batch": args.batch,
              "batches": args.batches, "alpha": args.alpha, "bf16_vs_float32_same_batch": precision,
              "cosine_between_two_batches": cosine(grads[0], grads[1]),
              **noise_scale(torch.stack(grads), args.batch)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_bytes(args.out, (text + "\n").encode())


if __name__ == "__main__":
    run_script(main, parse_args)
