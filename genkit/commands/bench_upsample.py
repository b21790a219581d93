"""`genkit bench upsample`: a model trained at r px drawing at m * r px, side by side on the same seeds.

    genkit bench upsample --model weights/openmoji-32 --size 64 --num 1000 --out weights/openmoji-32/bench_upsample.json

Arms (research/diffusion.md §2g), same solver, steps, classes, guidance and seeds:
  naive              the r px model run at m * r px (no guidance)
  bicubic            sampled at r px, upscaled bicubically to m * r px
  ug-w{W}            upsample guidance at scale W, whole trajectory; ug-w{W}-t{A}-{B}: only for model time t in
                     [A, B] (1 = pure noise); --scales x --windows
  ug-w{W}-no-time    without the time adjustment (the network is told the high-resolution noise level)
  ug-w{W}-no-power   without the power adjustment (D_m x_t is not renormalised to unit variance)
  native:NAME        a model trained at m * r px (--native NAME=DIR), sampled at its own size
For each: FD-OpenMoji at m * r px against the shipped train reference with a bootstrap 95% interval (features
resampled with replacement), the shipped classifier's accuracy on the asked classes, wall time per image and its
ratio to naive (same process; a shared CPU makes single runs noisy), full- and low-resolution NFE, and a grid
PNG of the first --grid-num images beside FILE.json (FILE.grids/ARM.png), and each arm's FD ratio to naive and to
bicubic with a paired bootstrap 95% interval (the same resampled seeds in both arms). Finished arms are kept in
FILE.json (their features in a hidden folder beside it) and skipped on the next run with the same configuration;
an arm killed part-way resumes at its last finished batch. --only runs some arms: two processes with disjoint
--only lists (one thread each) share one FILE.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..checks import bad, check_float, check_int
from .common import (FeatureCache, atomic_write_bytes, atomic_write_json, class_ids_for, earlier_result, file_lock,
                     image_grid, load_pipeline, pick_device, resolve_conditioning, save_png_atomic,
                     weights_fingerprint)
from ..metrics.bootstrap import fd_with_interval, paired_ratio
from .evaluate import batched_features, load_classifier, load_features, resolve_ref
from .resolution import parse_windows


def parse_scales(text: str, flag: str = "--scales") -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        bad(flag, text, "comma-separated finite numbers > 0")
    if not values:
        bad(flag, text, "comma-separated finite numbers > 0")
    return [check_float(flag, v, 1e-6) for v in values]


def arm_list(scales, windows, ablation_scale, natives: dict) -> list[dict]:
    """Every arm as {'arm': name, 'kind': naive|bicubic|ug|native, ...pipeline kwargs}."""
    arms = [{"arm": "naive", "kind": "naive"}, {"arm": "bicubic", "kind": "bicubic"}]
    for w in scales:
        for lo, hi in windows:
            name = f"ug-w{w:g}" + ("" if (lo, hi) == (0.0, 1.0) else f"-t{lo:g}-{hi:g}")
            arms.append({"arm": name, "kind": "ug", "scale": w, "window": [lo, hi], "adjust": ["power", "time"]})
    if ablation_scale is not None:
        for drop in ("time", "power"):
            keep = [a for a in ("power", "time") if a != drop]
            arms.append({"arm": f"ug-w{ablation_scale:g}-no-{drop}", "kind": "ug", "scale": ablation_scale,
                         "window": [0.0, 1.0], "adjust": keep})
    arms += [{"arm": f"native:{k}", "kind": "native", "model": v} for k, v in natives.items()]
    return arms


def select_arms(arms: list[dict], only: str | None) -> list[dict]:
    """The arms named in --only (comma-separated; None = all): a long sweep can be split over processes, one per
    core, writing the same FILE.json (see _save)."""
    if not only:
        return arms
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = [a["arm"] for a in arms]
    for n in names:
        if n not in known:
            bad("--only", n, "arm names of this configuration: " + ", ".join(known))
    return [a for a in arms if a["arm"] in names]


def parse_natives(items) -> dict:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            bad("--native", item, "NAME=DIR, e.g. s64=weights/openmoji-64")
        out[name] = path
    return out


def bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, r, r) in [-1, 1] -> (N, C, size, size), bicubic (no antialias needed when enlarging), clamped."""
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def run_upsample(args) -> dict:
    from pipelines.pixel_diffusion import to_uint8

    size = check_int("--size", args.size, 1)
    device = pick_device(args.device)
    pipe = load_pipeline(args.model, device)
    trained = pipe.trained_size
    pipe.check_size(size, size)
    pipe.upsample_factor(size, size)        # --size must be m * trained, m >= 2: same message as the pipeline's
    scales = parse_scales(args.scales)
    windows = parse_windows(args.windows)
    ablation = parse_scales(args.ablation_scale, "--ablation-scale")[0] if args.ablation_scale else None
    natives = parse_natives(args.native)
    if args.num < 2:
        bad("--num", args.num, "an int >= 2 (a Frechet distance needs 2 images)")
    cls, guidance = resolve_conditioning(pipe, args.class_label, args.guidance)
    net, fid = load_features("openmoji", args.features_model, None, device)
    ref, ref_name = resolve_ref(args.ref, size, "openmoji", args.features_model)
    classifier = load_classifier(pipe.config.class_names, args.features_model, device) if cls != "none" else None
    seeds = list(range(args.seed, args.seed + args.num))
    solver = args.solver or pipe.scheduler.config.get("solver", "dpmpp_2m")

    config = {"model": str(args.model), "model_sha": weights_fingerprint(args.model, "unet/*.safetensors"),
              "size": size, "trained_size": trained, "num": args.num, "seed": args.seed, "steps": args.steps,
              "solver": solver, "class": cls, "guidance": guidance, "features": fid, "ref": ref_name,
              "ref_n": ref.n, "bootstrap_draws": args.bootstrap}
    out = Path(args.out)
    result = _resume(out, config)
    result.update(bench="upsample", config=config, genkit=__version__,
                  torch=torch.__version__, device=str(device) if device.type == "cpu"
                  else torch.cuda.get_device_name(device), threads=torch.get_num_threads())
    grids = out.with_name(out.stem + ".grids")
    grids.mkdir(parents=True, exist_ok=True)
    features = FeatureCache(out, config)

    arms = select_arms(arm_list(scales, windows, ablation, natives), args.only)
    todo = [a for a in arms if a["arm"] not in result["rows"] or features.load(a["arm"]) is None]
    for arm in tqdm(todo, desc="bench upsample"):
        row = _run_arm(arm, args, pipe, size, seeds, cls, guidance, solver, device, net, ref, classifier,
                       to_uint8, grids, features)
        _save(out, result, {arm["arm"]: row}, features, ref, args)
    _save(out, result, {}, features, ref, args)
    atomic_write_bytes(out.with_suffix(".md"), markdown_table(result).encode())
    print(markdown_table(result))
    return result


def _run_arm(arm, args, pipe, size, seeds, cls, guidance, solver, device, net, ref, classifier, to_uint8, grids,
             features: FeatureCache) -> dict:
    arm_pipe = load_pipeline(arm["model"], device) if arm["kind"] == "native" else pipe
    call = dict(num_inference_steps=args.steps, solver=solver, guidance_scale=guidance)
    if arm["kind"] in ("naive", "ug"):
        call.update(height=size, width=size)
    if arm["kind"] == "ug":
        call.update(upsample_guidance_scale=arm["scale"], upsample_guidance_window=tuple(arm["window"]),
                    upsample_guidance_adjust=tuple(arm["adjust"]))
    if arm["kind"] == "native" and arm_pipe.trained_size != size:
        bad("--native", arm["model"], f"a model trained at {size} px (this one is {arm_pipe.trained_size} px)")
    # 1. pick up the batches a killed run finished (same config: the cache folder is keyed by it)
    done = features.load_partial(arm["arm"]) or {"images": None, "correct": 0, "seconds": 0.0, "nfe": 0,
                                                  "nfe_low": 0}
    images = [] if done["images"] is None else [torch.from_numpy(done["images"])]
    correct, seconds, nfe, nfe_low = int(done["correct"]), float(done["seconds"]), int(done["nfe"]), \
        int(done["nfe_low"])
    # 2. the rest, timing generation only (sampling + the bicubic upscale), saving after every batch
    start = sum(len(b) for b in images)
    for i in tqdm(range(start, len(seeds), args.batch_size), desc=arm["arm"], leave=False):
        batch = seeds[i:i + args.batch_size]
        gens = [torch.Generator(device).manual_seed(s) for s in batch]
        labels = class_ids_for(pipe, cls, batch)
        t0 = time.perf_counter()
        o = arm_pipe(batch_size=len(batch), class_labels=labels, generator=gens, output_type="latent", **call)
        u8 = to_uint8(bicubic(o.images, size) if arm["kind"] == "bicubic" else o.images)
        seconds += time.perf_counter() - t0
        images.append(u8.cpu())
        nfe, nfe_low = o.nfe, o.nfe_low_res
        if classifier is not None:
            correct += int((classifier.predict(u8).cpu() == torch.tensor(labels)).sum())
        if i + len(batch) < len(seeds):
            features.save_partial(arm["arm"], torch.cat(images).numpy(), correct=correct, seconds=seconds, nfe=nfe,
                                  nfe_low=nfe_low)
    # 3. features (kept for the paired ratios), grid, row
    images = torch.cat(images)
    feats = batched_features(net, images).numpy()
    features.save(arm["arm"], feats)
    from PIL import Image
    save_png_atomic(image_grid([Image.fromarray(a) for a in images[:args.grid_num].permute(0, 2, 3, 1).numpy()]),
                    grids / f"{arm['arm'].replace(':', '_')}.png")
    m2 = (size / pipe.trained_size) ** 2
    nfe_full = nfe / m2 if arm["kind"] == "bicubic" else nfe   # a step at r px costs ~1/m^2 of one at m r px
    return {**arm, **fd_with_interval(feats, ref, args.bootstrap, args.seed),
            "class_accuracy": round(correct / len(seeds), 4) if classifier is not None else None,
            "nfe": nfe, "nfe_low_res": nfe_low, "cost_full_res_nfe": round(nfe_full + nfe_low / m2, 3),
            "seconds_per_image": round(seconds / len(seeds), 4), "n": len(seeds)}


def _save(out: Path, result: dict, new_rows: dict, features: FeatureCache, ref, args) -> None:
    """Add new_rows to FILE.json under a lock, merged with the rows other processes (--only) wrote meanwhile, then
    recompute the ratios the merged rows allow."""
    with file_lock(out):
        result["rows"].update(earlier_result(out, result["config"]).get("rows", {}))
        result["rows"].update(new_rows)
        result["command"] = _command(args, result["rows"])
        ratios = result.setdefault("ratios", {})
        for key in [k for k in ratios if set(k.split(" / ")) & set(new_rows)]:
            del ratios[key]          # a re-run arm: its ratios are recomputed from its new features
        _ratios(result, features, ref, args)
        atomic_write_json(out, result)


def _ratios(result: dict, features: FeatureCache, ref, args) -> None:
    """Per row: time and FD relative to naive; result['ratios']: FD(arm) / FD(naive) and / FD(bicubic) with paired
    bootstrap intervals (the same resampled seeds in both arms), the issue's two comparisons."""
    rows = result["rows"]
    if "naive" not in rows:
        return
    base_t, base_fd = rows["naive"]["seconds_per_image"], rows["naive"]["fd"]
    for r in rows.values():
        r["time_vs_naive"] = round(r["seconds_per_image"] / base_t, 3)
        r["fd_vs_naive"] = round(r["fd"] / base_fd, 4) if base_fd else None
    ratios = result.setdefault("ratios", {})
    for base in ("naive", "bicubic"):
        fa = features.load(base)
        for name in rows:
            key = f"{name} / {base}"
            if name == base or fa is None or key in ratios:
                continue
            fb = features.load(name)
            if fb is not None:
                ratios[key] = paired_ratio(fa, fb, ref, args.bootstrap, args.seed)


def _command(args, rows: dict) -> str:
    """One command that reproduces every row of FILE.json: its arm flags are read from the rows (which may come
    from several runs with different --scales / --windows / --only), the rest from this run's flags. --scales x
    --windows is a product, so it may also run arms the file does not hold yet."""
    ug = [r for r in rows.values() if r["kind"] == "ug"]
    full = [r for r in ug if r["adjust"] == ["power", "time"]]
    scales = sorted({r["scale"] for r in full}) or parse_scales(args.scales)
    windows = sorted({tuple(r["window"]) for r in full}, key=lambda w: (w != (0.0, 1.0), w))
    ablation = sorted({r["scale"] for r in ug if r["adjust"] != ["power", "time"]})
    natives = [f"{r['arm'].split(':', 1)[1]}={r['model']}" for r in rows.values() if r["kind"] == "native"]
    parts = ["genkit bench upsample", f"--model {args.model}", f"--size {args.size}", f"--num {args.num}",
             f"--steps {args.steps}", "--scales " + ",".join(f"{w:g}" for w in scales),
             "--windows " + (",".join(f"{lo:g}-{hi:g}" for lo, hi in windows) if windows else args.windows),
             f"--seed {args.seed}", f"--batch-size {args.batch_size}",
             "--ablation-scale " + (f"{ablation[0]:g}" if ablation else "''")]
    if args.solver:
        parts.append(f"--solver {args.solver}")
    if args.guidance is not None:
        parts.append(f"--guidance {args.guidance}")
    if args.class_label is not None:
        parts.append(f"--class {args.class_label}")
    parts += [f"--native {n}" for n in natives]
    return " ".join(parts + [f"--out {args.out}"])


def _resume(out: Path, config: dict) -> dict:
    """Rows of an earlier run with the same configuration (model weights, seeds, steps, guidance, reference)."""
    return {"rows": earlier_result(out, config).get("rows", {})}


def markdown_table(result: dict) -> str:
    c = result["config"]
    lines = [f"{c['trained_size']} px model at {c['size']} px: FD-OpenMoji vs {c['ref']} (n = {c['num']}, "
             f"bootstrap 95% interval), class accuracy, cost; {c['solver']}, {c['steps']} steps, guidance "
             f"{c['guidance']}, {result['device']}", "",
             "| arm | FD | 95% interval | FD / naive [paired 95%] | FD / bicubic [paired 95%] | class acc. | "
             "NFE (full + low-res) | cost in full NFE | time / naive |", "|---|---|---|---|---|---|---|---|---|"]
    ratios = result.get("ratios", {})

    def ratio(name, base):
        r = ratios.get(f"{name} / {base}")
        return f"{r['ratio']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r else ("1" if name == base else "")

    for name, r in result["rows"].items():
        acc = f"{100 * r['class_accuracy']:.1f}%" if r.get("class_accuracy") is not None else "-"
        lo, hi = r["fd_ci95"]
        lines.append(f"| {name} | {r['fd']:.2f} | {lo:.2f}-{hi:.2f} | {ratio(name, 'naive')} | "
                     f"{ratio(name, 'bicubic')} | {acc} | {r['nfe']} + {r['nfe_low_res']} | "
                     f"{r['cost_full_res_nfe']} | {r.get('time_vs_naive', '')} |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)
