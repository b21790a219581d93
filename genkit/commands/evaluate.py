"""`genkit eval fd` and `genkit eval ref`: Frechet distances and the reference statistics they compare against.

    genkit eval fd --samples DIR [--ref openmoji-train-32|FILE.npz] [--features openmoji|inception]
    genkit eval fd --model DIR --num N --solver NAME --steps S [--guidance W]    # generate and measure
    genkit eval ref --samples DIR --out FILE.npz                                  # stats of any folder
    genkit eval ref --openmoji train --resolution 32 --out FILE.npz               # stats of OpenMoji

Each `fd` run prints one JSON line: {"fd", "n", "features", "ref", ...}; with --model on a class-conditional
model also "class_accuracy" (the shipped classifier's accuracy on the asked classes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .common import (atomic_write_json, class_ids_for, default_steps, generate, load_pipeline, pick_device,
                     process_state, resolve_conditioning, weights_dir)

FEATURES_MODEL = "openmoji-features"            # under weights/
REF_NAME = re.compile(r"^openmoji-(train|val)-(\d+)$")


# -- the measuring stick ---------------------------------------------------------------------------------------

def features_model_dir(path: str | None) -> Path:
    return Path(path) if path else weights_dir() / FEATURES_MODEL


def load_features(kind: str, features_model: str | None = None, inception_weights: str | None = None,
                  device="cpu"):
    """(network, feature id) for --features openmoji | inception."""
    from genkit.metrics import FEATURE_KINDS, load_inception, load_openmoji_features

    if kind not in FEATURE_KINDS:
        raise ValueError(f"--features={kind!r} is not allowed: one of {', '.join(FEATURE_KINDS)}")
    if kind == "inception":
        net, fid = load_inception(inception_weights)
    else:
        net, fid = load_openmoji_features(features_model_dir(features_model))
    return net.to(device).eval(), fid


def load_classifier(names: list[str] | None, features_model: str | None, device):
    """The OpenMoji classifier when it knows these class names (same names, same order), else None."""
    from genkit.metrics import load_openmoji_features

    names = list(names or [])
    if not names:
        return None
    try:
        net, _ = load_openmoji_features(features_model_dir(features_model))
    except ValueError:
        return None
    return net.to(device).eval() if list(net.config.class_names or []) == names else None


def resolve_ref(ref: str | None, resolution: int, kind: str, features_model: str | None):
    """--ref: a .npz path, or a shipped name openmoji-{train,val}-{32,64}; default openmoji-train-<resolution>."""
    from genkit.metrics import ReferenceStats

    ref = ref or f"openmoji-train-{resolution}"
    path = Path(ref)
    if path.suffix == ".npz" or path.exists():
        if not path.is_file():
            raise ValueError(f"--ref={ref!r} is not a file: give a .npz from `genkit eval ref` or a shipped name")
        return ReferenceStats.load(path), ref
    refs = features_model_dir(features_model) / "refs"
    if not REF_NAME.match(ref) or kind != "openmoji":
        shipped = sorted(p.stem for p in refs.glob("*.npz"))
        raise ValueError(f"--ref={ref!r} is not allowed: a .npz file, or (with --features openmoji) one of "
                         f"{', '.join(shipped) or 'the shipped references'}")
    if not (refs / f"{ref}.npz").is_file():
        raise ValueError(f"--ref={ref!r} is not shipped: build it with `genkit eval ref --openmoji "
                         f"{REF_NAME.match(ref).group(1)} --resolution {REF_NAME.match(ref).group(2)} --out FILE.npz`")
    return ReferenceStats.load(refs / f"{ref}.npz"), ref


def openmoji_images(split: str, resolution: int) -> torch.Tensor:
    from genkit.data import OpenMojiDataset

    if split not in ("train", "val", "all"):
        raise ValueError(f"--openmoji={split!r} is not allowed: train, val or all")
    ds = OpenMojiDataset(resolution, split)
    return torch.from_numpy(ds.images).permute(0, 3, 1, 2).contiguous()


def batched_features(net, images: torch.Tensor, batch: int = 256, desc: str | None = None) -> torch.Tensor:
    device = next(net.parameters()).device
    with torch.no_grad():
        return torch.cat([net(images[i:i + batch].to(device)).double().cpu()
                          for i in tqdm(range(0, len(images), batch), desc=desc, disable=desc is None)])


# -- commands ------------------------------------------------------------------------------------------------

def run_ref(args) -> dict:
    """Reference statistics of an image folder or of an OpenMoji split -> .npz."""
    from genkit.data.folder import read_images_as_is
    from genkit.metrics import ReferenceStats

    if (args.samples is None) == (args.openmoji is None):
        raise ValueError("genkit eval ref needs exactly one of --samples DIR or --openmoji SPLIT")
    device = pick_device(args.device)
    net, fid = load_features(args.features, args.features_model, args.inception_weights, device)
    if args.samples is not None:
        images, source = read_images_as_is(args.samples), f"folder {args.samples}"
    else:
        images, source = openmoji_images(args.openmoji, args.resolution), f"OpenMoji {args.openmoji} split"
    stats = ReferenceStats.from_features(batched_features(net, images, desc="features"), fid, images.shape[-1],
                                         source=f"{source} ({len(images)} images at {images.shape[-1]} px)")
    stats.save(args.out)
    row = {"out": args.out, "n": stats.n, "features": fid, "resolution": stats.resolution, "source": stats.source}
    print(json.dumps(row))
    return row


def run_fd(args) -> dict | None:
    if (args.samples is None) == (args.model is None):
        raise ValueError("genkit eval fd needs exactly one of --samples DIR or --model DIR")
    return fd_of_folder(args) if args.samples is not None else fd_of_model(args)


def fd_of_folder(args) -> dict:
    from genkit.data.folder import read_images_as_is
    from genkit.metrics import FrechetDistance
    from genkit.metrics.frechet import MIN_IMAGES

    device = pick_device(args.device)
    images = read_images_as_is(args.samples)
    if len(images) < MIN_IMAGES:
        raise ValueError(f"{len(images)} images are too few for a Frechet distance: at least {MIN_IMAGES}")
    net, fid = load_features(args.features, args.features_model, args.inception_weights, device)
    ref, ref_name = resolve_ref(args.ref, images.shape[-1], args.features, args.features_model)
    fd = FrechetDistance(net, fid, resolution=images.shape[-1])
    fd.set_reference(ref)
    for i in tqdm(range(0, len(images), args.batch_size), desc="features", disable=not args.progress):
        fd.update(images[i:i + args.batch_size])
    row = {"fd": round(fd.compute(), 6), "n": fd.num_images, "features": fid, "ref": ref_name,
           "ref_n": ref.n, "resolution": images.shape[-1], "samples": args.samples}
    _report(row, args.out)
    return row


def fd_of_model(args) -> dict | None:
    """Generate seeds K..K+N-1 (split across processes) and measure FD and class accuracy in one job."""
    with process_state() as state:
        return _fd_of_model(args, state)


def _fd_of_model(args, state) -> dict | None:
    from torchmetrics.classification import MulticlassAccuracy

    from genkit.metrics import FrechetDistance
    from .resolution import resolution_fields, size_ug_kwargs
    from .sample import check_batch_size, method_kwargs, resolve_solver

    check_batch_size(args.batch_size)
    device = pick_device(args.device) if state.num_processes == 1 else state.device
    pipe = load_pipeline(args.model, device)
    args.steps = default_steps(pipe, args.steps)
    cls, guidance = resolve_conditioning(pipe, args.class_label, args.guidance)
    solver, args.grid, nfe = resolve_solver(pipe, args, guidance)
    size_kw = size_ug_kwargs(pipe, args)
    res = size_kw.get("height", pipe.trained_size)
    info = {"nfe_low_res": 0}
    net, fid = load_features(args.features, args.features_model, args.inception_weights, device)
    ref, ref_name = resolve_ref(args.ref, res, args.features, args.features_model)
    fd = FrechetDistance(net, fid, resolution=res)
    fd.set_reference(ref)
    classifier = load_classifier(pipe.config.class_names, args.features_model, device) if cls != "none" else None
    acc = MulticlassAccuracy(pipe.num_classes, average="micro").to(device) if classifier is not None else None

    from pipelines.pixel_diffusion import to_uint8

    seeds = list(range(args.seed, args.seed + args.num))
    with state.split_between_processes(seeds) as my_seeds:
        bar = tqdm(total=len(my_seeds), desc="sampling + features", unit="img",
                   disable=not (state.is_local_main_process and args.progress))
        for batch, x in generate(pipe, my_seeds, args.batch_size, cls, device, info, num_inference_steps=args.steps,
                                 solver=solver, grid=args.grid, guidance_scale=guidance, **size_kw,
                                 **method_kwargs(args)):
            images = to_uint8(x)
            fd.update(images)
            if acc is not None:
                acc.update(classifier.predict(images), torch.tensor(class_ids_for(pipe, cls, batch), device=device))
            bar.update(len(batch))
        bar.close()
    value = fd.compute()                            # sums gathered across processes
    accuracy = float(acc.compute()) if acc is not None else None
    if not state.is_main_process:
        return None
    row = {"fd": round(value, 6), "n": args.num, "features": fid, "ref": ref_name, "ref_n": ref.n,
           "resolution": res, "model": args.model, "solver": solver, "steps": args.steps,
           "grid": args.grid,
           "guidance": guidance, "class": cls, "nfe_per_image": info.get("nfe", nfe), "seeds": [seeds[0], seeds[-1]],
           "num_processes": state.num_processes, **resolution_fields(pipe, args, size_kw, info),
           **{k: str(v) for k, v in method_kwargs(args).items()}}   # skip-tuning, guidance interval: as given
    if accuracy is not None:
        row["class_accuracy"] = round(accuracy, 6)
    _report(row, args.out)
    return row


def _report(row: dict, out: str | None) -> None:
    print(json.dumps(row))
    if out:
        atomic_write_json(Path(out), row)


BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0)          # pixels at the image's own resolution
NOISE_STDS = (4.0, 8.0, 16.0, 32.0, 64.0)        # in 0..255 units


def fd_sanity(net, fid: str, refs: dict, val: torch.Tensor, train: torch.Tensor, resolution: int) -> dict:
    """The facts a trustworthy FD must show, at one resolution (refs: {'train': ReferenceStats, 'val': ...}):
    FD(train vs train) ~ 0; FD(val vs train) is the floor; it repeats; and degrading the train images (the
    reference's own set, so the curve starts at ~0) raises FD monotonically with blur and with noise. The same
    curves on val are reported too: there the val-vs-train content gap dominates and mild noise can lower FD
    a little."""
    from genkit.metrics import FrechetDistance, frechet_distance
    from genkit.metrics.degrade import add_noise, gaussian_blur

    def fd_of(images):
        fd = FrechetDistance(net, fid, resolution=resolution)
        fd.set_reference(refs["train"])
        for i in range(0, len(images), 256):
            fd.update(images[i:i + 256])
        return round(fd.compute(), 6)

    return {
        "resolution": resolution, "n_val": len(val), "n_train": len(train),
        "fd_train_vs_train": fd_of(train),
        "fd_val_vs_train": fd_of(val),
        "fd_val_vs_train_again": fd_of(val),
        "fd_val_vs_train_from_refs": round(frechet_distance(refs["val"].mu, refs["val"].sigma, refs["train"].mu,
                                                            refs["train"].sigma), 6),
        "fd_blurred_train": {str(s): fd_of(gaussian_blur(train, s)) for s in BLUR_SIGMAS},
        "fd_noisy_train": {str(s): fd_of(add_noise(train, s)) for s in NOISE_STDS},
        "fd_blurred_val": {str(s): fd_of(gaussian_blur(val, s)) for s in BLUR_SIGMAS},
        "fd_noisy_val": {str(s): fd_of(add_noise(val, s)) for s in NOISE_STDS},
    }


def run_sanity(args) -> dict:
    """`genkit eval sanity`: fd_sanity at each resolution with the shipped network and references."""
    from genkit.metrics import ReferenceStats

    device = pick_device(args.device)
    net, fid = load_features("openmoji", args.features_model, None, device)
    refs_dir = features_model_dir(args.features_model) / "refs"
    result = {"features": fid, "command": f"genkit eval sanity --resolutions {args.resolutions} --out {args.out}"}
    for res in [int(r) for r in str(args.resolutions).split(",")]:
        refs = {s: ReferenceStats.load(refs_dir / f"openmoji-{s}-{res}.npz") for s in ("train", "val")}
        result[str(res)] = fd_sanity(net, fid, refs, openmoji_images("val", res), openmoji_images("train", res), res)
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(Path(args.out), result)
    return result
