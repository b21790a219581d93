"""Train the multimodal AR model (genkit.mm.MultimodalAR) on OpenMoji names and images, both directions.

    accelerate launch training/train_mm.py --output_dir runs/mm --max_train_steps 20000
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 training/train_mm.py ...
    ... --resume_from_checkpoint latest                      # exact resume (model, optimizer, EMA, step)
    ... --positions rope1d --output_dir runs/mm-rope1d       # an ablation arm: same data, seeds, budget

Each example is an OpenMoji train image with its name (the emoji package's English name, e.g. "red apple"),
as caption -> image (probability --t2i_fraction, default 0.5) or image -> caption (seeded by step and rank, so a
resumed or re-run job sees the same batches; the val losses always use 0.5). Loss: text cross-entropy +
--image_loss_weight x the per-patch diffusion loss (genkit.mm.model). Every --eval_every steps the val split
gives the same two losses, appended to metrics.jsonl. output_dir is a MultimodalARPipeline folder (EMA weights),
rewritten atomically at each checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from genkit.checks import OneLineParser
from genkit.io import replace_folder_contents
from genkit.mm import IMAGE_HEADS, MASK_SCHEDULES, ORDERS, SCHEMES, MultimodalAR
from genkit.mm.evaluate import make_examples, val_losses
from genkit.vq.fit import batch_indices
from pipelines.multimodal import MultimodalARPipeline
from training.utils import (JsonlLog, bad_flag, load_checkpoint, minutes_before, require_common, require_positive,
                            resolve_checkpoint, run_script, save_checkpoint)


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--output_dir", required=True)
    # model
    a("--d_model", type=int, default=256)
    a("--n_layers", type=int, default=6)
    a("--n_heads", type=int, default=4)
    a("--dropout", type=float, default=0.0)
    a("--positions", default="tie_v2", choices=SCHEMES, help="RoPE-Tie-v2 (default) or an ablation")
    a("--rope_split", default=None, choices=["interleaved", "chunked"], help="default: chunked for mrope only")
    a("--image_head", default="diffusion", choices=IMAGE_HEADS, help="'mse' is the collapsing ablation")
    a("--order", default="random", choices=ORDERS, help="MAR random order (bidirectional) or causal raster")
    a("--mask_schedule", default="mar", choices=MASK_SCHEDULES,
      help="random order: how many patches are hidden in training. 'mar': 70-100%% (MAR); 'cosine': "
           "cos(pi/2 u), u ~ U(0,1) (MaskGIT), every fraction sampling visits; fine-tuning a 'mar' model with "
           "'cosine' teaches it to use the patches it has already drawn")
    a("--head_width", type=int, default=256)
    a("--head_depth", type=int, default=3)
    a("--diffusion_repeats", type=int, default=4, help="noise draws per patch per step")
    a("--image_loss_weight", type=float, default=1.0, help="lambda in text CE + lambda * image loss")
    a("--cond_drop", type=float, default=0.1, help="caption dropout (classifier-free guidance)")
    a("--t2i_fraction", type=float, default=0.5,
      help="share of examples in the caption -> image direction (the only ones with an image loss)")
    a("--vq_tokenizer", default=None, metavar="DIR",
      help="the discrete arm: read and write this VQ tokenizer's codes instead of pixel patches")
    # optimisation
    a("--train_batch_size", type=int, default=64, help="per process")
    a("--max_train_steps", type=int, default=20000)
    a("--learning_rate", type=float, default=3e-4)
    a("--lr_warmup_steps", type=int, default=500)
    a("--lr_decay_steps", type=int, default=0,
      help="decay the learning rate linearly to 0 over the last N of --max_train_steps (warmup-stable-decay); "
           "0 keeps it constant")
    a("--weight_decay", type=float, default=0.02)
    a("--max_grad_norm", type=float, default=1.0)
    a("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    a("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    a("--ema_max_decay", type=float, default=0.9999)
    # bookkeeping
    a("--seed", type=int, default=0)
    a("--eval_every", type=int, default=500)
    a("--checkpointing_steps", type=int, default=1000)
    a("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-N folder")
    a("--max_minutes", type=float, default=None, help="stop after a checkpoint once this much time passed")
    a("--limit_train", type=int, default=None, help="use only the first N train images (tests, quick runs)")
    args = p.parse_args(argv)
    require_common(args)  # NaN / inf floats, seed, learning rate, clip, log interval
    require_positive(args, "d_model", "n_layers", "n_heads", "train_batch_size", "max_train_steps",
                     "eval_every", "checkpointing_steps", "diffusion_repeats")
    if args.learning_rate <= 0:
        bad_flag("learning_rate", args.learning_rate, "a number > 0")
    if not 0 <= args.lr_decay_steps <= args.max_train_steps:
        bad_flag("lr_decay_steps", args.lr_decay_steps, f"0 to --max_train_steps ({args.max_train_steps})")
    if not 0 <= args.cond_drop < 1:
        bad_flag("cond_drop", args.cond_drop, "a probability in [0, 1)")
    if not 0 < args.t2i_fraction < 1:
        bad_flag("t2i_fraction", args.t2i_fraction, "a probability in (0, 1): both directions stay in the data")
    if args.d_model % args.n_heads or (args.d_model // args.n_heads) % 4:
        bad_flag("d_model", args.d_model, f"a multiple of 4 * n_heads ({4 * args.n_heads}): 2-axis rotary pairs")
    return args


def lr_factor(s: int, args, world: int) -> float:
    """Warmup-stable-decay: linear warmup, constant, then linear to 0 over the last lr_decay_steps. `s` counts
    scheduler steps, which accelerate takes once per process per optimizer step."""
    step = s / world
    warm = min(1.0, (step + 1 / world) / args.lr_warmup_steps)
    if args.lr_decay_steps <= 0:
        return warm
    return warm * min(1.0, max(0.0, (args.max_train_steps - step) / args.lr_decay_steps))


def load_split(split: str, limit: int | None = None):
    """uint8 images (N, 3, 32, 32) and name byte-lists of an OpenMoji split."""
    from genkit.data import OpenMojiDataset

    ds = OpenMojiDataset(32, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    images = torch.from_numpy(ds.images[:n]).permute(0, 3, 1, 2).contiguous()
    return images, [list(c.encode("utf-8")) for c in ds.captions[:n]]


def build(args, tokenizer=None) -> MultimodalAR:
    return MultimodalAR(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, dropout=args.dropout,
                        positions=args.positions, rope_split=args.rope_split, image_head=args.image_head,
                        order=args.order, mask_schedule=args.mask_schedule, head_width=args.head_width,
                        head_depth=args.head_depth,
                        diffusion_repeats=args.diffusion_repeats, image_loss_weight=args.image_loss_weight,
                        cond_drop=args.cond_drop, image_tokens="codes" if tokenizer is not None else "patches",
                        codebook_size=tokenizer.codebook_size if tokenizer is not None else 1024)


def load_tokenizer(path: str | None):
    if path is None:
        return None
    from genkit.vq import VQTokenizer

    if not (Path(path) / "config.json").is_file():
        bad_flag("vq_tokenizer", path, "a VQTokenizer folder (config.json + safetensors), e.g. weights/openmoji-vq")
    return VQTokenizer.from_pretrained(path).eval()


@torch.no_grad()
def to_codes(tokenizer, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([tokenizer.encode(images[i:i + batch]).cpu() for i in range(0, len(images), batch)])


def save_pipeline(model, out_dir: Path, metrics: dict, tokenizer=None) -> None:
    pipe = MultimodalARPipeline(model=model, tokenizer=tokenizer)

    def write(tmp):
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    names = ("model", "model_index.json", "metrics.json") + (("tokenizer",) if tokenizer is not None else ())
    replace_folder_contents(out_dir, write, names)


def main(args):
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    train_x, train_c = load_split("train", args.limit_train)
    val_x, val_c = load_split("val")
    tokenizer = load_tokenizer(args.vq_tokenizer)
    if tokenizer is not None:  # the discrete arm sees only codes
        train_x, val_x = to_codes(tokenizer, train_x), to_codes(tokenizer, val_x)
    torch.manual_seed(args.seed)
    model = build(args, tokenizer)
    ema = EMAModel(model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, power=2 / 3,
                   model_cls=MultimodalAR, model_config=model.config) if args.use_ema else None
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.95),
                            weight_decay=args.weight_decay)
    world = accelerator.num_processes
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, args=args, world=world))
    model, opt, sched = accelerator.prepare(model, opt, sched)
    emas = {"model": ema} if ema is not None else {}   # saved as safetensors + JSON, never pickled
    if ema is not None:
        ema.to(accelerator.device)
    raw = accelerator.unwrap_model(model)
    path, step = resolve_checkpoint(out_dir, args.resume_from_checkpoint)
    resumed = load_checkpoint(accelerator, path, emas) if path is not None else {}
    metrics_log = JsonlLog(out_dir / "metrics.jsonl", step, accelerator.is_main_process)  # drops rows > step

    def export():
        m = build(args, tokenizer)
        m.load_state_dict(raw.state_dict())
        if ema is not None:
            ema.copy_to(m.parameters())
        return m.to("cpu").float().eval()

    t0, row = time.time(), {}
    spent = resumed.get("minutes", minutes_before(out_dir, step))      # minutes: all runs together
    bar = tqdm(total=args.max_train_steps, initial=step, desc="train mm", disable=not accelerator.is_local_main_process)
    model.train()
    while step < args.max_train_steps:
        g = torch.Generator().manual_seed((args.seed * 1_000_003 + step) * world + accelerator.process_index)
        idx = batch_indices(len(train_x), args.train_batch_size, args.seed, step, accelerator.process_index, world)
        x, caps, first = make_examples(train_x, train_c, idx, g, args.t2i_fraction)
        with accelerator.autocast():
            loss, logs = model(x, caps, first, generator=g)         # forward = the loss (through DDP: synced)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"loss is {loss.item()} at step {step}: lower --learning_rate")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(model.parameters())
        step += 1
        bar.update()
        bar.set_postfix(text=f"{logs['text_loss'].item():.3f}", image=f"{logs['image_loss'].item():.3f}")
        out_of_time = args.max_minutes is not None and (time.time() - t0) / 60 > args.max_minutes
        if step % args.eval_every == 0 or step == args.max_train_steps or out_of_time:
            row = {"step": step, "minutes": spent + (time.time() - t0) / 60, "text_loss": logs["text_loss"].item(),
                   "image_loss": logs["image_loss"].item()}
            if accelerator.is_main_process:
                row.update(val_losses(export(), val_x, val_c))
                metrics_log.write(row)
                tqdm.write(json.dumps(row))
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps or out_of_time:
            if accelerator.is_main_process:  # the folder first: a kill before the checkpoint redoes both
                save_pipeline(export(), out_dir, {**row, "train_images": len(train_x), "val_images": len(val_x),
                                                  "args": {k: str(v) for k, v in vars(args).items()}}, tokenizer)
            save_checkpoint(accelerator, out_dir, step, keep=1, emas=emas,
                            state={"minutes": spent + (time.time() - t0) / 60})
        if out_of_time:
            break
    bar.close()
    accelerator.wait_for_everyone()  # all ranks meet, then the gloo/nccl group is torn down before exit
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main, parse_args)
