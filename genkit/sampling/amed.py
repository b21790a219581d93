"""AMED: approximate mean-direction solvers (Zhou, Chen, Wang, Chen, CVPR 2024; research/diffusion.md §4).

In each interval s -> s_next a tiny predictor picks the point s_mid = s_next^r s^(1-r) whose slope best stands
for the mean slope over the interval; c scales that direction and a the time the network sees there:

    AMED-Solver:  x_mid = x + (s_mid - s) d(x, s);   x_next = x + c (s_next - s) d(x_mid, a s_mid)      (eq. 9)
    AMED-Plugin:  the base solver's own update s -> s_mid, then s_mid -> s_next with the direction times c;
                  multistep histories (iPNDM, DPM-Solver++) hold both evaluations of every interval.

r = 0.5, c = 1, a = 1 is DPM-Solver-2. The predictor reads the UNet's bottleneck (a forward hook on
`unet.mid_block`) from the evaluation at s, so it costs no network evaluation. As in the paper, sampling stops
at sigma_min (the last grid step, to 0, costs nothing): N grid steps cost 2 (N - 1) evaluations, one less
with the analytical first step (AFS: d = x / sqrt(1 + s^2) at sigma_max), so N = 3, 4, 5, 6 give NFE 3, 5, 7, 9.

amed_interval is differentiable (training backpropagates through the evaluation at s_mid into the
predictor); the samplers run it under no_grad.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..checks import bad
from .grids import LEARNED
from .solvers import IPNDM_COEFFS, _loop, _report

AMED_BASES = ("amed", "euler", "dpm2", "dpmpp_2m", "ipndm")
MULTISTEP = ("dpmpp_2m", "ipndm")  # their students keep their own history (no teacher forcing)


def _col(v, x: torch.Tensor) -> torch.Tensor:
    """A float or (N,) tensor -> shape (N, 1, ...) (or 0-d) that broadcasts against x, in x's dtype."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.reshape(-1, *([1] * (x.ndim - 1))) if v.ndim else v


def _sig(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A sigma of shape (N, 1, ...) or 0-d -> what a denoiser takes: (N,) or 0-d."""
    return v.reshape(-1) if v.ndim else v


@dataclass
class AMEDState:
    """Multistep history across intervals (detached): iPNDM's slopes; DPM-Solver++'s (denoised, sigma)."""
    slopes: list = field(default_factory=list)
    denoised: list = field(default_factory=list)


def _ab(slopes):
    """iPNDM's Adams-Bashforth combination of up to 4 slopes (oldest first)."""
    coeffs = IPNDM_COEFFS[len(slopes) - 1]
    return sum(c * g for c, g in zip(coeffs, reversed(slopes)))


def _dpmpp(x, den, s, s_to, prev, scale=1.0):
    """DPM-Solver++(2M) from s to s_to with D = den at s and prev = (D, sigma) of the step before (or None)."""
    h = torch.log(s) - torch.log(s_to)                                    # 1. step in lambda = -log sigma
    if prev is None:
        d = den
    else:                                                                 # 2. linear extrapolation of D
        r = (torch.log(prev[1]) - torch.log(s)) / h
        d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * prev[0]
    return (s_to / s) * x - scale * torch.expm1(-h) * d                  # 3. exact linear part


def amed_interval(denoise, x, s: float, s_next: float, predict, base: str = "amed", state: AMEDState | None = None,
                  use_afs: bool = False):
    """One AMED interval s -> s_next > 0 -> (x_next, r, c, a). predict(x, s, s_next, use_afs) -> (r, c, a),
    floats or (N,) tensors. 1 network evaluation with AFS, else 2."""
    state = state if state is not None else AMEDState()
    S, S_next = _col(s, x), _col(s_next, x)
    # 1. slope at s: the network, or AFS's analytic guess (data mean 0: D = x / (1 + s^2))
    if use_afs:
        d = x / math.sqrt(1 + s * s)
        den = x - S * d
    else:
        den = denoise(x, _col(s, x))
        d = (x - den) / S
    # 2. mean-value point, direction scale, time scale (read from the bottleneck of the call above)
    r, c, a = predict(x, s, s_next, use_afs)
    r, c, a = _col(r, x), _col(c, x), _col(a, x)
    s_mid = S_next ** r * S ** (1 - r)
    # 3. base update s -> s_mid, one evaluation at a * s_mid, base update s_mid -> s_next with direction * c
    if base in ("amed", "dpm2", "euler"):
        x_mid = x + (s_mid - S) * d
        d_mid = (x_mid - denoise(x_mid, _sig(a * s_mid, x))) / s_mid
        if base == "amed":
            x_next = x + c * (S_next - S) * d_mid
        elif base == "dpm2":                                              # generalized DPM-Solver-2
            x_next = x + c * (S_next - S) * (d_mid / (2 * r) + (1 - 1 / (2 * r)) * d)
        else:
            x_next = x_mid + c * (S_next - s_mid) * d_mid
    elif base == "ipndm":
        slopes = (state.slopes + [d])[-4:]
        x_mid = x + (s_mid - S) * _ab(slopes)
        d_mid = (x_mid - denoise(x_mid, _sig(a * s_mid, x))) / s_mid
        slopes = (slopes + [d_mid])[-4:]
        x_next = x_mid + c * (S_next - s_mid) * _ab(slopes)
        state.slopes = [g.detach() for g in slopes]
    elif base == "dpmpp_2m":
        prev = state.denoised[-1] if state.denoised else None
        x_mid = _dpmpp(x, den, S, s_mid, prev)
        den_mid = denoise(x_mid, _sig(a * s_mid, x))
        x_next = _dpmpp(x_mid, den_mid, s_mid, S_next, (den, S), scale=c)
        state.denoised = [(den_mid.detach(), s_mid.detach())]
    else:
        bad("base", base, "one of " + ", ".join(AMED_BASES))
    return x_next, r, c, a


def amed_sample(denoise, x, sigmas, predictor, base: str = "amed", afs: bool = True, callback=None, disable=True):
    """AMED-Solver / AMED-Plugin over a grid (N + 1,) ending at 0; the step to 0 is free (stops at sigma_min)."""
    if predictor is None:
        bad("amed_predictor", None, "an AMED solver needs a trained predictor (training/train_amed.py)")
    state = AMEDState()
    for i in _loop(sigmas, disable):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        if s_next == 0:                                                   # sample at sigma_min: done
            x = _report(callback, i, x, s, s_next, x)
            continue
        x, *_ = amed_interval(denoise, x, s, s_next, predictor, base, state, use_afs=afs and i == 0)
        x = _report(callback, i, x, s, s_next, x)
    return x


def sampler(base: str):
    """The registry's solver function for one base: solver(denoise, x, sigmas, ..., predictor=, afs=)."""
    @torch.no_grad()
    def sample(denoise, x, sigmas, callback=None, disable=True, predictor=None, afs=True):
        return amed_sample(denoise, x, sigmas, predictor, base, afs, callback, disable)
    sample.__name__ = sample.__qualname__ = "amed" if base == "amed" else f"amed_{base}"
    return sample


# -- the predictor ---------------------------------------------------------------------------------------------

class BottleneckTap:
    """Keeps the last output of `unet.mid_block` (N, C, h, w), detached; a context manager whose exit removes
    the hook. Under CFG the batch is [cond; uncond]: the predictor reads the first (conditional) half."""

    def __init__(self, unet):
        self.unet, self.feature, self.handle = unet, None, None

    def _hook(self, module, inputs, output):
        self.feature = (output[0] if isinstance(output, tuple) else output).detach()

    def __enter__(self):
        self.handle = self.unet.mid_block.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        self.feature = None
        return False


def _sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) -> (N, dim): sin / cos of t at dim/2 frequencies 1 ... 1/100 (t = log sigma spans about -6 ... 4.4)."""
    freqs = torch.exp(torch.linspace(0, -math.log(100), dim // 2, device=t.device))
    arg = t[:, None].double() * freqs.double()
    return torch.cat([arg.sin(), arg.cos()], dim=1)


class TrainedFor:
    """What a learned solver's parameters (an AMED predictor, BNS weights) were trained for, from its config:
    solver, num_steps, grid, sigmas, guidance_scale, afs, teacher fingerprint. `check` refuses any other use."""

    def check(self, name: str = "amed_predictor", **want) -> None:
        """ValueError naming every recorded setting that differs from `want` (solver, sigmas, guidance_scale,
        afs, teacher, num_steps): a predictor is only right for the run it was trained for."""
        diffs = []
        for key, value in want.items():
            have = self.config[key]
            if key == "sigmas":
                same = _same_sigmas(have, value)
                have, value = [round(v, 4) for v in have or []], [round(float(v), 4) for v in value]
            elif isinstance(value, float):
                same = math.isclose(float(have), value, rel_tol=1e-6)
            else:
                same = have == value
            if not same:
                diffs.append(f"{key}: trained for {have!r}, asked {value!r}")
        if diffs:
            bad(name, getattr(self, "source", "<predictor>"), "it does not match this run: " + "; ".join(diffs))


class AMEDPredictor(TrainedFor, ModelMixin, ConfigMixin):
    """g_phi(bottleneck, sigma, sigma_next) -> (r, c, a), about 9k parameters (the paper's AMED_predictor).

    The bottleneck (N, C, h, w) is averaged over channels and pooled to 8x8 (64 values) -> 128 -> 4; each noise
    level gets a sinusoidal embedding -> 8; one linear head per output reads the 20 values. Heads start at
    zero: an untrained predictor is DPM-Solver-2 (r = 0.5, c = 1, a = 1). use_feature=False ignores the
    bottleneck: (r, c, a) then depend on the step alone (fits from few teacher trajectories). The config records
    what the predictor was trained for; `check` (TrainedFor) refuses any other use.
    """

    @register_to_config
    def __init__(self, solver: str = "amed", num_steps: int = 4, grid: str = "polynomial", sigmas: list | None = None,
                 guidance_scale: float = 1.0, afs: bool = True, teacher: str = "", scale_dir: float = 0.01,
                 scale_time: float = 0.0, pool: int = 8, hidden: int = 128, time_dim: int = 8,
                 use_feature: bool = True):
        super().__init__()
        self.feat = nn.Sequential(nn.Linear(pool * pool, hidden), nn.SiLU(), nn.Linear(hidden, 4))
        self.t_cur = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU())
        self.t_next = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU())
        width = 4 + 2 * time_dim
        self.head_r, self.head_c, self.head_a = nn.Linear(width, 1), nn.Linear(width, 1), nn.Linear(width, 1)
        for head in (self.head_r, self.head_c, self.head_a):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @property
    def base(self) -> str:
        """The base update: "amed" (AMED-Solver) or the plugin's solver (solver "amed-ipndm" -> "ipndm")."""
        return self.config.solver.removeprefix("amed-")

    @property
    def nfe(self) -> int:
        return 2 * (self.config.num_steps - 1) - (1 if self.config.afs else 0)

    def forward(self, feature: torch.Tensor | None, sigma: torch.Tensor, sigma_next: torch.Tensor):
        """feature (N, C, h, w) or None (AFS: no network call); sigma, sigma_next (N,) -> r, c, a each (N,)."""
        cfg, dtype = self.config, self.head_r.weight.dtype
        n = len(sigma)
        if feature is None or not cfg.use_feature:                      # AFS, or a time-only predictor
            f = torch.zeros(n, cfg.pool * cfg.pool, device=sigma.device, dtype=dtype)
        else:
            f = F.adaptive_avg_pool2d(feature.to(dtype).mean(1, keepdim=True), cfg.pool).flatten(1)
        emb = lambda t: _sinusoidal(t.log(), cfg.time_dim).to(dtype)  # noqa: E731
        h = torch.cat([self.feat(f), self.t_cur(emb(sigma)), self.t_next(emb(sigma_next))], dim=1)
        r = torch.sigmoid(self.head_r(h)).squeeze(1)
        c = 1 - cfg.scale_dir + 2 * cfg.scale_dir * torch.sigmoid(self.head_c(h)).squeeze(1)
        a = 1 - cfg.scale_time + 2 * cfg.scale_time * torch.sigmoid(self.head_a(h)).squeeze(1)
        return r, c, a

    def solver_kwargs(self, tap: BottleneckTap, labels=None, noise=None) -> dict:
        """Keyword arguments of the registry's AMED functions: the step predictor (reading `tap`) and AFS (its
        first evaluation needs neither the labels nor the noise: the same signature as BNSWeights')."""
        return {"predictor": self.step_predictor(tap), "afs": self.config.afs}

    def step_predictor(self, tap: BottleneckTap):
        """predict(x, s, s_next, use_afs) for amed_interval, reading the tap's last bottleneck output."""
        def predict(x, s, s_next, use_afs):
            n = len(x)
            feature = None if use_afs else tap.feature[:n]                # conditional half under CFG
            p = next(self.parameters())
            sig = torch.full((n,), float(s), device=p.device)
            sig_next = torch.full((n,), float(s_next), device=p.device)
            return self(None if feature is None else feature.to(p.device), sig, sig_next)
        return predict


def unet_fingerprint(unet) -> str:
    """sha256 (12 hex) of a network's parameters and buffers in name order: which teacher a predictor belongs to."""
    h = hashlib.sha256()
    for k, v in sorted(unet.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


PREDICTOR_DIR = "amed"  # predictors live in <model folder>/amed/<name>/ (config.json + safetensors)


def load_predictor(path, name: str = "amed_predictor"):
    """An AMEDPredictor or BNSWeights folder (config.json + safetensors), by the config's class name."""
    import json
    from pathlib import Path

    from .bns import BNSWeights

    cfg = Path(path) / "config.json"
    cls = {"AMEDPredictor": AMEDPredictor, "BNSWeights": BNSWeights}.get(
        json.loads(cfg.read_text()).get("_class_name") if cfg.is_file() else None)
    if cls is None:
        bad(name, str(path), "a folder with an AMED predictor's or BNS weights' config.json (training/train_amed.py "
            "or training/train_bns.py writes one)")
    pred = cls.from_pretrained(str(path)).eval()
    pred.source = str(path)
    return pred


AMEDPredictor.load = staticmethod(load_predictor)


def list_predictors(model_dir) -> list[dict]:
    """[{path, solver, num_steps, nfe, guidance_scale, afs, grid, sigmas}] for every predictor under
    <model_dir>/amed/."""
    import json
    from pathlib import Path

    from .registry import solver_entry  # the one NFE formula (registry imports this module at load)

    out = []
    if not model_dir:
        return out
    for cfg_path in sorted(Path(model_dir).glob(f"{PREDICTOR_DIR}/*/config.json")):
        cfg = json.loads(cfg_path.read_text())
        out.append({"path": str(cfg_path.parent), "solver": cfg["solver"], "num_steps": cfg["num_steps"],
                    "nfe": solver_entry(cfg["solver"]).nfe(cfg["num_steps"], cfg["afs"]),
                    "guidance_scale": cfg["guidance_scale"], "afs": cfg["afs"], "grid": cfg["grid"],
                    "sigmas": cfg["sigmas"]})
    return out


def predictors_by_nfe(model_dir, flag: str = "--model") -> dict:
    """{(solver, NFE, guidance_scale, grid): list_predictors' entry}: the weights a benchmark arm at an NFE budget
    runs with (their grid steps give that NFE, with AFS where they use it). Two sets at one key are refused, both
    named: which one a row measured would be a guess."""
    table = {}
    for p in list_predictors(model_dir):
        k = (p["solver"], p["nfe"], p["guidance_scale"], p["grid"])
        if k in table:
            bad(flag, str(model_dir), f"one set of trained weights per solver, NFE, guidance and grid: "
                f"{table[k]['path']} and {p['path']} are both {p['solver']} at NFE {p['nfe']} (keep one)")
        table[k] = p
    return table


def _same_sigmas(have, want) -> bool:
    return have is not None and len(have) == len(want) and \
        all(math.isclose(a, float(b), rel_tol=1e-5) for a, b in zip(have, want))


def find_predictor(model_dir, solver: str, num_steps: int, guidance_scale: float, grid: str | None = None,
                   sigmas=None) -> str:
    """The folder of the predictor in model_dir for this solver, grid steps, guidance and grid (None: a
    learned-grid one if there is one, else any); with explicit `sigmas` (ending in 0) the one trained on
    exactly those. ValueError naming what there is if none fits."""
    found = list_predictors(model_dir)
    if sigmas is not None:
        num_steps, grid = len(sigmas) - 1, None
    fits = [p for p in found if p["solver"] == solver and p["num_steps"] == num_steps
            and math.isclose(p["guidance_scale"], guidance_scale, rel_tol=1e-6) and grid in (None, p["grid"])
            and (sigmas is None or _same_sigmas(p["sigmas"], list(sigmas)[:-1]))]
    fits = sorted(fits, key=lambda p: p["grid"] != LEARNED)
    tie = [p for p in fits if p["grid"] == fits[0]["grid"]] if fits else []
    if len(tie) > 1:  # e.g. BNS weights with and without AFS on the same number of grid steps (other NFE)
        bad("solver", solver, f"{len(tie)} sets of weights fit num_inference_steps={num_steps}, guidance_scale="
            f"{guidance_scale:g}: " + ", ".join(f"{p['path']} (NFE {p['nfe']})" for p in tie)
            + "; pass one as amed_predictor= (--amed-predictor)")
    if fits:
        return fits[0]["path"]
    have = ", ".join(f"{p['solver']} steps={p['num_steps']} (NFE {p['nfe']}) guidance={p['guidance_scale']:g} "
                     f"grid={p['grid']}" for p in found) or "none"
    asked = "" if grid is None else f", grid={grid}"
    if sigmas is not None:
        asked = f", sigmas={[round(float(v), 4) for v in sigmas]}"
    what, script = ("BNS weights", "train_bns.py") if solver == "bns" else ("AMED predictor", "train_amed.py")
    bad("solver", solver, f"no {what} in {model_dir}/{PREDICTOR_DIR} for num_inference_steps={num_steps}, "
        f"guidance_scale={guidance_scale:g}{asked} (have: {have}); train one "
        f"with training/{script} or pass amed_predictor=")


def learned_sigmas(pred: AMEDPredictor, grid: str | None) -> list[float] | None:
    """The sigmas (ending in 0) a run samples on because of its predictor: the grid it learned
    (train_amed.py --learn_grid) when the run names no grid or 'learned'; None: the run's own grid applies.
    The one rule for the pipeline and for what genkit sample / eval fd record."""
    cfg = pred.config
    return [*cfg.sigmas, 0.0] if cfg.grid == LEARNED and grid in (None, LEARNED) else None


def run_grid(pred: AMEDPredictor | None, grid: str | None, model_grid: str) -> str:
    """The name of the grid a run samples on: its AMED predictor's learned one where learned_sigmas applies,
    else the grid asked, else the model's. What manifests record and skip-tuning's stored picks are keyed by."""
    return LEARNED if pred is not None and learned_sigmas(pred, grid) is not None else grid or model_grid
