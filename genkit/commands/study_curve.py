"""`genkit eval curve`: FD-OpenMoji of every saved checkpoint of one or more training runs -> a curve per run.

    genkit eval curve --run shifted=runs/s64-shifted --run cosine=runs/s64-cosine --num 500 --out study64.json

A run is a train_diffusion.py output_dir: a pipeline folder (config, scheduler, class names). Its points are
  snapshots/step-N/   full EMA pipeline folders (training/study_64.sh copies one after each chunk): the primary
                      source, since runs with --checkpoints_total_limit 1 keep only their latest checkpoint-N;
  checkpoint-N/       for a step with no snapshot: the EMA as ema_unet.safetensors (+ .json; the format of
                      genkit/training/checkpoint.py), else an old custom_checkpoint_0.pkl read with
                      torch.load(weights_only=True) only (nothing is ever unpickled), else model.safetensors (raw
                      weights, a run without EMA).
The folders are only read, never written, so a run can be measured while it trains (a checkpoint pruned under
our feet is skipped and retried next time; a snapshot being copied is still named step-N.tmp and not read).

Every checkpoint samples the same fixed seeds K..K+N-1 (class cycle, the model's guidance, same solver and steps)
at the run's own resolution; FD against the train reference of that resolution with a bootstrap 95% interval,
and class accuracy. Where every run has the same step, the FD ratio of each run to the first is reported with a
paired bootstrap interval (the same resampled seeds in both). Results are cached in FILE.json by (run, step,
checkpoint fingerprint) and the features as RUN@STEP.npy in a hidden folder beside it (one file per point, keyed
by the measurement setup, so each is committed once): rerun the command as training goes on and only new
checkpoints are measured. FILE.png plots the curves with their intervals.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..checks import bad
from .common import (FeatureCache, atomic_write_bytes, atomic_write_json, class_ids_for, earlier_result,
                     load_pipeline, pick_device, resolve_conditioning)
from ..metrics.bootstrap import fd_with_interval, paired_ratio
from .bench_samplers import parse_list
from .evaluate import batched_features, load_classifier, load_features, resolve_ref

EMA_FILE, LEGACY_EMA_FILE, RAW_FILE = "ema_unet.safetensors", "custom_checkpoint_0.pkl", "model.safetensors"
SNAPSHOT_FILE = "unet/diffusion_pytorch_model.safetensors"


def parse_runs(items) -> dict[str, Path]:
    runs = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (Path(item).name, item)
        if not Path(path, "model_index.json").is_file():
            bad("--run", item, "NAME=DIR or DIR, a train_diffusion.py output_dir (model_index.json, checkpoint-N/)")
        if name in runs:
            bad("--run", item, f"a new name (there are two runs named {name!r})")
        runs[name] = Path(path)
    if not runs:
        bad("--run", None, "at least one run folder")
    return runs


def _numbered(folder: Path, prefix: str) -> dict[int, Path]:
    """{N: folder/PREFIX-N} for the folders named PREFIX-N with N an int (not step-N.tmp, not .tmp-checkpoint-N)."""
    out = {}
    for p in folder.glob(f"{prefix}-*"):
        tail = p.name[len(prefix) + 1:]
        if p.is_dir() and tail.isdigit():
            out[int(tail)] = p
    return out


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) in step order: every snapshots/step-N, and every checkpoint-N whose step has no snapshot."""
    points = _numbered(run, "checkpoint")
    points.update(_numbered(run / "snapshots", "step"))  # a snapshot wins over the checkpoint of the same step
    return sorted(points.items())


def _copy_into(params: list, tensors: list, source: Path) -> None:
    if len(tensors) != len(params):
        raise ValueError(f"{source} holds {len(tensors)} EMA tensors, the run's UNet has {len(params)} parameters")
    with torch.no_grad():
        for p, t in zip(params, tensors):
            if p.shape != t.shape:
                raise ValueError(f"{source}: an EMA tensor of shape {tuple(t.shape)} for a UNet parameter of shape "
                                 f"{tuple(p.shape)} (a run of another architecture?)")
            p.copy_(t.to(p.device, p.dtype))


def load_checkpoint_weights(pipe, folder: Path) -> str:
    """Copy the EMA weights of a snapshot or checkpoint folder into pipe.unet; returns a fingerprint of the file.

    snapshots/step-N: unet/diffusion_pytorch_model.safetensors (a state dict); checkpoint-N: ema_unet.safetensors
    (shadow tensors "0".."P-1" in parameter order), else custom_checkpoint_0.pkl (weights_only), else
    model.safetensors (raw weights). Files are read into memory once, so one that vanishes mid-read raises OSError."""
    from safetensors.torch import load as load_safetensors

    for name in (SNAPSHOT_FILE, EMA_FILE, LEGACY_EMA_FILE, RAW_FILE):
        if (folder / name).is_file():
            break
    else:
        raise FileNotFoundError(f"{folder} holds none of {SNAPSHOT_FILE}, {EMA_FILE}, {LEGACY_EMA_FILE}, {RAW_FILE}")
    data = (folder / name).read_bytes()
    if name == EMA_FILE:
        shadow = load_safetensors(data)
        _copy_into(list(pipe.unet.parameters()), [shadow[str(i)] for i in range(len(shadow))], folder / name)
    elif name == LEGACY_EMA_FILE:  # tensors and numbers only: weights_only refuses anything else
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            bad("checkpoint", str(folder / name), "an EMA state dict of tensors and numbers (torch.load with "
                f"weights_only=True refused it: {str(e).splitlines()[0]})")
        _copy_into(list(pipe.unet.parameters()), state["shadow_params"], folder / name)
    else:  # a diffusers state dict (snapshot) or accelerate's raw model weights
        pipe.unet.load_state_dict(load_safetensors(data))
    return hashlib.sha256(data).hexdigest()[:12]


def measure(pipe, seeds, cls, guidance, args, device, net, ref, classifier) -> tuple[np.ndarray, float | None]:
    """Features (N, d) and class accuracy of the checkpoint's samples on the fixed seeds."""
    from pipelines.pixel_diffusion import to_uint8

    feats, correct = [], 0
    for i in range(0, len(seeds), args.batch_size):
        batch = seeds[i:i + args.batch_size]
        labels = class_ids_for(pipe, cls, batch)
        out = pipe(batch_size=len(batch), class_labels=labels, num_inference_steps=args.steps, solver=args.solver,
                   guidance_scale=guidance, generator=[torch.Generator(device).manual_seed(s) for s in batch],
                   output_type="latent")
        images = to_uint8(out.images)
        feats.append(batched_features(net, images).numpy())
        if classifier is not None:
            correct += int((classifier.predict(images).cpu() == torch.tensor(labels)).sum())
    return np.concatenate(feats), (correct / len(seeds) if classifier is not None else None)


def run_curve(args) -> dict:

    runs = parse_runs(args.run)
    at = set(parse_list("at", args.at, cast=int)) if args.at else None   # None: every checkpoint
    if args.num < 2:
        bad("--num", args.num, "an int >= 2 (a Frechet distance needs 2 images)")
    device = pick_device(args.device)
    out = Path(args.out)
    result = _resume(out)
    result.update(command=_command(args), genkit=__version__, torch=torch.__version__,
                  device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device))
    seeds = list(range(args.seed, args.seed + args.num))
    net, fid = load_features("openmoji", args.features_model, None, device)
    cache = FeatureCache(out, {"num": args.num, "seed": args.seed, "steps": args.steps, "solver": args.solver,
                               "class": args.class_label, "guidance": args.guidance, "features": fid})

    for name, run in runs.items():
        pipe = load_pipeline(str(run), device)
        res = pipe.trained_size
        cls, guidance = resolve_conditioning(pipe, args.class_label, args.guidance)
        ref, ref_name = resolve_ref(args.ref, res, "openmoji", args.features_model)
        classifier = load_classifier(pipe.config.class_names, args.features_model, device) if cls != "none" else None
        config = {"run": str(run), "resolution": res, "num": args.num, "seed": args.seed, "steps": args.steps,
                  "solver": args.solver, "class": cls, "guidance": guidance, "ref": ref_name, "features": fid,
                  "schedule": {k: pipe.scheduler.config.get(k) for k in ("schedule", "image_size", "base_size")}}
        arm = result["runs"].setdefault(name, {"config": config, "points": {}})
        if arm["config"] != config:  # another measurement setup: start this run's curve again
            arm.update(config=config, points={})
        todo = [(step, ckpt) for step, ckpt in checkpoints(run) if at is None or step in at]
        for step, ckpt in tqdm(todo, desc=f"curve {name}"):
            key = f"{name}@{step}"
            try:
                sha = load_checkpoint_weights(pipe, ckpt)
            except OSError as e:  # a checkpoint pruned by the training job while we read it
                print(f"skipped {ckpt}: {e}")
                continue
            if arm["points"].get(str(step), {}).get("sha") == sha and cache.load(key) is not None:
                continue
            t0 = time.perf_counter()
            feats, acc = measure(pipe, seeds, cls, guidance, args, device, net, ref, classifier)
            cache.save(key, feats)
            arm["points"][str(step)] = {"step": step, "source": ckpt.relative_to(run).as_posix(), "sha": sha,
                                        **fd_with_interval(feats, ref, args.bootstrap, args.seed),
                                        "class_accuracy": None if acc is None else round(acc, 4),
                                        "seconds": round(time.perf_counter() - t0, 2)}
            atomic_write_json(out, result)
    result["ratios"] = _ratios(result, runs, cache, args)
    atomic_write_json(out, result)
    atomic_write_bytes(out.with_suffix(".png"), plot_curves(result))
    print(json.dumps({"out": str(out), "plot": str(out.with_suffix(".png")), "ratios": result["ratios"]}))
    return result


def _ratios(result, runs, cache, args) -> dict:
    """FD(run) / FD(first run) at every step all runs share, with paired bootstrap intervals."""
    names = list(runs)
    if len(names) < 2:
        return {}
    base = names[0]
    ref = resolve_ref(args.ref, result["runs"][base]["config"]["resolution"], "openmoji", args.features_model)[0]
    shared = set(result["runs"][base]["points"])
    for n in names[1:]:
        shared &= set(result["runs"][n]["points"])
    out = {}
    for step in sorted(shared, key=int):
        for n in names[1:]:
            a, b = cache.load(f"{base}@{step}"), cache.load(f"{n}@{step}")
            if a is not None and b is not None and len(a) == len(b):
                out.setdefault(f"{n}/{base}", {})[step] = paired_ratio(a, b, ref, args.bootstrap, args.seed)
    return out


def _resume(out: Path) -> dict:
    return {"runs": earlier_result(out).get("runs", {})}


def _command(args) -> str:
    parts = ["genkit eval curve"] + [f"--run {r}" for r in args.run] + [
        f"--num {args.num}", f"--steps {args.steps}", f"--solver {args.solver}", f"--seed {args.seed}",
        f"--batch-size {args.batch_size}"]
    if args.guidance is not None:
        parts.append(f"--guidance {args.guidance}")
    if args.ref:
        parts.append(f"--ref {args.ref}")
    if args.at:
        parts.append(f"--at {args.at}")
    return " ".join(parts + [f"--out {args.out}"])


COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def plot_curves(result: dict, width: int = 720, height: int = 420) -> bytes:
    """A PNG line chart (PIL; no matplotlib here): FD vs training step per run, bars = bootstrap 95% intervals."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 70, width - 20, 40, height - 50
    pts = [(p["step"], p["fd"], *p["fd_ci95"]) for r in result["runs"].values() for p in r["points"].values()]
    d.text((left, 12), "FD-OpenMoji vs training step (bars: bootstrap 95% interval)", fill="black", font=font)
    if not pts:
        d.text((left, height // 2), "no checkpoints measured yet", fill="black", font=font)
    else:
        x0, x1 = 0, max(p[0] for p in pts)                                      # training steps start at 0
        y0, y1 = 0.0, max(p[3] for p in pts) * 1.05
        x1 = x1 if x1 > x0 else x0 + 1
        sx = lambda s: left + (s - x0) / (x1 - x0) * (right - left)  # noqa: E731
        sy = lambda v: bottom - (v - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
        d.line([(left, top), (left, bottom), (right, bottom)], fill="black")
        for k in range(5):
            v = y0 + k * (y1 - y0) / 4
            d.text((8, sy(v) - 5), f"{v:.1f}", fill="black", font=font)
            s = x0 + k * (x1 - x0) / 4
            d.text((sx(s) - 10, bottom + 6), f"{s:.0f}", fill="black", font=font)
        d.text(((left + right) // 2 - 15, bottom + 24), "step", fill="black", font=font)
        for i, (name, r) in enumerate(result["runs"].items()):
            c = COLORS[i % len(COLORS)]
            p = sorted(r["points"].values(), key=lambda q: q["step"])
            xy = [(sx(q["step"]), sy(q["fd"])) for q in p]
            if len(xy) > 1:
                d.line(xy, fill=c, width=2)
            for q, (x, y) in zip(p, xy):
                d.line([(x, sy(q["fd_ci95"][0])), (x, sy(q["fd_ci95"][1]))], fill=c)
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
            d.text((right - 150, top + 14 * i), name, fill=c, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
