"""`genkit bench skip`: skip-tuning's rho_bottom sweep per solver and NFE, the best rho stored in the model folder.

    genkit bench skip --model weights/openmoji-32 --solvers euler,dpmpp_2m,ipndm --nfe 5,9 --rhos 0.6,0.7,0.8,0.9 \
        --num 1000 --out weights/openmoji-32/bench_skip.json

The arms are `genkit bench samplers` arms (same seeds, noise, FD, class accuracy, ODE error) on --grid (default the
model's; `learned` for AMED predictors that learned theirs), each solver with and without skip-tuning. Skip-tuning
changes the network, so its ODE error to the untuned ODE's solution measures how far it moves the samples, not how
good they are (--ode-num 0 skips it): the pick is by FD-OpenMoji to the train reference (the paper tunes rho on
FID), and only a rho whose paired bootstrap ratio over the untuned arm (same seeds) lies entirely below 1 is
picked; where none does, the pick is 1 (off) and the JSON says so. Without intervals (--bootstrap 0) the lowest
point FD is picked, marked "point". The picks go to MODEL/skip_tuning.json keyed by solver, NFE, grid and guidance;
picks of earlier runs for other keys are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import atomic_write_json, earlier_result


def pick_rho(rows: dict, ratios: dict, solver: str, nfe: int, grid: str) -> dict | None:
    """One solver and NFE budget of a `bench samplers` result -> its pick and sweep (None if the untuned arm is
    missing). The pick: the lowest FD among the rhos that beat the untuned arm (paired 95% interval of FD ratio
    below 1; without intervals, a lower point FD); rho 1 (off) when none does. Each sweep entry also carries its
    FD to the teacher's samples and that ratio when the run measured them (reported, not used for the pick)."""
    from .bench_samplers import arm_name, row_key

    off_key = row_key(arm_name(solver, grid), nfe)
    off = rows.get(off_key)
    if off is None:
        return None
    sweep = []
    for key, row in rows.items():
        if row.get("solver") == solver and row.get("grid") == grid and row["nfe_budget"] == nfe \
                and row.get("skip_tuning") is not None:
            pair = ratios.get(f"{key} / {off_key}", {})
            fd, fd_t = pair.get("fd"), pair.get("fd_teacher")
            sweep.append({"rho_bottom": row["skip_tuning"], "fd": row["fd"],
                          "fd_ratio": fd["ratio"] if fd else None, "fd_ratio_ci95": fd["ci95"] if fd else None,
                          "fd_teacher": row.get("fd_teacher"),
                          "fd_teacher_ratio": fd_t["ratio"] if fd_t else None,
                          "fd_teacher_ratio_ci95": fd_t["ci95"] if fd_t else None,
                          "class_accuracy": row.get("class_accuracy")})
    paired = bool(sweep) and all(s["fd_ratio_ci95"] for s in sweep)
    better = [s for s in sweep if (s["fd_ratio_ci95"][1] < 1 if paired else s["fd"] < off["fd"])]
    pick = min(better, key=lambda s: s["fd"]) if better else None
    return {"solver": solver, "nfe": nfe, "grid": grid, "rho_bottom": pick["rho_bottom"] if pick else 1.0,
            "fd": pick["fd"] if pick else off["fd"], "fd_off": off["fd"], "fd_teacher_off": off.get("fd_teacher"),
            "class_accuracy_off": off.get("class_accuracy"),
            "fd_ratio": pick["fd_ratio"] if pick else None, "fd_ratio_ci95": pick["fd_ratio_ci95"] if pick else None,
            "rule": "paired" if paired else "point", "sweep": sorted(sweep, key=lambda s: s["rho_bottom"])}


def run_skip(args) -> dict:
    from genkit.sampling import steps_for_nfe
    from genkit.skip_tuning import SKIP_FILE

    from .bench_samplers import parse_list, run_samplers
    from .common import load_pipeline

    grid = args.grid or load_pipeline(args.model).scheduler.config.get("grid", "polynomial")
    rhos = [r for r in parse_list("rhos", args.rhos, cast=float) if r != 1.0]
    sargs = argparse.Namespace(**{**vars(args), "grids": grid, "schedulers": "", "skip_rhos": ",".join(map(str, rhos)),
                                  "dtype": "float32"})
    result = run_samplers(sargs)
    best = []
    for solver in parse_list("solvers", args.solvers):
        for n in parse_list("nfe", args.nfe, cast=int):
            pick = pick_rho(result["rows"], result.get("ratios", {}), solver, n, grid)
            if pick is not None:
                best.append({**pick, "num_steps": steps_for_nfe(solver, n), "guidance": result["config"]["guidance"],
                             "n": result["config"]["num"], "command": _command(args)})
    out = {"best": best, "metric": "FD-OpenMoji vs the train reference; a rho is picked only where its paired "
                                   "bootstrap FD ratio over the untuned arm has a 95% interval below 1, else 1 (off)",
           "bench": str(args.out), "command": _command(args), "samplers_command": result["command"]}
    # picks of earlier runs for other (solver, NFE, grid, guidance) stay: one file serves every run
    path = Path(args.model) / SKIP_FILE
    ours = {_pick_key(b) for b in best}
    kept = [b for b in earlier_result(path).get("best", []) if _pick_key(b) not in ours]
    atomic_write_json(path, {**out, "best": kept + best})

    def said(b):
        lo_hi = "" if b["fd_ratio"] is None else " (FD x{:.3f} [{:.3f}, {:.3f}])".format(b["fd_ratio"],
                                                                                    *b["fd_ratio_ci95"])
        return f"{b['solver']}@{b['nfe']}: rho {b['rho_bottom']:g}{lo_hi}"
    print(f"wrote {Path(args.model) / SKIP_FILE}: " + ", ".join(map(said, best)))
    return out


def _pick_key(b: dict) -> tuple:
    return b["solver"], b["nfe"], b.get("grid"), round(float(b["guidance"]), 6)


def _command(args) -> str:
    teacher = f" --teacher-nfe {args.teacher_nfe} --teacher-solver {args.teacher_solver}" if args.teacher_nfe else ""
    return (f"genkit bench skip --model {args.model} --solvers {args.solvers} --nfe {args.nfe} --rhos {args.rhos} "
            f"--num {args.num} --ode-num {args.ode_num} --seed {args.seed} --batch-size {args.batch_size} "
            f"--bootstrap {args.bootstrap}{teacher}" + (f" --grid {args.grid}" if args.grid else "")
            + (f" --guidance {args.guidance:g}" if args.guidance is not None else "") + f" --out {args.out}")
