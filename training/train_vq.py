"""Train a VQ image tokenizer (genkit.vq.VQTokenizer) with accelerate: 32x32 images <-> 8x8 codes.

    accelerate launch training/train_vq.py --output_dir runs/vq --simvq --codebook_size 4096
    accelerate launch training/train_vq.py --output_dir runs/fsq --quantizer fsq --fsq_levels 8,5,5,5
    ... --resume_from_checkpoint latest                     # continue an interrupted run exactly
    ... --dataset my_images/                                # a folder of images instead of OpenMoji

Per step: a seeded batch (a function of seed and step, so a resumed run sees the same data), loss =
reconstruction MSE + the quantizer's codebook/commitment loss, Adam. Every --eval_every steps the held-out
images (OpenMoji val, or every 10th image of a folder) give MSE, codebook usage (codes used / K), perplexity / K
and quantisation error, appended to metrics.jsonl. output_dir is a model folder (config + safetensors,
VQTokenizer.from_pretrained(output_dir)) rewritten atomically with metrics.json at every checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from genkit.checks import OneLineParser
from genkit.vq import VQTokenizer
from genkit.vq.fit import batch_indices, evaluate_tokenizer, to_float
from genkit.vq.tokenizer import tokenizer_loss
from training.utils import (JsonlLog, bad_flag, load_checkpoint, minutes_before, require_common, require_positive,
                            resolve_checkpoint, run_script, save_checkpoint, save_model_folder)


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--output_dir", required=True)
    a("--dataset", default="openmoji", help="'openmoji' or a folder of images (resized to --resolution)")
    a("--resolution", type=int, default=32, help="image side, a multiple of 4 (the code grid is side / 4)")
    # model
    a("--channels", default="32,64,64", help="encoder/decoder widths at full, 1/2 and 1/4 resolution")
    a("--latent_dim", type=int, default=32, help="code vector size (FSQ projects to len(levels) and back)")
    a("--quantizer", default="vq", choices=["vq", "fsq"])
    a("--codebook_size", type=int, default=1024)
    a("--estimator", default="ste", choices=["ste", "rotation"], help="gradient past the argmin")
    a("--simvq", action="store_true", help="codebook = frozen random Q times a learned linear map")
    a("--cosine", action="store_true", help="cosine distance (l2-normalised codes and inputs)")
    a("--kmeans_init", action="store_true", help="initialise the codebook by k-means on the first batch")
    a("--beta", type=float, default=0.25, help="commitment weight (codebook weight is 1)")
    a("--fsq_levels", default=None, help="FSQ levels, e.g. 8,5,5,5 (1000 codes)")
    # optimisation
    a("--train_batch_size", type=int, default=64)
    a("--max_train_steps", type=int, default=4000)
    a("--learning_rate", type=float, default=1e-3)
    a("--lr_warmup_steps", type=int, default=100)
    a("--seed", type=int, default=0)
    a("--eval_every", type=int, default=500)
    a("--checkpointing_steps", type=int, default=500)
    a("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-N folder")
    a("--max_minutes", type=float, default=None, help="stop after a checkpoint once this much time passed")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    bad = bad_flag
    require_common(args)  # NaN / inf floats, seed, learning rate, clip, log interval
    require_positive(args, "train_batch_size", "max_train_steps", "eval_every", "checkpointing_steps", "latent_dim")
    if args.resolution < 8 or args.resolution % 4:
        bad("resolution", args.resolution, "a multiple of 4, at least 8")
    if args.learning_rate <= 0:
        bad("learning_rate", args.learning_rate, "a number > 0")
    raw = args.channels
    try:
        args.channels = tuple(int(c) for c in str(raw).split(","))
    except ValueError:
        bad("channels", raw, "three comma-separated ints such as 32,64,64")
    if len(args.channels) != 3 or any(c % 8 for c in args.channels):
        bad("channels", raw, "three multiples of 8 (GroupNorm with 8 groups)")
    if args.quantizer == "fsq":
        try:
            args.fsq_levels = [int(v) for v in str(args.fsq_levels).split(",")]
        except ValueError:
            bad("fsq_levels", args.fsq_levels, "comma-separated ints >= 2 such as 8,5,5,5")
    elif args.codebook_size < 2:
        bad("codebook_size", args.codebook_size, "an int >= 2")


def load_images(args) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) uint8 (N, 3, S, S)."""
    if args.dataset == "openmoji":
        from genkit.data import OpenMojiDataset

        t = lambda split: torch.from_numpy(OpenMojiDataset(args.resolution, split).images).permute(0, 3, 1, 2)  # noqa: E731
        return t("train").contiguous(), t("val").contiguous()
    from genkit.data import ImageFolderDataset

    ds = ImageFolderDataset(args.dataset, args.resolution)
    x = torch.stack([torch.from_numpy(ds.load(i)) for i in range(len(ds))]).permute(0, 3, 1, 2).contiguous()
    held = torch.arange(len(x)) % 10 == 0
    if held.all() or not held.any():
        raise ValueError(f"--dataset={args.dataset!r} has {len(x)} images: at least 2 are needed (1 held out)")
    return x[~held], x[held]


def build(args) -> VQTokenizer:
    return VQTokenizer(image_size=args.resolution, channels=args.channels, latent_dim=args.latent_dim,
                       quantizer=args.quantizer, codebook_size=args.codebook_size, estimator=args.estimator,
                       simvq=args.simvq, cosine=args.cosine, kmeans_init=args.kmeans_init, beta=args.beta,
                       fsq_levels=args.fsq_levels, seed=args.seed)


def main(args):
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator()
    set_seed(args.seed)
    train, held = load_images(args)
    torch.manual_seed(args.seed)                                    # same encoder/decoder init for every arm
    tok = build(args)
    opt = torch.optim.Adam(tok.parameters(), lr=args.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.lr_warmup_steps))
    tok, opt, sched = accelerator.prepare(tok, opt, sched)
    model = accelerator.unwrap_model(tok)

    path, step = resolve_checkpoint(out_dir, args.resume_from_checkpoint)
    resumed = load_checkpoint(accelerator, path) if path is not None else {}
    metrics_log = JsonlLog(out_dir / "metrics.jsonl", step, accelerator.is_main_process)  # drops rows > step

    def checkpoint(row):
        if accelerator.is_main_process:  # the folder first: a kill before the checkpoint redoes both
            save_model_folder(model, out_dir, {**row, "train_images": len(train), "held_out_images": len(held),
                                         "args": {k: str(v) for k, v in vars(args).items()}})
        save_checkpoint(accelerator, out_dir, step, keep=1, state={"minutes": spent + (time.time() - t0) / 60})

    t0, row = time.time(), {}
    spent = resumed.get("minutes", minutes_before(out_dir, step))      # minutes: all runs together
    bar = tqdm(total=args.max_train_steps, initial=step, desc="train vq", disable=not accelerator.is_local_main_process)
    tok.train()
    while step < args.max_train_steps:
        idx = batch_indices(len(train), args.train_batch_size, args.seed, step, accelerator.process_index,
                            accelerator.num_processes)
        x = to_float(train[idx]).to(accelerator.device)
        loss, logs = tokenizer_loss(x, *tok(x))                      # through the (DDP) wrapper: synced grads
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"loss is {loss.item()} at step {step}: lower --learning_rate")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update()
        bar.set_postfix(mse=f"{logs['mse'].item():.4f}")
        out_of_time = args.max_minutes is not None and (time.time() - t0) / 60 > args.max_minutes
        if step % args.eval_every == 0 or step == args.max_train_steps or out_of_time:
            row = {"step": step, "train_mse": logs["mse"].item(), "minutes": spent + (time.time() - t0) / 60,
                   **{f"val_{k}": v for k, v in evaluate_tokenizer(model, held).items()}}
            metrics_log.write(row)
            if accelerator.is_main_process:
                tqdm.write(json.dumps(row))
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps or out_of_time:
            checkpoint(row)
        if out_of_time:
            break
    bar.close()
    if step == args.max_train_steps and accelerator.is_main_process:
        write_previews(model, held, out_dir)
    accelerator.wait_for_everyone()  # all ranks meet, then the gloo/nccl group is torn down before exit
    accelerator.end_training()


def write_previews(tok: VQTokenizer, held: torch.Tensor, out_dir: Path, n: int = 16, scale: int = 4) -> None:
    """reconstructions.png (n held-out originals above their reconstructions, shown `scale`x) and examples/
    (the same originals as PNG files, for the app's Tokenizer tab)."""
    import io

    from PIL import Image

    from genkit.io import atomic_write_bytes

    x = held[torch.linspace(0, len(held) - 1, min(n, len(held))).long()]
    rec = ((tok.decode(tok.encode(x)).cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    rows = torch.cat([torch.cat(list(x), dim=2), torch.cat(list(rec), dim=2)], dim=1)      # (3, 2S, nS)
    grid = Image.fromarray(rows.permute(1, 2, 0).numpy())
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(out_dir / "reconstructions.png", buf.getvalue())
    (out_dir / "examples").mkdir(exist_ok=True)
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        atomic_write_bytes(out_dir / "examples" / f"{i:02d}.png", buf.getvalue())


if __name__ == "__main__":
    run_script(main, parse_args)
