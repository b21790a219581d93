"""SiD: distil a diffusion teacher into a one-step generator, data-free (genkit/distill/sid.py has the math).

One GPU or CPU:
    accelerate launch training/distill_sid.py --teacher weights/openmoji-32 --output_dir runs/sid
Many GPUs (DDP; torchrun --nproc_per_node 2 does the same with gloo ranks on a CPU box):
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 training/distill_sid.py \\
        --teacher weights/openmoji-32 --output_dir runs/sid --train_batch_size 32   # + the recipe flags below
Resume (generator, fake score, EMA, both optimizers, step, losses, minutes; exact on one device):
    ... --output_dir runs/sid --resume_from_checkpoint latest
Continue a shipped generator in a new run folder (its own run folder gone; fake score and optimizers start afresh):
    ... --output_dir runs/sid-b --init_generator weights/openmoji-32-sid
A guided class-conditional teacher (genkit's): the defaults are the paper's, and on weights/openmoji-32 they
collapse the generator to about one image per class; the recipe of the shipped weights/openmoji-32-sid (its card
has the measurements) guides only at low noise and lets the fake score keep up:
    ... --teacher_guidance_sigma_max 1.0 --fake_score_steps 4 --alpha 1.0 --ema_halflife_images 5000

The teacher is any pipeline folder genkit can load: a genkit PixelDiffusionPipeline (v prediction, log-SNR time)
or a plain diffusers DDPM folder (unet/ + a DDPM-family scheduler: eps or v, 1000 discrete steps). Generator and
fake score start as copies of it. Class-conditional teachers: each image gets a uniformly drawn class and the
generator learns to match the teacher *as users sample it*: classifier-free guided with --teacher_guidance
(default 2, the scale genkit samples and evaluates the teacher at), so its samples carry that guidance built in.

Per step (global batch B = train_batch_size x processes x gradient_accumulation_steps generator images):
  1. fake score: Adam step on the EDM denoising loss of fresh generator images (G frozen, no grad);
     --fake_score_steps K of them, each on its own images
  2. generator:  Adam step on (L2 - alpha L1)/omega through the frozen teacher and fake score
     (gradient accumulation: every micro-batch's forward and backward run inside no_sync except the last,
     so DDP all-reduces the summed gradient once; non-finite gradients are zeroed, as the reference code)
  3. EMA of the generator (half-life --ema_halflife_images generator images, ramped up with the steps unless
     --no-ema_rampup, for a warm start)
Every --fd_every_images: FD-OpenMoji of the EMA generator on the fixed seeds 0..fd_num-1 (class = seed mod K),
into metrics.jsonl; with --fd_teacher_features also the FD to the teacher's own samples on those seeds
(fd_teacher: how faithfully it distils, which moves when FD to data is flat), the within-class spread of the
same images' features (spread: near 0 when the generator draws one image per class whatever its noise; the
teacher's samples have about 65 at 32 px) and the shipped classifier's accuracy on the asked classes
(class_accuracy; the teacher at guidance 2 scores about 0.93). output_dir is itself a
OneStepPipeline folder (the EMA generator), rewritten atomically at every checkpoint; checkpoint-N/ folders hold
generator, fake score, EMA, optimizers and trainer_state.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from genkit.checks import OneLineParser, check_float, check_int
from genkit.denoiser import Denoiser
from genkit.distill import (fake_score_loss, fake_score_sigmas, generate, generator_loss, generator_sigmas,
                            guided_teacher)
from genkit.io import replace_folder_contents
from genkit.scheduler import GenkitScheduler
from genkit.training import (JsonlLog, load_checkpoint, make_accelerator, minutes_before, resolve_checkpoint,
                             save_checkpoint)
from pipelines.one_step import OneStepPipeline
from training.utils import bad_flag, run_script

logger = get_logger(__name__)


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--teacher", default="weights/openmoji-32", help="teacher pipeline folder (genkit or diffusers DDPM)")
    a("--output_dir", required=True, help="run folder: the EMA generator as a OneStepPipeline + checkpoint-N/")
    # SiD
    a("--alpha", type=float, default=1.2, help="alpha in (L2 - alpha L1)/omega (paper: 1.0 or 1.2)")
    a("--tmax", type=float, default=800, help="generator-loss sigmas: u ~ U[0, tmax/1000] through the Karras map")
    a("--sigma_init", type=float, default=2.5, help="the generator is D(sigma_init z; sigma_init) at init")
    a("--init_generator", default=None, metavar="DIR",
      help="start the generator (and its EMA) from this one-step folder, e.g. weights/openmoji-32-sid, instead of "
           "the teacher: a new run that continues a shipped generator when its run folder is gone (the fake score "
           "and optimizers start afresh; a checkpoint to resume from wins over this)")
    a("--teacher_guidance", type=float, default=None,
      help="classifier-free guidance of the teacher the generator matches (default 2 for a class-conditional "
           "genkit teacher, 1 otherwise)")
    a("--teacher_guidance_sigma_max", type=float, default=None, metavar="SIGMA",
      help="guide the teacher only at noise levels sigma <= SIGMA in the generator loss, plain conditional above "
           "(a guidance interval; default: guided at every sigma, as users sample it). Guided at high noise, the "
           "teacher's score asks for less than no spread within a class, and the generator can collapse to one "
           "image per class (genkit/distill/sid.py, guided_teacher; the card of weights/openmoji-32-sid "
           "measures it)")
    # optimisation
    a("--train_batch_size", type=int, default=16, help="generator images per process per micro-step")
    a("--gradient_accumulation_steps", type=int, default=1)
    a("--learning_rate", type=float, default=1e-5, help="Adam lr of generator and fake score (paper: 1e-5)")
    a("--fake_score_learning_rate", type=float, default=None, help="Adam lr of the fake score alone (default: "
      "--learning_rate, as the paper); a larger one lets it follow the moving generator more closely (DMD2's "
      "two time-scale update)")
    a("--fake_score_steps", type=int, default=1, help="fake-score Adam steps per generator step, each on fresh "
      "generator images (DMD2's two time-scale update: 5); costs about 0.4 generator steps each")
    a("--adam_eps", type=float, default=None, help="default 1e-8, 1e-6 under fp16 (as the reference)")
    a("--max_grad_norm", type=float, default=0.0, help="clip gradients to this norm (0: off, as the reference)")
    a("--ema_halflife_images", type=float, default=500_000, help="EMA half-life in generator images (paper 0.5M); "
      "ramped up: diffusers' EMAModel caps the decay at (1 + s)/(10 + s) at step s, a half-life of about 8%% of the "
      "steps so far (EDM's ema_rampup_ratio 0.05 is the same idea), so at batch 8 a half-life of 5,000 images "
      "takes over only after about 8,000 steps")
    a("--ema_rampup", action=argparse.BooleanOptionalAction, default=True, help="ramp the EMA half-life up with "
      "the steps (above); --no-ema_rampup uses the full half-life from the first step, for a warm start "
      "(--init_generator or a resumed run), whose weights are already worth averaging")
    a("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    a("--max_train_images", type=int, default=10_000_000, help="stop after this many generator images")
    # bookkeeping
    a("--seed", type=int, default=0)
    a("--checkpointing_steps", type=int, default=100)
    a("--checkpoints_total_limit", type=int, default=2)
    a("--resume_from_checkpoint", default=None, help="a checkpoint-N path or 'latest'")
    a("--log_every", type=int, default=10, help="steps between loss.jsonl rows")
    a("--fd_every_images", type=int, default=20_000, help="FD-OpenMoji of the EMA generator every this many "
      "generator images (0: never; needs a 32 or 64 px OpenMoji teacher)")
    a("--fd_num", type=int, default=1000, help="fixed seeds 0..fd_num-1 for that FD")
    a("--features_model", default="weights/openmoji-features")
    a("--fd_teacher_features", default=None, metavar="NPY", help="features (fd_num, d) of the teacher's samples "
      "on seeds 0..fd_num-1, class cycle, e.g. the teacher_<solver>@<nfe>.npy that `genkit bench samplers "
      "--teacher-nfe N --seed 0 --num fd_num` caches beside its JSON: adds fd_teacher to metrics.jsonl")
    a("--max_minutes", type=float, default=None, help="stop (after a checkpoint) when this much time passed")
    a("--dump_rank_params", action="store_true", help=argparse.SUPPRESS)  # tests: every rank's final weights
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    check_float("--alpha", args.alpha, 0.0, 10.0)
    check_float("--tmax", args.tmax, 1.0, 1000.0)
    check_float("--sigma_init", args.sigma_init, 1e-3, 1e3)
    if args.teacher_guidance is not None:
        check_float("--teacher_guidance", args.teacher_guidance, 0.0, 20.0)
    if args.teacher_guidance_sigma_max is not None:
        check_float("--teacher_guidance_sigma_max", args.teacher_guidance_sigma_max, 0.0, 1e4)
    check_float("--learning_rate", args.learning_rate, 1e-12, 1.0)
    if args.fake_score_learning_rate is not None:
        check_float("--fake_score_learning_rate", args.fake_score_learning_rate, 1e-12, 1.0)
    if args.adam_eps is not None:
        check_float("--adam_eps", args.adam_eps, 1e-12, 1.0)
    check_float("--max_grad_norm", args.max_grad_norm, 0.0)
    check_float("--ema_halflife_images", args.ema_halflife_images, 1.0)
    for name in ("train_batch_size", "gradient_accumulation_steps", "max_train_images", "checkpointing_steps",
                 "checkpoints_total_limit", "log_every", "fd_num"):
        check_int(f"--{name}", getattr(args, name), 1)
    check_int("--fd_every_images", args.fd_every_images, 0)
    check_int("--fake_score_steps", args.fake_score_steps, 1, 16)
    check_int("--gradient_accumulation_steps", args.gradient_accumulation_steps, 1, 1024)
    check_int("--seed", args.seed, 0, 2**63 - 1)
    if args.max_minutes is not None:
        check_float("--max_minutes", args.max_minutes, 0.0)
    if args.fd_teacher_features is not None and (not Path(args.fd_teacher_features).is_file()
                                                 or not args.fd_teacher_features.endswith(".npy")):
        bad_flag("fd_teacher_features", args.fd_teacher_features, "an existing .npy file of teacher-sample features")
    if args.init_generator is not None:
        index = Path(args.init_generator) / "model_index.json"
        config = json.loads(index.read_text()) if index.is_file() else {}
        if config.get("_class_name") != "OneStepPipeline":
            bad_flag("init_generator", args.init_generator, "a one-step generator folder (OneStepPipeline), "
                     "e.g. weights/openmoji-32-sid")
        if config.get("sigma_init") != args.sigma_init:
            bad_flag("init_generator", args.init_generator, f"a generator made with --sigma_init {args.sigma_init} "
                     f"(it was made with {config.get('sigma_init')})")
    if not (Path(args.teacher) / "model_index.json").is_file():
        bad_flag("teacher", args.teacher, "a pipeline folder with model_index.json, unet/ and scheduler/")


# -- teacher -------------------------------------------------------------------------------------------------

def load_teacher(path: str):
    """(unet, scheduler, class_names, null_label) from a genkit or plain diffusers pipeline folder."""
    index = json.loads((Path(path) / "model_index.json").read_text())
    unet = UNet2DModel.from_pretrained(path, subfolder="unet", local_files_only=True)
    if index.get("scheduler", [None, None])[1] == "GenkitScheduler":
        scheduler = GenkitScheduler.from_pretrained(path, subfolder="scheduler")
        genkit_model = True
    else:  # any DDPM-family scheduler config: betas, prediction type; discrete time
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        genkit_model = False
    n = unet.config.num_class_embeds
    if n is None:
        return unet, scheduler, None, None, genkit_model
    names = index.get("class_names") or [str(i) for i in range(n - 1 if genkit_model else n)]
    null = n - 1 if genkit_model else None      # genkit: the last embedding is the null class (CFG)
    return unet, scheduler, names, null, genkit_model


def teacher_guidance(flag: float | None, null: int | None) -> float:
    """--teacher_guidance, or its default: 2 for a class-conditional genkit teacher (it has a null class), else 1."""
    return flag if flag is not None else (2.0 if null is not None else 1.0)


def save_generator(pipe: OneStepPipeline, out_dir: Path, extra: dict) -> None:
    """The EMA generator's OneStepPipeline as a folder (model_index.json, unet/, scheduler/: the teacher's
    GenkitScheduler, or load_teacher's plain DDPM config), replaced atomically."""
    def write(tmp):
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training_state.json").write_text(json.dumps(extra, indent=2) + "\n")

    replace_folder_contents(out_dir, write, ("unet", "scheduler", "model_index.json", "training_state.json"))


# -- FD of the EMA generator ---------------------------------------------------------------------------------

class FixedSeedFD:
    """Scores of a generator on seeds 0..n-1 (class = seed mod K): the same images whatever the step. One pass
    of the feature network gives FD to data, FD to the teacher's samples and the within-class spread; its
    classifier head gives class accuracy."""

    def __init__(self, args, resolution: int, class_names: list[str] | None, device):
        from genkit.commands.evaluate import load_classifier
        from genkit.metrics import ReferenceStats, load_openmoji_features

        net, fid = load_openmoji_features(args.features_model)
        self.net = net.to(device).eval()
        self.ref = ReferenceStats.load(Path(args.features_model) / "refs" / f"openmoji-train-{resolution}.npz")
        self.ref.check(fid, resolution)
        self.classifier = load_classifier(class_names, args.features_model, device)   # None: other classes
        self.n, self.num_classes, self.device = args.fd_num, len(class_names or []) or None, device
        self.teacher = None                                   # (mu, sigma) of the teacher's samples' features
        if args.fd_teacher_features is not None:
            f = np.load(args.fd_teacher_features).astype(np.float64)
            if f.ndim != 2 or len(f) != self.n:
                raise ValueError(f"--fd_teacher_features={args.fd_teacher_features!r} holds an array of shape "
                                 f"{f.shape}: features of --fd_num={self.n} teacher samples, (n, d), are needed")
            self.teacher = f.mean(0), np.cov(f, rowvar=False)

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> dict:
        """uint8 (n, 3, H, W), image k from seed k -> fd (to data), fd_teacher (to the teacher's samples),
        spread (near 0 when the generator ignores its noise), class_accuracy; None where not measurable."""
        from genkit.commands.evaluate import batched_features
        from genkit.metrics import frechet_distance, within_class_spread
        from genkit.metrics.bootstrap import fd_to

        f = batched_features(self.net, images).numpy()                       # (n, d) float64
        k = self.num_classes
        labels = np.arange(len(f)) % k if k else None
        return {"fd": fd_to(f, self.ref),
                "fd_teacher": frechet_distance(f.mean(0), np.cov(f, rowvar=False), *self.teacher)
                if self.teacher is not None else None,
                "spread": within_class_spread(f, labels) if k and len(f) >= 2 * k else None,
                "class_accuracy": float((self.classifier.predict(images).cpu().numpy() == labels).mean())
                if self.classifier is not None and k else None}

    @torch.no_grad()
    def __call__(self, pipe) -> dict:
        from pipelines.pixel_diffusion import to_uint8

        images = []
        for i in range(0, self.n, 100):
            seeds = list(range(i, min(i + 100, self.n)))
            labels = [s % self.num_classes for s in seeds] if self.num_classes else None
            x = pipe(batch_size=len(seeds), class_labels=labels, output_type="latent",
                     generator=[torch.Generator(self.device).manual_seed(s) for s in seeds]).images
            images.append(to_uint8(x))
        return self.scores(torch.cat(images))


# -- main ----------------------------------------------------------------------------------------------------

def clean_grads(params, max_norm: float, finite_fix: bool) -> None:
    """Non-finite gradient entries -> 0 / +-1e5 (the reference's nan_to_num), then optional norm clipping."""
    params = [p for p in params if p.grad is not None]
    if finite_fix:
        for p in params:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def main(args):
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(out_dir, 1, args.mixed_precision)  # accumulation is done here, explicitly
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    set_seed(args.seed)
    device, world, A = accelerator.device, accelerator.num_processes, args.gradient_accumulation_steps
    B = args.train_batch_size * world * A                                   # generator images per step

    # 1. Teacher (frozen), fake score and generator (copies of it), EMA
    teacher_unet, scheduler, class_names, null, genkit_model = load_teacher(args.teacher)
    num_classes = len(class_names) if class_names else None
    guidance = teacher_guidance(args.teacher_guidance, null)
    if guidance != 1.0 and null is None:
        bad_flag("teacher_guidance", guidance, "1 for this teacher (guidance needs a genkit class-conditional "
                 "model with a null class)")
    teacher_unet.requires_grad_(False).eval().to(device)
    g_unet = copy.deepcopy(teacher_unet).requires_grad_(True).train()
    if args.init_generator is not None:  # same architecture as the teacher, or a clear error
        init = UNet2DModel.from_pretrained(Path(args.init_generator) / "unet")
        try:
            g_unet.load_state_dict(init.state_dict())
        except RuntimeError as e:
            bad_flag("init_generator", args.init_generator, f"a generator of the teacher's architecture ({e})")
        logger.info(f"generator starts from {args.init_generator}")
    f_unet = copy.deepcopy(teacher_unet).requires_grad_(True).train()
    decay = 0.5 ** (B / args.ema_halflife_images)
    min_decay = 0.0 if args.ema_rampup else decay   # diffusers' EMAModel: the ramp cannot go below min_decay
    ema = EMAModel(g_unet.parameters(), decay=decay, min_decay=min_decay, use_ema_warmup=False,
                   model_cls=UNet2DModel, model_config=g_unet.config)
    eps = args.adam_eps or (1e-6 if args.mixed_precision == "fp16" else 1e-8)
    opt_g = torch.optim.Adam(g_unet.parameters(), lr=args.learning_rate, betas=(0.0, 0.999), eps=eps)
    lr_f = args.fake_score_learning_rate or args.learning_rate
    opt_f = torch.optim.Adam(f_unet.parameters(), lr=lr_f, betas=(0.0, 0.999), eps=eps)
    g_ddp, f_ddp, opt_g, opt_f = accelerator.prepare(g_unet, f_unet, opt_g, opt_f)
    g_raw, f_raw = accelerator.unwrap_model(g_ddp), accelerator.unwrap_model(f_ddp)
    ema.to(device)
    emas = {"generator": ema}
    den = lambda net: Denoiser.from_scheduler(net, scheduler)  # noqa: E731
    teacher = guided_teacher(den(teacher_unet), guidance, null, args.teacher_guidance_sigma_max)
    G_train, G_frozen, F_train, F_frozen = den(g_ddp), den(g_raw), den(f_ddp), den(f_raw)
    logger.info(f"teacher {args.teacher}: {sum(p.numel() for p in teacher_unet.parameters()) / 1e6:.2f}M "
                f"parameters, classes {num_classes}, guidance {guidance}; {world} process(es), {B} images/step")

    # 2. Resume: nets, optimizers, EMA, RNG; step from the folder name; losses and minutes from trainer_state
    step, resumed = 0, {}
    path, ckpt_step = resolve_checkpoint(out_dir, args.resume_from_checkpoint)
    if path is not None:
        resumed = load_checkpoint(accelerator, path, emas)
        ema.decay, ema.min_decay = decay, min_decay   # the flags win: a resumed run may change them
        for opt, lr in ((opt_g, args.learning_rate), (opt_f, lr_f)):
            for group in opt.param_groups:
                group["lr"] = lr
        step = ckpt_step
        logger.info(f"resumed from {path} at step {step}")
    elif args.resume_from_checkpoint:
        logger.info("no checkpoint found: starting a new run")
    main_proc = accelerator.is_main_process
    keep = step if path is not None else -1                              # a new run starts its logs afresh
    loss_log = JsonlLog(out_dir / "loss.jsonl", keep, main_proc)          # rows past the step are dropped
    metrics_log = JsonlLog(out_dir / "metrics.jsonl", keep, main_proc)
    minutes_spent = resumed.get("minutes", minutes_before(out_dir, step))
    avg = resumed.get("avg", {})                                         # smoothed losses
    images_seen = resumed.get("images_seen", step * B)
    t_start = time.time()

    def minutes():
        return minutes_spent + (time.time() - t_start) / 60

    res = teacher_unet.config.sample_size
    fd = FixedSeedFD(args, res, class_names, device) if args.fd_every_images and main_proc else None

    def ema_pipeline():
        export = copy.deepcopy(g_raw).float()
        ema.copy_to(export.parameters())
        return OneStepPipeline(unet=export.eval(), scheduler=scheduler, class_names=class_names,
                               sigma_init=args.sigma_init, teacher_guidance=guidance,
                               teacher_guidance_sigma_max=args.teacher_guidance_sigma_max)

    def evaluate():
        """FD of the EMA generator into metrics.jsonl (main process; the others wait)."""
        if fd is not None:
            pipe = ema_pipeline()
            pipe.set_progress_bar_config(disable=True)
            scores = fd(pipe)                                         # minutes below include this pass
            row = {"step": step, "images": images_seen, "minutes": round(minutes(), 3), "fd_n": args.fd_num}
            row.update({k: round(v, 4) for k, v in scores.items() if v is not None})
            metrics_log.write(row)
            tqdm.write(json.dumps(row))
        accelerator.wait_for_everyone()

    def save():
        state = {"minutes": minutes(), "avg": avg, "images_seen": images_seen}
        if main_proc:  # the generator folder first: a kill before the checkpoint redoes both (see train_diffusion)
            save_generator(ema_pipeline().to("cpu"), out_dir, {
                "step": step, "images_seen": images_seen, "minutes": round(minutes(), 3), "teacher": args.teacher,
                "teacher_guidance": guidance, "args": {k: str(v) for k, v in vars(args).items()}})
        save_checkpoint(accelerator, out_dir, step, args.checkpoints_total_limit, emas, state)
        if main_proc:
            logger.info(f"saved checkpoint-{step} and the EMA generator in {out_dir}")

    def draw(micro: int, phase: int):
        """z, labels, sigma, noise of one micro-batch, keyed by (seed, step, phase, j) with j = micro x world + rank
        the micro-batch's index in the global batch: exact resume, and the same global batch for any split into
        processes x accumulation steps (2 ranks x 1 == 1 process x 2 accumulation steps)."""
        j = micro * world + accelerator.process_index
        key = ((args.seed * 1_000_003 + step) * 2 + phase) * 65_536 + j
        gen = torch.Generator(device).manual_seed(key)
        b = args.train_batch_size
        shape = (b, teacher_unet.config.in_channels, res, res)
        z = torch.randn(shape, generator=gen, device=device)
        labels = torch.randint(num_classes, (b,), generator=gen, device=device) if num_classes else None
        if phase == 0:
            sigma = fake_score_sigmas(b, generator=gen, device=device)
        else:
            sigma = generator_sigmas(b, args.tmax, generator=gen, device=device)
        noise = torch.randn(shape, generator=gen, device=device)
        return z, labels, sigma, noise

    if step == 0:
        evaluate()                                                          # the curve's first point: G = init

    # 3. Distil
    total_steps = math.ceil(args.max_train_images / B)
    bar = tqdm(initial=step, total=total_steps, disable=not accelerator.is_local_main_process, desc="sid",
               unit="step")
    fix = args.mixed_precision != "fp16"          # under fp16 the grad scaler skips non-finite steps itself
    while step < total_steps:
        stats = {"loss_fake": 0.0, "loss_gen": 0.0, "omega": 0.0, "dropped": 0}
        # 3a. fake score on fresh generator images (G frozen), K Adam steps
        g_raw.eval()
        K = args.fake_score_steps
        for k in range(K):
            for micro in range(A):
                z, labels, sigma, noise = draw(k * A + micro, 0)        # k = 0: the draws of a K = 1 run
                sync = contextlib.nullcontext() if micro == A - 1 else accelerator.no_sync(f_ddp)
                with sync:
                    with accelerator.autocast():
                        with torch.no_grad():
                            x_g = generate(G_frozen, z, labels, args.sigma_init)
                        loss, s = fake_score_loss(F_train, x_g, sigma, noise, labels)
                    accelerator.backward(loss / A)
                stats["loss_fake"] += loss.item() / (A * K)
                stats["dropped"] += s["dropped"]
            clean_grads(f_ddp.parameters(), args.max_grad_norm, fix)
            opt_f.step()
            opt_f.zero_grad(set_to_none=True)
        # 3b. generator through the frozen teacher and fake score
        g_raw.train()
        f_raw.requires_grad_(False)
        for micro in range(A):
            z, labels, sigma, noise = draw(micro, 1)
            sync = contextlib.nullcontext() if micro == A - 1 else accelerator.no_sync(g_ddp)
            with sync:                                   # forward AND backward inside: DDP syncs on the last only
                with accelerator.autocast():
                    x_g = generate(G_train, z, labels, args.sigma_init)
                    loss, s = generator_loss(teacher, F_frozen, x_g, sigma, noise, labels, args.alpha)
                accelerator.backward(loss / A)
            stats["loss_gen"] += loss.item() / A
            stats["omega"] += s["omega"] / A
            stats["dropped"] += s["dropped"]
        f_raw.requires_grad_(True)
        clean_grads(g_ddp.parameters(), args.max_grad_norm, fix)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        # 3c. EMA, counters, logs
        ema.step(g_ddp.parameters())
        step += 1
        images_before, images_seen = images_seen, images_seen + B
        bar.update()
        for k, v in stats.items():
            if k != "dropped" and math.isfinite(v):
                avg[k] = v if k not in avg else 0.95 * avg[k] + 0.05 * v
        avg["dropped_total"] = avg.get("dropped_total", 0) + stats["dropped"]
        if step % args.log_every == 0:
            bar.set_postfix(gen=f"{avg.get('loss_gen', float('nan')):.4g}", fake=f"{avg.get('loss_fake', 0):.4g}")
            loss_log.write({"step": step, "images": images_seen, "minutes": round(minutes(), 3),
                            **{k: round(v, 6) for k, v in avg.items()}})
        out_of_time = args.max_minutes is not None and (time.time() - t_start) / 60 > args.max_minutes
        last = step == total_steps or out_of_time
        if args.fd_every_images and (images_seen // args.fd_every_images > images_before // args.fd_every_images
                                     or last):
            evaluate()
        if step % args.checkpointing_steps == 0 or last:
            save()
        if out_of_time:
            logger.info(f"--max_minutes={args.max_minutes} reached at step {step}; resume to continue")
            break
    bar.close()
    if args.dump_rank_params:   # tests: are the ranks' generator and fake score identical after the run?
        from safetensors.torch import save_file

        save_file({**{f"generator.{k}": v.contiguous() for k, v in g_raw.state_dict().items()},
                   **{f"fake.{k}": v.contiguous() for k, v in f_raw.state_dict().items()}},
                  str(out_dir / f"rank{accelerator.process_index}.safetensors"))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    run_script(main, parse_args)
