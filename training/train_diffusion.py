"""Train a pixel-space diffusion UNet (v-prediction, shifted-cosine log-SNR schedule) with accelerate.

One GPU or CPU:
    accelerate launch training/train_diffusion.py --output_dir runs/openmoji-32 --max_train_steps 20000
Many GPUs:
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 training/train_diffusion.py ...
Resume an interrupted run (model, optimizer, EMA, RNG, step):
    ... --output_dir runs/openmoji-32 --resume_from_checkpoint latest
Continue from a saved pipeline folder (e.g. the committed weights/openmoji-32):
    ... --init_from weights/openmoji-32 --output_dir runs/more --max_train_steps 40000

The output_dir is itself a pipeline folder (PixelDiffusionPipeline.from_pretrained(output_dir)), rewritten
atomically with the EMA weights at every checkpoint and at the end; checkpoint-N/ folders sit beside it.

Algorithm, per step (research/diffusion.md §1):
  1. x0 ~ data, y ~ class labels (replaced by the null class with prob. --cond_drop, for CFG)
  2. t ~ U(0, 1); lambda = schedule.logsnr(t); alpha, sigma = sqrt(sigmoid(+-lambda))
  3. x_t = alpha x0 + sigma eps; v = alpha eps - sigma x0
  4. loss = w(lambda) |v_hat - v|^2   (w = 1 for "v", alpha^2 for "eps", SiD2's sigmoid(b - lambda) alpha^2)
     optional multiscale loss on eps at 1/s-weighted average-pooled scales.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from genkit.checks import OneLineParser
from genkit.io import replace_folder_contents
from genkit.scheduler import GenkitScheduler
from genkit.schedules import SCHEDULES, Schedule
from genkit.training import (LOSS_WEIGHTINGS, JsonlLog, diffusion_loss, load_checkpoint, make_accelerator,
                             minutes_before, resolve_checkpoint, save_checkpoint)
from pipelines.pixel_diffusion import PixelDiffusionPipeline
from training.utils import bad_flag, require_common, require_positive, run_script

logger = get_logger(__name__)


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    # data
    a("--dataset", default="openmoji", help="'openmoji' (built in) or a folder of images")
    a("--resolution", type=int, default=32, help="image side in pixels")
    a("--split", default="train", choices=["train", "val", "all"], help="OpenMoji split")
    a("--class_level", default="subgroup", choices=["subgroup", "group", "none"],
      help="OpenMoji class labels for conditioning ('none': unconditional)")
    a("--cond_drop", type=float, default=0.1, help="label dropout probability (trains the null class for CFG)")
    # model
    a("--channels", default="64,128,128", help="UNet block_out_channels, one per level")
    a("--layers_per_block", type=int, default=2)
    a("--attention_levels", default="1,2", help="levels (0 = full resolution) with self-attention")
    a("--attention_head_dim", type=int, default=32)
    a("--dropout", type=float, default=0.0)
    a("--init_from", default=None, help="continue from a saved pipeline folder (weights + schedule)")
    # schedule and loss
    a("--schedule", default="shifted_cosine", choices=SCHEDULES)
    a("--base_resolution", type=int, default=32, help="d_ref of the shifted schedule (shift = 2 log(d_ref/d))")
    a("--interp_low", type=int, default=32)
    a("--interp_high", type=int, default=256)
    a("--loss_weighting", default="v", choices=LOSS_WEIGHTINGS)
    a("--sigmoid_bias", type=float, default=-2.0, help="b in w = sigmoid(b - lambda) (SiD2)")
    a("--multiscale", action="store_true", help="add the multiscale eps loss (simple diffusion)")
    a("--multiscale_min", type=int, default=8, help="smallest pooled side in the multiscale loss")
    # optimisation
    a("--train_batch_size", type=int, default=64, help="per process")
    a("--max_train_steps", type=int, default=20000, help="total optimizer steps (counted across resumes)")
    a("--learning_rate", type=float, default=2e-4)
    a("--lr_warmup_steps", type=int, default=500)
    a("--lr_scheduler", default="constant_with_warmup")
    a("--adam_weight_decay", type=float, default=0.0)
    a("--max_grad_norm", type=float, default=1.0)
    a("--gradient_accumulation_steps", type=int, default=1)
    a("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    a("--allow_tf32", action="store_true")
    a("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    a("--ema_max_decay", type=float, default=0.9999)
    a("--ema_power", type=float, default=2 / 3)
    # bookkeeping
    a("--output_dir", required=True)
    a("--seed", type=int, default=0)
    a("--checkpointing_steps", type=int, default=1000)
    a("--checkpoints_total_limit", type=int, default=2)
    a("--resume_from_checkpoint", default=None, help="a checkpoint-N path or 'latest'")
    a("--report_to", default=None, choices=[None, "tensorboard"], help="optional tracker")
    a("--log_every", type=int, default=50)
    a("--max_minutes", type=float, default=None, help="stop (after a checkpoint) when this much time passed")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    bad = bad_flag
    require_common(args)  # NaN / inf floats, seed, learning rate, clip, log interval
    require_positive(args, "resolution", "train_batch_size", "max_train_steps", "checkpointing_steps",
                     "gradient_accumulation_steps", "layers_per_block", "checkpoints_total_limit")
    require_positive(args, "attention_head_dim")
    if args.resolution % 8:
        bad("resolution", args.resolution, "a multiple of 8")
    if not 0 <= args.cond_drop < 1:
        bad("cond_drop", args.cond_drop, "a probability in [0, 1)")
    if args.learning_rate <= 0:
        bad("learning_rate", args.learning_rate, "a number > 0")
    try:
        args.channels = [int(c) for c in str(args.channels).split(",")]
    except ValueError:
        bad("channels", args.channels, "comma-separated ints such as 64,128,128")
    try:
        args.attention_levels = [int(c) for c in str(args.attention_levels).split(",") if c != ""]
    except ValueError:
        bad("attention_levels", args.attention_levels, "comma-separated level indices such as 1,2")
    if any(c % 32 for c in args.channels):
        bad("channels", args.channels, "multiples of 32 (GroupNorm with 32 groups)")
    if any(not 0 <= lv < len(args.channels) for lv in args.attention_levels):
        bad("attention_levels", args.attention_levels, f"levels in 0..{len(args.channels) - 1}")
    if any(args.channels[lv] % args.attention_head_dim for lv in args.attention_levels):
        bad("attention_head_dim", args.attention_head_dim, "a divisor of the --channels at the attention levels")
    if args.dataset != "openmoji" and not Path(args.dataset).is_dir():
        bad("dataset", args.dataset, "'openmoji' or an existing folder of images")
    if args.init_from and not (Path(args.init_from) / "model_index.json").is_file():
        bad("init_from", args.init_from, "a pipeline folder with model_index.json")


# ---------------------------------------------------------------------------------------------------

def load_data(args):
    """All images as one uint8 tensor (N, 3, H, W) plus labels and class names (small data: keep it whole)."""
    if args.dataset == "openmoji":
        from genkit.data import OpenMojiDataset

        level = "subgroup" if args.class_level == "none" else args.class_level
        ds = OpenMojiDataset(args.resolution, args.split, level=level)
        x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).contiguous()
        names = None if args.class_level == "none" else list(ds.class_names)
        return x, torch.from_numpy(ds.labels), names
    from genkit.data import ImageFolderDataset

    ds = ImageFolderDataset(args.dataset, args.resolution)
    x = torch.stack([torch.from_numpy(ds.load(i)) for i in range(len(ds))]).permute(0, 3, 1, 2).contiguous()
    return x, torch.zeros(len(ds), dtype=torch.long), None


def build_unet(args, num_classes: int | None) -> UNet2DModel:
    n = len(args.channels)
    down = tuple("AttnDownBlock2D" if i in args.attention_levels else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if (n - 1 - i) in args.attention_levels else "UpBlock2D" for i in range(n))
    return UNet2DModel(
        sample_size=args.resolution, in_channels=3, out_channels=3,
        block_out_channels=tuple(args.channels), layers_per_block=args.layers_per_block,
        down_block_types=down, up_block_types=up, attention_head_dim=args.attention_head_dim,
        dropout=args.dropout,
        num_class_embeds=None if num_classes is None else num_classes + 1,  # + the null class
    )


def save_pipeline_atomic(unet, schedule, class_names, out_dir: Path, extra: dict):
    """Write model_index.json + unet/ + scheduler/ into out_dir via a temp folder, replacing the old ones."""
    pipe = PixelDiffusionPipeline(unet=unet, scheduler=GenkitScheduler.from_schedule(schedule),
                                  class_names=class_names)

    def write(tmp):
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training_state.json").write_text(json.dumps(extra, indent=2))

    replace_folder_contents(out_dir, write, ("unet", "scheduler", "model_index.json", "training_state.json"))


def main(args):
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(out_dir, args.gradient_accumulation_steps, args.mixed_precision, args.report_to)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # 1. Data: kept whole on the device; batches drawn by a per-(step, rank) generator -> exact resume.
    images, labels, class_names = load_data(args)
    images, labels = images.to(accelerator.device), labels.to(accelerator.device)
    num_classes = None if class_names is None else len(class_names)
    logger.info(f"data: {len(images)} images at {args.resolution}px, classes: {num_classes}")

    # 2. Model, schedule, EMA
    start_step, images_before = 0, 0  # what an --init_from pipeline had already been trained on
    if args.init_from:
        unet = UNet2DModel.from_pretrained(args.init_from, subfolder="unet")
        sched = GenkitScheduler.from_pretrained(args.init_from, subfolder="scheduler")
        schedule = sched.schedule
        state = Path(args.init_from) / "training_state.json"
        prior = json.loads(state.read_text()) if state.exists() else {}
        start_step, images_before = prior.get("global_step", 0), prior.get("images_seen", 0)
        logger.info(f"continuing from pipeline {args.init_from} at step {start_step}")
    else:
        unet = build_unet(args, num_classes)
        schedule = Schedule(args.schedule, args.resolution, args.base_resolution, args.interp_low,
                            args.interp_high)
    ema = EMAModel(unet.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, power=args.ema_power,
                   model_cls=UNet2DModel, model_config=unet.config) if args.use_ema else None
    logger.info(f"UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters")

    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    # the prepared scheduler steps num_processes times per optimizer step (accelerate's convention)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    emas = {"unet": ema} if ema is not None else {}   # saved as safetensors + JSON, never pickled
    if ema is not None:
        ema.to(accelerator.device)

    # 3. Resume (model, optimizer, lr, EMA, RNG, smoothed loss, minutes): the step is the checkpoint's suffix
    global_step, resumed = start_step, {}
    path, step = resolve_checkpoint(out_dir, args.resume_from_checkpoint)
    if path is not None:
        resumed = load_checkpoint(accelerator, path, emas)
        global_step = step
        logger.info(f"resumed from {path} at step {global_step}")
    elif args.resume_from_checkpoint:
        logger.info("no checkpoint found: starting a new run")
    loss_log = JsonlLog(out_dir / "loss.jsonl", global_step, accelerator.is_main_process)  # drops rows > step
    # checkpoints from before trainer_state.json: the log's last row at or before the step
    minutes_spent = resumed.get("minutes", minutes_before(out_dir, global_step, ("loss.jsonl",)))
    loss_avg = resumed.get("loss_avg", loss_log.last().get("loss") if global_step > start_step else None)

    if accelerator.is_main_process and args.report_to:
        accelerator.init_trackers("train_diffusion", config={k: str(v) for k, v in vars(args).items()})

    def save(step):
        """The EMA pipeline folder, then checkpoint-N (both atomic). In this order a kill between the two resumes
        from the checkpoint before and rewrites the folder; the other order could leave the last step's folder
        unwritten, as a resume at the final step trains nothing."""
        if accelerator.is_main_process:
            export = UNet2DModel.from_config(accelerator.unwrap_model(unet).config)
            export.load_state_dict(accelerator.unwrap_model(unet).state_dict())
            if ema is not None:
                ema.copy_to(export.parameters())
            save_pipeline_atomic(export.to("cpu", torch.float32), schedule, class_names, out_dir, {
                "global_step": step, "images_seen": images_before + (step - start_step) * total_batch,
                "args": {k: str(v) for k, v in vars(args).items()}})
        save_checkpoint(accelerator, out_dir, step, args.checkpoints_total_limit, emas,
                        {"minutes": minutes(), "loss_avg": loss_avg})
        if accelerator.is_main_process:
            logger.info(f"saved checkpoint-{step} and the EMA pipeline in {out_dir}")

    # 4. Train
    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    bar = tqdm(initial=global_step, total=args.max_train_steps, disable=not accelerator.is_local_main_process,
               desc="train")
    t_start = time.time()

    def minutes():  # all runs of this output_dir together
        return minutes_spent + (time.time() - t_start) / 60
    unet.train()
    while global_step < args.max_train_steps:
        for micro in range(args.gradient_accumulation_steps):
            key = ((args.seed * 1_000_003 + global_step) * 64 + micro) * accelerator.num_processes
            g = torch.Generator(accelerator.device).manual_seed(key + accelerator.process_index)
            idx = torch.randint(len(images), (args.train_batch_size,), device=accelerator.device, generator=g)
            x0 = images[idx].float() / 127.5 - 1
            y = None
            if num_classes is not None:
                y = labels[idx].clone()
                drop = torch.rand(len(y), device=y.device, generator=g) < args.cond_drop
                y[drop] = num_classes  # the null class
            with accelerator.accumulate(unet):
                with accelerator.autocast():
                    loss = diffusion_loss(unet, x0, y, schedule, weighting=args.loss_weighting,
                                          sigmoid_bias=args.sigmoid_bias, multiscale=args.multiscale,
                                          multiscale_min=args.multiscale_min, generator=g)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"loss is {loss.item()} at step {global_step}: lower --learning_rate")
        if ema is not None:
            ema.step(unet.parameters())
        global_step += 1
        bar.update()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if global_step % args.log_every == 0:
            logs = {"loss": loss_avg, "lr": lr_scheduler.get_last_lr()[0]}
            bar.set_postfix(**{k: f"{v:.4g}" for k, v in logs.items()})
            accelerator.log(logs, step=global_step)
            loss_log.write({"step": global_step, "loss": loss_avg, "minutes": minutes()})
        out_of_time = args.max_minutes is not None and (time.time() - t_start) / 60 > args.max_minutes
        if global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps or out_of_time:
            save(global_step)
        if out_of_time:
            logger.info(f"--max_minutes={args.max_minutes} reached at step {global_step}; resume to continue")
            break
    bar.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main, parse_args)
