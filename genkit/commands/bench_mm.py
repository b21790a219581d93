"""`genkit bench mm`: the multimodal model and its ablations, measured side by side on OpenMoji val.

    genkit bench mm --arm base=weights/openmoji-mm --arm mse=runs/mm-mse --arm rope1d=runs/mm-rope1d \\
        --arm tie_v1=runs/mm-tie-v1 --arm raster=runs/mm-raster --out mm.json

Each arm is a MultimodalARPipeline folder trained by training/train_mm.py with the same data, seed, steps and
batch, differing in one flag (--image_head mse, --positions rope1d / tie_v1 / mrope, --order raster). For every
arm: val text NLL and image loss (and, for random-order diffusion-head arms, the image loss with 0 / 50 / 90%
of the patches known: does the model use what it has drawn); text -> image FD-OpenMoji (against the val
reference), class and group accuracy (next to the classifier's own accuracy on the real val images, the
ceiling) and diversity; caption exact match and top-1/5 retrieval among all val names; with and without the KV
cache. Every figure also as a ratio to the first arm. Rows are written after every arm (a killed run resumes).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import __version__
from .common import atomic_write_bytes, atomic_write_json, pick_device, weights_fingerprint
from .evaluate import load_classifier, load_features, openmoji_images, resolve_ref

RATIO_KEYS = ("val_text_loss", "val_image_loss", "fd", "class_accuracy", "group_accuracy", "diversity",
              "caption_exact_match", "retrieval_top1", "retrieval_top5")


def parse_arms(arms: list[str]) -> dict[str, str]:
    out = {}
    for a in arms:
        name, sep, path = a.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--arm={a!r} is not allowed: NAME=DIR, e.g. base=weights/openmoji-mm")
        if not (Path(path) / "model_index.json").is_file():
            raise ValueError(f"--arm={a!r}: {path!r} is not a MultimodalARPipeline folder (no model_index.json)")
        out[name] = path
    if not out:
        raise ValueError("genkit bench mm needs at least one --arm NAME=DIR")
    return out


def has_context_loss(config) -> bool:
    """Random-order, diffusion-head arms on pixel patches: the ones whose image loss can be taken with part of the
    image known (image_loss_by_context / _by_caption). config: a model's, or the one a row stored."""
    return config["image_tokens"] == "patches" and config["image_head"] == "diffusion" and config["order"] == "random"


def run_mm(args) -> dict:
    from genkit.data import OpenMojiDataset, subgroup_to_group
    from genkit.metrics import FrechetDistance
    from genkit.mm.evaluate import (captioning, classifier_ceiling, decode_speed, image_loss_by_caption,
                                    image_loss_by_context, text_to_image, val_losses)
    from pipelines.multimodal import MultimodalARPipeline

    arms = parse_arms(args.arm)
    device = pick_device(args.device)
    ds = OpenMojiDataset(32, "val")
    n = min(args.num, len(ds))
    images = openmoji_images("val", 32)[:n]
    captions = [list(c.encode("utf-8")) for c in ds.captions[:n]]
    labels = torch.from_numpy(ds.labels[:n])
    net, fid = load_features("openmoji", args.features_model, None, device)
    ref, ref_name = resolve_ref("openmoji-val-32", 32, "openmoji", args.features_model)
    classifier = load_classifier(list(ds.class_names), args.features_model, device)
    groups = torch.from_numpy(subgroup_to_group())
    gen = dict(num_steps=args.steps, head_steps=args.head_steps, solver=args.solver, temperature=args.temperature,
               guidance_scale=args.guidance)
    config = {"num": n, "steps": args.steps, "head_steps": args.head_steps, "solver": args.solver,
              "temperature": args.temperature, "guidance": args.guidance, "features": fid, "ref": ref_name,
              "retrieval": args.retrieval, **({"rerank": args.rerank} if args.rerank != 1 else {})}
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    rows = old.get("rows", {}) if old.get("config") == config else {}
    ceiling = classifier_ceiling(images, labels, classifier, groups) if classifier is not None else None
    result = {"config": config, "rows": rows, "real_val_images": ceiling, "arms": arms, "genkit": __version__,
              "torch": torch.__version__, "device": str(device),
              "command": "genkit bench mm " + " ".join(f"--arm {a}" for a in args.arm)
              + f" --num {args.num} --steps {args.steps} --head-steps {args.head_steps} --solver {args.solver}"
              f" --temperature {args.temperature} --guidance {args.guidance}"
              + (f" --rerank {args.rerank}" if args.rerank != 1 else "")
              + ("" if args.retrieval else " --no-retrieval") + f" --out {args.out}"}
    for name, path in arms.items():
        weights = weights_fingerprint(path)
        row = rows.get(name)
        if row and row.get("path") == path and row.get("weights") == weights:  # this arm was measured: resume,
            if has_context_loss(row["config"]) and "image_loss_by_caption" not in row:  # adding the cheap loss
                model = MultimodalARPipeline.from_pretrained(path).to(device).model.eval()  # it lacks
                row["image_loss_by_caption"] = image_loss_by_caption(model, images, captions, labels)
                atomic_write_json(out, result)
            continue
        pipe = MultimodalARPipeline.from_pretrained(path).to(device)
        model = pipe.model.eval()
        fd = FrechetDistance(net, fid, resolution=32)
        fd.set_reference(ref)
        keys = ("positions", "image_head", "order", "mask_schedule", "image_tokens", "d_model", "n_layers")
        row = {"path": path, "weights": weights, "config": {k: model.config.get(k) for k in keys}}
        units = pipe.units_of(images.float() / 127.5 - 1) if model.discrete else images
        row.update(val_losses(model, units, captions))
        if has_context_loss(model.config):
            row["image_loss_by_known"] = image_loss_by_context(model, images, captions)
            row["image_loss_by_caption"] = image_loss_by_caption(model, images, captions, labels)
        row.update(text_to_image(pipe, captions, labels, fd, classifier, groups=groups, rerank=args.rerank, **gen))
        row.update(captioning(pipe, images, captions, retrieval=args.retrieval))
        row.update(decode_speed(pipe, images[:16], captions[0], **gen))
        rows[name] = row
        atomic_write_json(out, result)
    base = rows[next(iter(arms))]
    for row in rows.values():
        row["ratio_to_first"] = {k: round(row[k] / base[k], 4) if row.get(k) is not None and base.get(k) else None
                                 for k in RATIO_KEYS}
    atomic_write_json(out, result)
    atomic_write_bytes(out.with_suffix(".md"), markdown_table(result).encode())
    print(markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    c = result["config"]
    fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"OpenMoji val, n = {c['num']}; text -> image: {c['steps']} AR steps, head {c['solver']} "
             f"{c['head_steps']} steps, guidance {c['guidance']}, temperature {c['temperature']}"
             + (f", best of {c['rerank']} by log p(name | image)" if c.get("rerank", 1) != 1 else "") + ".", "",
             "| arm | val text NLL | val image loss | image loss, 0 / 90% known | image loss, own / sibling's / no "
             "name | FD | class acc. | group acc. | "
             "diversity | caption exact | "
             "top-1 | top-5 | caption KV speed-up |", "|---" * 13 + "|"]
    for name, r in result["rows"].items():
        ctx = r.get("image_loss_by_known")
        ctx = f"{ctx['0']:.3f} / {ctx['0.9']:.3f}" if ctx else "-"
        cap = r.get("image_loss_by_caption")
        cap = f"{cap['own']:.3f} / {cap['sibling']:.3f} / {cap['empty']:.3f}" if cap and cap["n"] else "-"
        lines.append(f"| {name} | {fmt(r['val_text_loss'])} | {fmt(r['val_image_loss'])} | {ctx} | {cap} | "
                     f"{fmt(r['fd'], 2)} | "
                     f"{fmt(r['class_accuracy'])} | {fmt(r.get('group_accuracy'))} | {fmt(r['diversity'])} | "
                     f"{fmt(r['caption_exact_match'])} | "
                     f"{fmt(r.get('retrieval_top1'))} | {fmt(r.get('retrieval_top5'))} | "
                     f"{fmt(r['caption_speedup'], 2)}x |")
    real = result.get("real_val_images")
    if real:
        lines += ["", f"The classifier on the real val images (the ceiling): class acc. {real['class_accuracy']:.3f}, "
                      f"group acc. {real['group_accuracy']:.3f} (98 subgroups / 9 groups)."]
    return "\n".join(lines + ["", f"Command: `{result['command']}`", ""])
