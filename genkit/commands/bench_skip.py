"""`genkit bench skip`: skip-tuning's rho_bottom sweep per solver and NFE, the best rho stored in the model folder.

    genkit bench skip --model weights/openmoji-32 --solvers euler,dpmpp_2m,ipndm --nfe 5,9 --rhos 0.6,0.7,0.8,0.9 \
        --num 1000 --out weights/openmoji-32/bench_skip.json

The arms are `genkit bench samplers` arms (same seeds, noise, FD, class accuracy, ODE error) on the model's
grid, each solver with and without skip-tuning. Skip-tuning changes the network, so its ODE error to the
untuned ODE's solution measures how far it moves the samples, not how good they are: the pick is by
FD-OpenMoji (the paper tunes rho on FID), and is only as reliable as --num allows (the JSON keeps n).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import atomic_write_json


def run_skip(args) -> dict:
    from genkit.sampling import steps_for_nfe
    from genkit.skip_tuning import SKIP_FILE

    from .bench_samplers import parse_list, run_samplers
    from .common import load_pipeline

    grid = load_pipeline(args.model).scheduler.config.get("grid", "polynomial")
    rhos = [r for r in parse_list("rhos", args.rhos, cast=float) if r != 1.0]
    sargs = argparse.Namespace(**{**vars(args), "grids": grid, "schedulers": "", "skip_rhos": ",".join(map(str, rhos)),
                                  "dtype": "float32"})
    result = run_samplers(sargs)
    best = []
    for solver in parse_list("solvers", args.solvers):
        for n in parse_list("nfe", args.nfe, cast=int):
            rows = [v for v in result["rows"].values()
                    if v.get("solver") == solver and v["nfe_budget"] == n and v.get("grid") == grid]
            if not rows:
                continue
            pick = min(rows, key=lambda v: v["fd"])
            base = next((v for v in rows if v.get("skip_tuning") is None), None)
            best.append({"solver": solver, "nfe": n, "num_steps": steps_for_nfe(solver, n), "grid": grid,
                         "guidance": result["config"]["guidance"], "rho_bottom": pick.get("skip_tuning") or 1.0,
                         "fd": pick["fd"], "fd_off": base["fd"] if base else None, "n": result["config"]["num"]})
    out = {"best": best, "metric": "lowest FD-OpenMoji vs the train reference", "bench": str(args.out),
           "command": result["command"]}
    atomic_write_json(Path(args.model) / SKIP_FILE, out)
    print(f"wrote {Path(args.model) / SKIP_FILE}: " + ", ".join(f"{b['solver']}@{b['nfe']}: rho {b['rho_bottom']:g}"
                                                                 for b in best))
    return out
