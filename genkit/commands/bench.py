"""`genkit bench overhead`: what the pipeline costs on top of the network.

Arms, side by side on the same model, batch and noise, interleaved to share the machine's noise:
  bare               S forward calls of the UNet on a fixed batch (the floor; 2B rows under CFG)
  pipeline           PixelDiffusionPipeline at exactly S NFE with the first of --solvers (euler: S steps),
                     output_type="pt"
  pipeline:SOLVER    the same for every further solver of --solvers, at the same S NFE
  generator:NAME     with --generators: a one-step generator distilled from the model (OneStepPipeline, its
                     guidance built in), same batch and classes
Reports the median time of each arm over --repeats, the ratio pipeline / bare, and each further solver over the
first: `--solvers euler,amed-euler --guidance 2 --steps 5` is what an AMED predictor adds to Euler at equal NFE
(it runs once per step and reads the UNet's bottleneck through a hook). Each generator is reported as its
speed-up over the first solver's pipeline at S NFE: with S the teacher's NFE at the generator's FD (from a
`bench samplers --generators` run on the same seeds) it is the one-step throughput gain at equal FD.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from .. import __version__
from .common import atomic_write_json, load_pipeline, pick_device


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_overhead(args) -> dict:
    from genkit.checks import LIMITS, bad, check_float
    from genkit.sampling import solver_entry, steps_for_nfe
    from genkit.sampling.amed import predictors_by_nfe
    from genkit.sampling.grids import LEARNED

    from .bench_samplers import generator_arm, load_generator, parse_list

    solvers = [v.strip() for v in args.solvers.split(",") if v.strip()]
    if not solvers or len(set(solvers)) != len(solvers):
        bad("--solvers", args.solvers, "a comma-separated list of distinct solver names, e.g. euler,amed-euler")
    guidance = check_float("--guidance", args.guidance, 0, LIMITS["guidance"])
    s = args.steps
    steps = {}
    trained = predictors_by_nfe(args.model)
    for name in solvers:
        entry = solver_entry(name, "--solvers")
        # a learned solver: the grid steps of its weights for this NFE (AFS saves an evaluation where they use it),
        # a learned grid's first, as the pipeline picks them
        fit = sorted((p for (solver, n, g, _), p in trained.items() if (solver, n, g) == (name, s, guidance)),
                     key=lambda p: p["grid"] != LEARNED)
        afs = fit[0]["afs"] if fit else None
        steps[name] = fit[0]["num_steps"] if fit else steps_for_nfe(name, s, afs)
        if entry.nfe(steps[name], afs) != s:  # equal NFE or the ratio says nothing
            bad("--steps", s, f"an NFE that every one of --solvers reaches exactly ({name} reaches "
                f"{entry.nfe(steps[name], afs)} and {entry.nfe(steps[name] + 1, afs)}, not {s})")
    device = pick_device(args.device)
    pipe = load_pipeline(args.model, device)
    if guidance != 1.0 and not pipe.num_classes:
        bad("--guidance", guidance, "1 for an unconditional model")
    unet, b = pipe.unet, args.batch_size
    cfg = unet.config
    rows = b * (2 if guidance != 1.0 else 1)  # CFG: cond and uncond in one call, as the pipeline batches them
    x = torch.randn(rows, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)
    t = torch.full((rows,), 500.0, device=device)
    labels = torch.full((rows,), pipe.num_classes, device=device) if pipe.num_classes else None
    classes = [i % pipe.num_classes for i in range(b)] if guidance != 1.0 else None
    gens = [torch.Generator(device).manual_seed(i) for i in range(b)]

    def bare():
        with torch.no_grad():
            for _ in range(s):
                unet(x, t, class_labels=labels)

    def pipeline(name):
        return lambda: pipe(batch_size=b, num_inference_steps=steps[name], solver=name, generator=gens,
                            guidance_scale=guidance, class_labels=classes, output_type="pt")

    arms = {"bare": bare, "pipeline": pipeline(solvers[0])}
    arms.update({f"pipeline:{name}": pipeline(name) for name in solvers[1:]})
    def one_step(path):
        gen = load_generator(path, pipe, device, "float32")
        return lambda: gen(batch_size=b, generator=gens, class_labels=classes, output_type="pt")

    generators = {path: generator_arm(path)
                  for path in (parse_list("generators", args.generators) if args.generators else [])}
    arms.update({name: one_step(path) for path, name in generators.items()})
    for fn in arms.values():  # warm-up
        fn()
    times = {k: [] for k in arms}
    for _ in range(args.repeats):
        for k, fn in arms.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "bench": "overhead", "model": args.model, "nfe": s, "batch_size": b, "repeats": args.repeats,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        # seconds to 5 significant digits: a one-step arm can take a few ms, where 4 decimals would skew its ratio
        "median_s": {k: float(f"{v:.5g}") for k, v in med.items()},
        "all_s": {k: [float(f"{x:.5g}") for x in v] for k, v in times.items()},
        "ratio_pipeline_over_bare": round(med["pipeline"] / med["bare"], 4),
        "solvers": solvers, "steps": steps, "guidance": guidance,
        "ratio_over_first_solver": {n: round(med[f"pipeline:{n}"] / med["pipeline"], 4) for n in solvers[1:]},
        "generator_speedup_over_first_solver": {k: round(med["pipeline"] / med[k], 4) for k in generators.values()},
        "command": f"genkit bench overhead --model {args.model} --steps {s} --batch-size {b} --repeats {args.repeats}"
                   + (f" --solvers {','.join(solvers)}" if solvers != ["euler"] else "")
                   + (f" --guidance {guidance:g}" if guidance != 1.0 else "")
                   + (f" --generators {','.join(generators)}" if generators else ""),
        "genkit": __version__, "torch": torch.__version__,
    }
    print(f"pipeline ({solvers[0]}) / bare UNet at {s} NFE, batch {b}: {result['ratio_pipeline_over_bare']:.3f}x "
          f"({med['pipeline']:.3f}s vs {med['bare']:.3f}s, median of {args.repeats})")
    for n, r in result["ratio_over_first_solver"].items():
        print(f"{n} / {solvers[0]} at {s} NFE: {r:.3f}x")
    for k, r in result["generator_speedup_over_first_solver"].items():
        print(f"{k} (1 network evaluation) is {r:.2f}x as fast as {solvers[0]} at {s} NFE")
    if args.out:
        atomic_write_json(Path(args.out), result)
    return result
