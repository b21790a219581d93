"""The solver registry: one entry per solver, read by the pipelines, the CLI, the app and `genkit bench`.

Each entry holds the solver function, its exact network evaluations (NFE) for a number of grid steps, whether
it needs learned parameters (AMED's predictor, BNS weights) and the name a UI shows. The NFE formulas are
checked in tests against a counting denoiser, so the table and the code cannot drift apart.

    get_solver("dpmpp_2m")(denoise, x, sigmas)      nfe("heun", 5) == 9      steps_for_nfe("amed", 5) == 4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import amed, bns, solvers
from ..checks import bad


@dataclass(frozen=True)
class SolverEntry:
    name: str
    fn: Callable
    display: str
    evals_per_step: int = 1          # network evaluations of a step that does not end at sigma = 0
    last_step_evals: int = 1         # ... of the last step, to sigma = 0 (Euler there: x = D)
    needs_predictor: bool = False    # AMED / BNS: sampling needs parameters trained for this grid
    min_steps: int = 1
    has_afs: bool = False            # the first evaluation can be replaced (AFS: AMED's analytical first step,
                                     # BNS's per-class table of D at sigma_max)
    afs_default: bool = False        # ... and is, unless a predictor's config says otherwise

    def nfe(self, num_steps: int, afs: bool | None = None) -> int:
        """Exact denoiser calls on a grid of num_steps steps ending at sigma = 0 (AFS saves one call; None: the
        solver's default, as the shipped predictors use it: on for AMED, off for BNS)."""
        afs = self.afs_default if afs is None else afs
        saved = 1 if self.has_afs and afs else 0
        return self.evals_per_step * (num_steps - 1) + self.last_step_evals - saved


def _entries():
    one = dict(evals_per_step=1, last_step_evals=1)
    two = dict(evals_per_step=2, last_step_evals=1)
    # AMED (as the paper): 2 evaluations per interval, and the sample stops at sigma_min (no call at the step to 0)
    amed_kw = dict(evals_per_step=2, last_step_evals=0, needs_predictor=True, min_steps=2, has_afs=True,
                   afs_default=True)
    table = [
        SolverEntry("euler", solvers.euler, "Euler (DDIM)", **one),
        SolverEntry("heun", solvers.heun, "Heun (EDM)", **two),
        SolverEntry("dpm2", solvers.dpm2, "DPM-Solver-2", **two),
        SolverEntry("dpmpp_2m", solvers.dpmpp_2m, "DPM-Solver++(2M)", **one),
        SolverEntry("dpmpp_3m", solvers.dpmpp_3m, "DPM-Solver++(3M)", **one),
        SolverEntry("ipndm", solvers.ipndm, "iPNDM", **one),
        SolverEntry("amed", amed.sampler("amed"), "AMED-Solver", **amed_kw),
    ]
    table += [SolverEntry(f"amed-{b}", amed.sampler(b), f"AMED-Plugin ({d})", **amed_kw)
              for b, d in (("euler", "Euler"), ("dpm2", "DPM-Solver-2"), ("dpmpp_2m", "DPM-Solver++(2M)"),
                           ("ipndm", "iPNDM"))]
    # learned multistep (bns.py): one evaluation per step, the last one to sigma = 0 included; with AFS the first
    # (at sigma_max, where the final sample hardly depends on D beyond its class) is read from a per-class table
    table.append(SolverEntry("bns", bns.sample, "Learned multistep (BNS-style)", **one, needs_predictor=True,
                             min_steps=2, has_afs=True))
    return {e.name: e for e in table}


REGISTRY: dict[str, SolverEntry] = _entries()


def solver_names(predictor: bool | None = None) -> list[str]:
    """Registered solver names, in display order; predictor=False: only training-free ones, True: only learned
    ones (AMED, BNS)."""
    return [n for n, e in REGISTRY.items() if predictor is None or e.needs_predictor == predictor]


def solver_entry(name: str, param: str = "solver") -> SolverEntry:
    if name not in REGISTRY:
        bad(param, name, "one of " + ", ".join(REGISTRY))
    return REGISTRY[name]


def get_solver(name: str):
    return solver_entry(name).fn


def nfe(name: str, num_steps: int, afs: bool | None = None) -> int:
    """Exact denoiser calls of `name` on a grid of num_steps steps ending at sigma = 0 (CFG not counted)."""
    return solver_entry(name).nfe(num_steps, afs)


def steps_for_nfe(name: str, budget: int, afs: bool | None = None) -> int:
    """The most grid steps whose NFE fits the budget (at least the solver's minimum)."""
    e = solver_entry(name)
    steps = e.min_steps
    while e.nfe(steps + 1, afs) <= budget:
        steps += 1
    return steps


def available_solvers(model_dir=None) -> list[str]:
    """Training-free solvers plus the learned ones for which model_dir/amed/ holds trained parameters (for UIs)."""
    have = {p["solver"] for p in amed.list_predictors(model_dir)}
    return [n for n, e in REGISTRY.items() if not e.needs_predictor or n in have]
