"""`genkit bench samplers`: every solver x grid, and diffusers' own schedulers, on one model, same noise and seeds.

    genkit bench samplers --model weights/openmoji-32 --nfe 5,10,20,50 --num 512 --out eval.json

Arms: the genkit solvers (euler, heun, dpm2, dpmpp_2m, dpmpp_3m, ipndm) on each sigma grid (polynomial,
logsnr, time), and diffusers' DDIMScheduler, DPMSolverMultistepScheduler and UniPCMultistepScheduler built
with from_config from the model's own scheduler config (solver=None: their step() loop).

For each arm and NFE budget, on seeds K..K+N-1 (class 'cycle' and the model's default guidance unless told):
- fd: FD-OpenMoji against the train reference, and on the even / odd seeds alone (fd_even, fd_odd: if the
  ranking of the arms is the same on both halves, N is large enough for the ranking);
- class_accuracy: the shipped classifier's accuracy on the asked classes;
- ode_error: mean per-image RMS distance (in [-1, 1] pixel units) to Heun at --ode-ref-steps steps (256:
  511 NFE) from the same noise, on the first --ode-num seeds (0: none);
- with --bootstrap B: fd_ci95, a bootstrap 95% interval of fd over B resamples of the seeds (centred on fd:
  genkit.metrics.bootstrap says why);
- with --teacher-nfe M: fd_teacher (and its paired interval), the FD to the model's own samples at M NFE
  (--teacher-solver) from the same seeds and classes. A solver's job is to reproduce the teacher's distribution;
  FD to data can fall as a few-step solver smooths images, so this is the fairer distribution check. The
  teacher's own arm is a row (`teacher:SOLVER@M`);
- spread: the within-class spread of the features (genkit.metrics.diversity; the teacher's row is the yardstick):
  near 0 when the images of one class are all alike, as from a generator that ignores its noise;
- --generators DIR,...: one-step generators distilled from the model (weights/openmoji-32-sid) as arms at NFE 1,
  same seeds and classes (their guidance is built in). The first is the one the run is about: every other
  generator row (of this run or an earlier one) gets paired ratios over it, as well as over the teacher's row.
Per-arm features are cached beside FILE (.FILE.features-<config hash>/), so intervals and ratios can be recomputed.
NFE counts denoiser calls per image; with CFG each is two network evaluations (network_evals). With
--guidance-sigma-range LO,HI every teacher arm is guided only at sigma in [LO, HI] (network_evals counts what ran;
AMED / BNS arms, trained for guidance at every step, are left out).
Results are written after every arm (atomically), so a killed run resumes where it stopped; FILE.md gets
a markdown table. A learned arm's row (AMED, bns) records a fingerprint of the weights it used ("trained"): when
they are retrained at the same path, the row is measured again. A generator's row records its weights the same way
("weights"); when a new generator is shipped at the same path, the old row (with its features and ratios) is kept
as arm `generator:NAME~<old weights>` and the arm is measured again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..io import atomic_path
from .common import (FeatureCache, atomic_write_bytes, atomic_write_json, class_ids_for, earlier_result, generate,
                     load_pipeline, pick_device, resolve_conditioning, weights_fingerprint)
from .evaluate import batched_features, load_classifier, load_features, resolve_ref

SCHEDULERS = {"ddim": "DDIMScheduler", "dpmsolver": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler"}


def parse_list(flag: str, text: str, allowed=None, cast=str) -> list:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        items = [cast(t) for t in items]
    except ValueError:
        raise ValueError(f"--{flag}={text!r} is not allowed: a comma-separated list") from None
    bad = [t for t in items if (allowed is not None and t not in allowed) or (cast is int and t < 1)]
    if not items or bad:
        what = f"values from {', '.join(map(str, allowed))}" if allowed is not None else \
            "ints >= 1" if cast is int else "values (at least one)"
        raise ValueError(f"--{flag}={text!r} is not allowed: comma-separated {what}")
    return items


def arm_name(solver: str, grid: str, skip_tuning: float | None = None) -> str:
    """A genkit arm's name: "solver/grid", with "+skip<rho>" when skip-tuned (e.g. "euler/polynomial+skip0.8")."""
    return f"{solver}/{grid}" + ("" if skip_tuning is None else f"+skip{skip_tuning:g}")


def generator_arm(path) -> str:
    """A one-step generator's arm name: "generator:<folder name>" (e.g. "generator:openmoji-32-sid")."""
    return f"generator:{Path(path).name}"


def row_key(arm: str, nfe: int) -> str:
    """The key of an arm's row in a result's "rows": "<arm>@<NFE budget>"."""
    return f"{arm}@{nfe}"


def arm_list(solvers, grids, schedulers, skip_rhos=()) -> list[dict]:
    """genkit solver x grid (each also with skip-tuning at every rho in skip_rhos), then diffusers' schedulers."""
    arms = []
    for s in solvers:
        for g in grids:
            arms.append({"arm": arm_name(s, g), "solver": s, "grid": g})
            arms += [{"arm": arm_name(s, g, r), "solver": s, "grid": g, "skip_tuning": r} for r in skip_rhos]
    return arms + [{"arm": f"diffusers:{name}", "scheduler": SCHEDULERS[name]} for name in schedulers]


def run_samplers(args) -> dict:
    import diffusers

    from genkit.metrics import REFERENCE_SOLVER, ode_error, within_class_spread
    from genkit.metrics.bootstrap import fd_between, fd_to, fd_with_interval
    from genkit.checks import check_float
    from genkit.sampling import GRIDS, solver_entry, solver_names, steps_for_nfe
    from genkit.sampling.amed import predictors_by_nfe
    from genkit.sampling.grids import LEARNED
    from genkit.skip_tuning import RHO_RANGE
    from genkit.sampling import nfe as count_nfe
    from pipelines.pixel_diffusion import to_uint8
    from .sample import guidance_interval

    nfes = parse_list("nfe", args.nfe, cast=int)
    solvers = parse_list("solvers", args.solvers, solver_names()) if args.solvers else []  # '': teacher, generators
    grids = parse_list("grids", args.grids, GRIDS + (LEARNED,))  # learned: AMED arms only (the predictor's)
    schedulers = parse_list("schedulers", args.schedulers, SCHEDULERS) if args.schedulers else []
    skip_rhos = [check_float("--skip-rhos", r, *RHO_RANGE) for r in parse_list("skip-rhos", args.skip_rhos, cast=float)] \
        if getattr(args, "skip_rhos", None) else []
    if args.num < 4:
        raise ValueError(f"--num={args.num} is not allowed: at least 4 images (FD on each half needs 2)")
    if args.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype={args.dtype!r} is not allowed: float32 or bfloat16")
    if not 0 <= args.ode_num <= args.num:
        raise ValueError(f"--ode-num={args.ode_num} is not allowed: an int in [0, --num={args.num}]")
    draws, teacher_nfe = getattr(args, "bootstrap", 0), getattr(args, "teacher_nfe", 0)
    teacher_solver = getattr(args, "teacher_solver", "dpmpp_2m")
    generators = parse_list("generators", args.generators) if getattr(args, "generators", None) else []
    if teacher_nfe:
        try:
            solver_entry(teacher_solver)
        except ValueError as e:  # the registry's message, with the flag's name
            raise ValueError(str(e).replace("solver=", "--teacher-solver=", 1)) from None
    device = pick_device(args.device)
    pipe = load_pipeline(args.model, device)
    diffusers.utils.logging.set_verbosity_error()  # from_config's "attributes ignored" notes, once per arm
    genkit_scheduler = pipe.scheduler
    cls, guidance = resolve_conditioning(pipe, args.class_label, guidance=args.guidance)
    res = pipe.unet.config.sample_size
    net, fid = load_features("openmoji", args.features_model, None, device)
    ref, ref_name = resolve_ref(args.ref, res, "openmoji", args.features_model)
    classifier = load_classifier(pipe.config.class_names, args.features_model, device) if cls != "none" else None
    seeds = list(range(args.seed, args.seed + args.num))
    ode_seeds = seeds[:args.ode_num]
    cfg_factor = 2 if guidance != 1.0 else 1
    interval = guidance_interval(getattr(args, "guidance_sigma_range", None)) if guidance != 1.0 else None
    guide = dict(guidance_scale=guidance, guidance_sigma_range=interval)  # every teacher arm, the same way

    config = {"model": str(args.model), "num": args.num, "ode_num": args.ode_num, "seed": args.seed,
              "class": cls, "guidance": guidance, "features": fid, "ref": ref_name, "ref_n": ref.n,
              "resolution": res, "ode_reference": f"{REFERENCE_SOLVER}, polynomial grid, {args.ode_ref_steps} steps",
              "model_sha": weights_fingerprint(args.model, "unet/*.safetensors"), "dtype": args.dtype}
    if interval is not None:  # keys only when used: an older JSON of the same run still resumes
        config["guidance_sigma_range"] = args.guidance_sigma_range
    if teacher_nfe:
        config["teacher"] = f"{teacher_solver}@{teacher_nfe}, polynomial grid"
    if draws:
        config["bootstrap_draws"] = draws
    out = Path(args.out)
    result = _resume(out, config)
    # Rows from earlier invocations of the same configuration are kept (e.g. a later run adding NFE 50 for a few
    # solvers); every command that contributed is listed.
    command = _command(args)
    commands = [c for c in result.pop("commands", []) if c != command] + [command]
    result.update(config=config, command=command, commands=commands, genkit=__version__,
                  torch=torch.__version__,
                  device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device))
    result["floor"] = _floor(net, fid, ref, res, args.num, args.features_model)

    # 1. The reference ODE solutions (cached beside the output: the most expensive single arm)
    def solve(desc, **kw):  # the ODE seeds only, all at once
        return torch.cat([x for _, x in tqdm(generate(pipe, ode_seeds, args.batch_size, cls, device, **guide, **kw),
                                             total=-(-len(ode_seeds) // args.batch_size), desc=desc)])

    x_ref = _load_or_make_reference(out, config, lambda: solve(
        f"ODE reference (Heun, {args.ode_ref_steps} steps, float32)", num_inference_steps=args.ode_ref_steps,
        solver=REFERENCE_SOLVER, grid="polynomial")) if ode_seeds else None
    if args.dtype == "bfloat16":
        # The arms run the network in bf16 (about twice as fast on a CPU with AVX512-BF16, ~37x slower on one
        # without: measured 2026-12); the reference stays float32. What bf16 alone changes at a fine grid bounds
        # the ODE errors that can be told apart.
        if "bf16_floor" not in result and ode_seeds:
            fine = dict(num_inference_steps=50, solver="dpmpp_2m", grid="polynomial")
            x32 = solve("bf16 floor: dpmpp_2m at 50 NFE, float32", **fine)
            pipe.unet.to(torch.bfloat16)
            x16 = solve("bf16 floor: dpmpp_2m at 50 NFE, bfloat16", **fine)
            result["bf16_floor"] = {"ode_error_bf16_vs_fp32": round(float(ode_error(x16, x32).mean()), 6),
                                    "note": "dpmpp_2m at 50 NFE, same noise: bfloat16 network vs float32"}
        pipe.unet.to(torch.bfloat16)

    features = FeatureCache(out, config)

    def run_arm(key: str, arm: dict, n: int, nfe_seen: int, network_evals: int, steps: int, arm_pipe=pipe, **call):
        """One row: FD (all / even / odd seeds, interval), class accuracy, ODE error, time; the features cached."""
        feats, correct, errs, t0, info = [], 0, [], time.perf_counter(), {}
        for batch, x in generate(arm_pipe, seeds, args.batch_size, cls, device, info, **call):
            images = to_uint8(x)
            feats.append(batched_features(net, images).double().numpy())
            if classifier is not None:
                want = torch.tensor(class_ids_for(pipe, cls, batch))
                correct += int((classifier.predict(images).cpu() == want).sum())
            in_ode = [i for i, s in enumerate(batch) if s in ode_seeds]
            if in_ode:
                errs.append(ode_error(x[in_ode].float().cpu(), x_ref[[ode_seeds.index(batch[i]) for i in in_ode]]))
        seconds = time.perf_counter() - t0
        f = np.concatenate(feats)
        features.save(key, f)
        fd = lambda g: round(fd_to(g, ref), 4)  # noqa: E731
        if interval is not None and arm_pipe is pipe:   # what ran: steps outside the interval cost 1, not 2
            network_evals = info["nfe"]
        row = {**arm, "nfe_budget": n, "nfe": nfe_seen, "network_evals": network_evals, "steps": steps,
               "fd": fd(f), "fd_even": fd(f[args.seed % 2::2]), "fd_odd": fd(f[(args.seed + 1) % 2::2]),
               "class_accuracy": round(correct / len(seeds), 4) if classifier is not None else None,
               "ode_error": round(float(torch.cat(errs).mean()), 6) if errs else None, "seconds": round(seconds, 2)}
        if draws:
            row["fd_ci95"] = fd_with_interval(f, ref, draws, args.seed)["fd_ci95"]
        result["rows"][key] = row
        atomic_write_json(out, result)

    # 2. Every arm at every NFE budget, same seeds and noise (the one-step generators first: they are cheap)
    # The trained weights each learned arm uses (safetensors and config with its grid): a row measured with other
    # weights at the same path is measured again (rows from before this was recorded are kept)
    # (one per solver, NFE, guidance and grid: its grid steps give that NFE, with AFS where it uses it)
    learned = predictors_by_nfe(args.model)
    have = {k: weights_fingerprint(p["path"], "*.safetensors") + "-" + weights_fingerprint(p["path"], "config.json")
            for k, p in learned.items()}
    trained = lambda arm, n: have.get((arm.get("solver"), n, guidance, arm.get("grid")))  # noqa: E731

    def runnable(arm, n):  # AMED: a predictor for this NFE, guidance and grid; a learned grid: AMED only
        if "solver" not in arm:
            return True
        if solver_entry(arm["solver"]).needs_predictor:   # trained for guidance at every step: no interval
            return (arm["solver"], n, guidance, arm["grid"]) in have and interval is None
        return arm["grid"] != LEARNED

    # a generator's weights are recorded in its row: one retrained at the same path is measured again, its old
    # row kept under another name
    todo = [({"arm": generator_arm(g), "generator": str(g), "weights": weights_fingerprint(g, "unet/*.safetensors")},
             1) for g in generators]
    for arm, _ in todo:
        _keep_replaced_generator(result, features, arm, out)
    todo += [(arm, n) for n in nfes for arm in arm_list(solvers, grids, schedulers, skip_rhos) if runnable(arm, n)]
    if teacher_nfe:  # 3. the teacher's own samples, last: the most expensive arm
        todo.append(({"arm": f"teacher:{teacher_solver}", "solver": teacher_solver, "grid": "polynomial"},
                     teacher_nfe))
    def done(arm, n):  # a generator's row is here only when measured with its weights (_keep_replaced_generator)
        row = result["rows"].get(row_key(arm["arm"], n))
        return row is not None and row.get("trained", trained(arm, n)) == trained(arm, n)

    bar = tqdm([(a, n) for a, n in todo if not done(a, n)], desc="bench samplers")
    for arm, n in bar:
        key = row_key(arm["arm"], n)
        bar.set_postfix(arm=key)
        if "generator" in arm:  # no ODE error: a generator does not solve the teacher's ODE from this noise
            gpipe = load_generator(arm["generator"], pipe, device, args.dtype)
            run_arm(key, arm, 1, 1, 1, 1, arm_pipe=gpipe, num_inference_steps=1)
            result["rows"][key]["ode_error"] = None
        elif "scheduler" in arm:
            pipe.scheduler = getattr(diffusers, arm["scheduler"]).from_config(genkit_scheduler.config)
            run_arm(key, arm, n, n, n * cfg_factor, n, solver=None, num_inference_steps=n, **guide)
        else:
            pipe.scheduler = genkit_scheduler
            p = learned.get((arm["solver"], n, guidance, arm["grid"]))
            steps = p["num_steps"] if p else steps_for_nfe(arm["solver"], n)
            nfe_seen = count_nfe(arm["solver"], steps, p["afs"] if p else None)  # per guided call
            run_arm(key, arm, n, nfe_seen, nfe_seen * cfg_factor, steps, solver=arm["solver"], grid=arm["grid"],
                    num_inference_steps=steps, skip_tuning=arm.get("skip_tuning"), **guide)
            if trained(arm, n) is not None:
                result["rows"][key]["trained"] = trained(arm, n)
                atomic_write_json(out, result)
    # 4. Every row's FD to the teacher's samples (paired: row k of both from seed k)
    teacher = features.load(row_key(f"teacher:{teacher_solver}", teacher_nfe)) if teacher_nfe else None
    for key, row in result["rows"].items():
        f = features.load(key) if teacher is not None and "fd_teacher" not in row else None
        if f is not None:
            between = fd_between(f, teacher, max(draws, 1), args.seed)
            row["fd_teacher"] = between["fd"]
            if draws:
                row["fd_teacher_ci95"] = between["fd_ci95"]
    # 5. Every row's within-class spread (a class's features against each other; ~0: one image per class, which
    # FD with a class cycle barely sees), from the cached features; class of seed s as when drawn
    labels = class_ids_for(pipe, cls, seeds) or [0] * len(seeds)
    for key, row in result["rows"].items():   # none while no class has 2 images (--num below 2 x classes)
        f = features.load(key) if "spread" not in row and len(set(labels)) < len(labels) else None
        if f is not None and len(f) == len(seeds):
            row["spread"] = round(within_class_spread(f, labels), 3)
    if draws:
        # a ratio whose features are not on this machine (an earlier run's cache) is kept as it was measured
        first = row_key(generator_arm(generators[0]), 1) if generators else None
        result["ratios"] = {**result.get("ratios", {}),
                            **_paired_ratios(result["rows"], features, ref, teacher, draws, args.seed, first)}
    pipe.scheduler = genkit_scheduler
    result["ranking_agreement"] = _ranking_agreement(result["rows"])
    atomic_write_json(out, result)
    atomic_write_bytes(out.with_suffix(".md"), markdown_table(result).encode())
    print(markdown_table(result))
    return result


def _paired_ratios(rows: dict, features, ref, teacher, draws: int, seed: int, generator: str | None = None) -> dict:
    """Each arm's FD over its baseline's on the same seeds, with paired bootstrap intervals (an interval that
    excludes 1 separates the two arms even where their own FD intervals overlap): genkit and diffusers arms over
    Euler at the same NFE budget; a skip-tuned arm over the same arm untuned (what `genkit bench skip` decides on);
    one-step generators over the teacher's samples row, and over `generator` (the row key of the run's first
    --generators). "fd": to the train reference; "fd_teacher": to the teacher's samples (when measured)."""
    from genkit.metrics.bootstrap import paired_ratio

    teacher_key = next((k for k in rows if k.startswith("teacher:")), None)
    out = {}
    for key, row in rows.items():
        if "generator" in row:
            bases = [teacher_key, generator]
        elif row.get("skip_tuning") is not None:
            bases = [row_key(arm_name(row["solver"], row["grid"]), row["nfe_budget"])]
        else:
            bases = [row_key(arm_name("euler", "polynomial"), row["nfe_budget"])]
        for base in bases:
            if key.startswith("teacher:") or base in (None, key) or base not in rows:
                continue
            fa, fb = features.load(base), features.load(key)
            if fa is None or fb is None:
                continue
            pair = {"fd": paired_ratio(fa, fb, ref, draws, seed)}
            if teacher is not None and base != teacher_key:
                pair["fd_teacher"] = paired_ratio(fa, fb, teacher, draws, seed)
            out[f"{key} / {base}"] = pair
    return out


def _keep_replaced_generator(result: dict, features, arm: dict, out: Path) -> None:
    """A generator folder whose weights changed since its row was measured (a new generator shipped at the same
    path): its old row, cached features and ratios stay, as arm "<name>~<old weights>", so what it scored is not
    lost when the arm is measured again. Features move first: a kill before the JSON is written repeats this."""
    key = row_key(arm["arm"], 1)
    row = result["rows"].get(key)
    if row is None or row.get("weights", arm["weights"]) == arm["weights"]:   # (no "weights": from before they were
        return                                                                # recorded; counts as these)
    name = f"{arm['arm']}~{row['weights']}"
    kept = row_key(name, 1)
    features.rename(key, kept)
    result["rows"][kept] = {**result["rows"].pop(key), "arm": name}
    result["ratios"] = {(kept + k[len(key):] if k.startswith(key + " / ") else k): v
                        for k, v in result.get("ratios", {}).items()}
    atomic_write_json(out, result)


def load_generator(path: str, teacher, device, dtype: str):
    """A one-step generator for the teacher's arms: the same class names (so seed s gets the same class)."""
    from genkit.loading import load_pipeline as load

    from .common import is_one_step

    gen = load(path, device, dtype=getattr(torch, dtype))
    if not is_one_step(gen):
        raise ValueError(f"--generators={path!r} is not allowed: not a one-step generator folder (OneStepPipeline)")
    if list(gen.config.get("class_names") or []) != list(teacher.config.get("class_names") or []):
        raise ValueError(f"--generators={path!r} is not allowed: its class names differ from the model's")
    return gen


def _floor(net, fid, ref, res: int, n: int, features_model) -> dict | None:
    """What unseen real emoji score against the same reference: the whole val split, and (FD is biased upward
    at small n) the mean and range over 5 seeded random val subsets of the arms' own n."""
    from genkit.metrics import FrechetDistance, frechet_distance

    from .evaluate import openmoji_images

    try:
        val = resolve_ref(f"openmoji-val-{res}", res, "openmoji", features_model)[0]
    except ValueError:
        return None
    out = {"fd_val_vs_train": round(frechet_distance(val.mu, val.sigma, ref.mu, ref.sigma), 6), "val_n": val.n,
           "note": "FD of OpenMoji val (emoji never seen in training) against the reference"}
    images = openmoji_images("val", res)
    if n <= len(images):
        values = []
        for seed in range(5):
            fd = FrechetDistance(net, fid, resolution=res)
            fd.set_reference(ref)
            fd.update(images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]])
            values.append(fd.compute())
        out.update(fd_val_subsets_at_n=round(sum(values) / len(values), 4), subsets_min=round(min(values), 4),
                   subsets_max=round(max(values), 4), n=n)
    return out


def _command(args) -> str:
    parts = ["genkit bench samplers", f"--model {args.model}", f"--nfe {args.nfe}", f"--num {args.num}",
             f"--ode-num {args.ode_num}", f"--ode-ref-steps {args.ode_ref_steps}", f"--solvers {args.solvers}",
             f"--grids {args.grids}",
             f"--schedulers {args.schedulers}", f"--seed {args.seed}", f"--batch-size {args.batch_size}",
             f"--dtype {args.dtype}"] + ([f"--skip-rhos {args.skip_rhos}"] if getattr(args, "skip_rhos", None) else [])
    if getattr(args, "bootstrap", 0):
        parts.append(f"--bootstrap {args.bootstrap}")
    if getattr(args, "teacher_nfe", 0):
        parts.append(f"--teacher-nfe {args.teacher_nfe} --teacher-solver {args.teacher_solver}")
    if getattr(args, "generators", None):
        parts.append(f"--generators {args.generators}")
    if args.guidance is not None:
        parts.append(f"--guidance {args.guidance}")
    if getattr(args, "guidance_sigma_range", None):
        parts.append(f"--guidance-sigma-range {args.guidance_sigma_range}")
    if args.class_label is not None:
        parts.append(f"--class {args.class_label}")
    return " ".join(parts + [f"--out {args.out}"])


def _resume(out: Path, config: dict) -> dict:
    """Rows (and their paired ratios) of an earlier run of the same configuration (same model weights, seeds,
    guidance, reference)."""
    old = earlier_result(out, config)
    if not old:
        return {"rows": {}}
    kept = {k: old[k] for k in ("rows", "bf16_floor", "ratios") if k in old}
    return {**kept, "commands": old.get("commands", [old["command"]] if "command" in old else [])}


def _load_or_make_reference(out: Path, config: dict, make) -> torch.Tensor:
    from safetensors.torch import load_file, save_file

    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    path = out.with_name(f".{out.stem}.ode-ref-{key}.safetensors")
    if path.is_file():
        return load_file(str(path))["x"]
    x = make().cpu().contiguous()
    with atomic_path(path, suffix=".safetensors") as tmp:  # creates the folder too
        save_file({"x": x}, str(tmp))
    return x


def _ranking_agreement(rows: dict) -> dict:
    """Per NFE budget in rows (from every run, not only this one): do the even-seed and odd-seed halves rank the
    arms the same? (Spearman's rho of fd_even, fd_odd.)"""
    out = {}
    for n in sorted({v["nfe_budget"] for v in rows.values()}):
        r = [v for v in rows.values() if v["nfe_budget"] == n]
        if len(r) < 3:
            continue
        rank = lambda key: {id(v): i for i, v in enumerate(sorted(r, key=lambda v: v[key]))}  # noqa: E731
        a, b = rank("fd_even"), rank("fd_odd")
        d2 = sum((a[id(v)] - b[id(v)]) ** 2 for v in r)
        out[str(n)] = round(1 - 6 * d2 / (len(r) * (len(r) ** 2 - 1)), 4)
    return out


def markdown_table(result: dict) -> str:
    rows = result["rows"]
    nfes = sorted({v["nfe_budget"] for v in rows.values()})
    arms = list(dict.fromkeys(v["arm"] for v in rows.values()))
    c = result["config"]
    f = result["floor"]
    if not f:
        floor = ""
    elif "fd_val_subsets_at_n" in f:
        floor = (f", floor: FD of {f['n']} real val emoji = {f['fd_val_subsets_at_n']:.2f} "
                 f"(range {f['subsets_min']:.2f}-{f['subsets_max']:.2f} over 5 subsets)")
    else:
        floor = f", floor FD(val vs train) = {f['fd_val_vs_train']:.3f}"
    interval = f" at sigma in [{c['guidance_sigma_range']}] only" if "guidance_sigma_range" in c else ""
    what = "FD-OpenMoji" + (" to the train reference [95% interval]" if c.get("bootstrap_draws") else "") + (
        f" / FD to the teacher's samples ({c['teacher']})" if "teacher" in c else "")
    lines = [f"{what} (lower is better) / class accuracy / ODE error, n = {c['num']} "
             f"(ODE error on {c['ode_num']}), guidance {c['guidance']}{interval}, class {c['class']}{floor}",
             "", "| arm | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
    best = {n: min((v["fd"] for v in rows.values() if v["nfe_budget"] == n), default=None) for n in nfes}
    for arm in arms:
        cells = []
        for n in nfes:
            v = rows.get(row_key(arm, n))
            if v is None:
                cells.append("")
                continue
            fd = f"**{v['fd']:.2f}**" if v["fd"] == best[n] else f"{v['fd']:.2f}"
            if "fd_ci95" in v:
                fd += " [{:.2f}, {:.2f}]".format(*v["fd_ci95"])
            if "fd_teacher" in v:
                fd += f" / {v['fd_teacher']:.2f}" + (" [{:.2f}, {:.2f}]".format(*v["fd_teacher_ci95"])
                                                     if "fd_teacher_ci95" in v else "")
            acc = f"{100 * v['class_accuracy']:.0f}%" if v["class_accuracy"] is not None else "-"
            ode = f"{v['ode_error']:.3f}" if v["ode_error"] is not None else "-"
            cells.append(f"{fd} / {acc} / {ode}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    agreement = result.get("ranking_agreement")
    lines += ["", f"Ranking agreement between even and odd seeds (Spearman rho per NFE): {agreement}",
              ""] + [f"Command: `{c}`" for c in result.get("commands", [result["command"]])] + [""]
    return "\n".join(lines)
