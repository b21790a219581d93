"""The learned multistep solver (genkit/sampling/bns.py): exact reductions to Euler and DPM-Solver++(2M), training on
toy data with a closed-form denoiser lowers the ODE error, the weights folder round-trips and refuses other runs,
and the pipeline / CLI find and use it."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genkit.sampling import get_solver, grid_polynomial, nfe
from genkit.sampling.amed import load_predictor
from genkit.sampling.bns import BNSWeights, bns_sample, dpmpp_2m_weights
from helpers import save_tiny_pipeline
from test_solvers import MU1, MU2, S, exact_flow, mixture_denoiser

ROOT = Path(__file__).resolve().parents[1]
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def mixture(x, sigma):
    """test_solvers' mixture denoiser, differentiable in sigma too (the grid is learned through it)."""
    v = S * S + torch.as_tensor(sigma, dtype=x.dtype) ** 2
    w1 = torch.sigmoid(((x - MU2) ** 2 - (x - MU1) ** 2) / (2 * v))
    return w1 * (MU1 + S * S / v * (x - MU1)) + (1 - w1) * (MU2 + S * S / v * (x - MU2))


def x_start(n=500, seed=0):
    return torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * SIGMA_MAX


@pytest.mark.parametrize("num_steps", [2, 3, 5, 8])
def test_identity_is_euler_and_dpmpp_weights_are_dpmpp_2m(num_steps):
    sig = grid_polynomial(num_steps, SIGMA_MIN, SIGMA_MAX).double()
    x = x_start()
    assert torch.allclose(bns_sample(mixture_denoiser, x, sig, torch.eye(num_steps, dtype=torch.float64)),
                          get_solver("euler")(mixture_denoiser, x, sig), rtol=0, atol=1e-12)
    assert torch.allclose(bns_sample(mixture_denoiser, x, sig, dpmpp_2m_weights(sig)),
                          get_solver("dpmpp_2m")(mixture_denoiser, x, sig), rtol=0, atol=1e-12)


def test_one_evaluation_per_step_and_never_at_zero():
    calls = []

    def counting(x, sigma):
        assert float(sigma) > 0
        calls.append(1)
        return mixture_denoiser(x, sigma)

    for n in range(2, 9):
        calls.clear()
        get_solver("bns")(counting, x_start(4), grid_polynomial(n, SIGMA_MIN, SIGMA_MAX).double(),
                          weights=torch.eye(n, dtype=torch.float64))
        assert len(calls) == n == nfe("bns", n)
        calls.clear()  # AFS: D at sigma_max given, one call fewer
        get_solver("bns")(counting, x_start(4), grid_polynomial(n, SIGMA_MIN, SIGMA_MAX).double(),
                          weights=torch.eye(n, dtype=torch.float64), first=torch.zeros(4))
        assert len(calls) == n - 1 == nfe("bns", n, afs=True)


def test_afs_with_the_exact_first_output_is_the_same_solver_and_the_table_serves_each_label(tmp_path):
    """bns_sample with `first` = what the network returns at sigma_0 is bit-identical to evaluating it; at
    sigma_max = 80 the mixture's D barely depends on x, so its mean there (the table's entry) is nearly exact,
    10x closer than AMED's analytical first step (D_0 = 0);
    a folder with a table round-trips, gives each label its row, and refuses another image size."""
    sig = grid_polynomial(4, SIGMA_MIN, SIGMA_MAX).double()
    w = dpmpp_2m_weights(sig)
    x = x_start(200)
    exact = bns_sample(mixture_denoiser, x, sig, w)
    assert torch.equal(bns_sample(mixture_denoiser, x, sig, w, first=mixture_denoiser(x, SIGMA_MAX)), exact)
    err = lambda d0: float((bns_sample(mixture_denoiser, x, sig, w, first=d0) - exact).abs().max())  # noqa: E731
    mean_d0 = mixture_denoiser(x, SIGMA_MAX).mean().expand_as(x)
    assert err(mean_d0) < 0.01 and err(mean_d0) < 0.1 * err(torch.zeros_like(x))  # AMED's D_0 = 0: 0.059

    model = BNSWeights(num_steps=4, sigmas=[80.0, 5.0, 0.5, 0.01], afs=True, table_shape=[3, 1, 2, 2])
    model.first_table.copy_(torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2))
    model.save_pretrained(tmp_path / "w")
    back = load_predictor(tmp_path / "w")
    noise = torch.zeros(4, 1, 2, 2)
    kw = back.solver_kwargs(labels=torch.tensor([2, 0, 1, 2]), noise=noise)
    assert kw["first"][:, 0, 0, 0].tolist() == [2.0, 0.0, 1.0, 2.0]
    assert back.solver_kwargs(noise=noise)["first"].abs().sum() == 0                  # unconditional: row 0
    with pytest.raises(ValueError, match=r"height=4 is not allowed.*for 2x2 images"):
        back.solver_kwargs(labels=torch.tensor([0]), noise=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="table_shape=None"):
        BNSWeights(num_steps=4, afs=True)


def test_training_weights_and_grid_on_the_toy_halves_the_error():
    """Learned w and sigmas at NFE 4 on the two-Gaussian mixture, against its exact flow: the error on held-out
    starts falls well below DPM-Solver++(2M)'s on the same grid (the starting point), and the grid stays
    decreasing with its ends in place."""
    from training.train_bns import Grid, start_grid

    n = 4
    start = start_grid(grid_polynomial(n, SIGMA_MIN, SIGMA_MAX).double())
    train, held = x_start(400, 1), x_start(400, 2)
    ref = lambda x: mixture_denoiser(exact_flow(x, SIGMA_MAX, SIGMA_MIN), SIGMA_MIN)  # noqa: E731
    ref_train, ref_held = ref(train), ref(held)
    w = torch.nn.Parameter(dpmpp_2m_weights(start))
    grid = Grid(start[:-1], SIGMA_MIN).double()
    opt = torch.optim.Adam([{"params": [w], "lr": 1e-2}, {"params": grid.parameters(), "lr": 3e-2}])
    err = lambda x, r, g, ww: (bns_sample(mixture, x, g, ww) - r).pow(2).mean().sqrt()  # noqa: E731
    assert torch.allclose(grid(), start)
    before = float(err(held, ref_held, start, dpmpp_2m_weights(start)))
    for _ in range(150):
        opt.zero_grad()
        err(train, ref_train, grid(), torch.tril(w)).backward()
        opt.step()
    g = grid().detach()
    after = float(err(held, ref_held, g, torch.tril(w).detach()))
    assert after < 0.5 * before, (before, after)
    assert math.isclose(g[0], SIGMA_MAX) and g[-2] > SIGMA_MIN and g[-1] == 0
    assert torch.all(g[:-1] > g[1:])


def test_a_learned_sigma_0_starts_just_below_sigma_max_and_stays_inside_the_range():
    """Grid(learn_max=True): sigma_0 = sigma_min + sigmoid fraction of the log range (0.995 at the start); the
    grid stays decreasing and above sigma_min whatever the logit, and sigma_0 gets a gradient."""
    from training.train_bns import Grid, start_grid

    start = start_grid(grid_polynomial(4, SIGMA_MIN, SIGMA_MAX).double())
    grid = Grid(start[:-1], SIGMA_MIN, learn_max=True).double()
    lo, hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
    assert math.isclose(math.log(grid()[0]), lo + 0.995 * (hi - lo), rel_tol=1e-6)
    grid()[1:].sum().backward()
    assert grid.top.grad is not None and grid.top.grad != 0
    for top in (-30.0, 0.0, 30.0):
        grid.top.data.fill_(top)
        g = grid().detach()
        assert SIGMA_MIN < g[-2] and g[0] <= SIGMA_MAX * (1 + 1e-12) and torch.all(g[:-1] > g[1:]) and g[-1] == 0


def test_weights_round_trip_and_refusal_names_what_differs(tmp_path):
    sig = [80.0, 5.0, 0.5, 0.002]
    model = BNSWeights(num_steps=4, sigmas=sig, guidance_scale=2.0, teacher="abc")
    model.weights.data = torch.tril(torch.randn(4, 4))
    model.save_pretrained(tmp_path / "w")
    back = load_predictor(tmp_path / "w")
    assert isinstance(back, BNSWeights) and torch.equal(back.solver_kwargs()["weights"], model.weights.data)
    back.check(solver="bns", sigmas=sig, guidance_scale=2.0, teacher="abc")
    with pytest.raises(ValueError, match="guidance_scale: trained for 2.0, asked 3.0"):
        back.check(solver="bns", sigmas=sig, guidance_scale=3.0, teacher="abc")
    with pytest.raises(ValueError, match="amed_predictor"):
        load_predictor(tmp_path)


def test_train_then_sample_with_the_pipeline_and_the_cli(tmp_path, capsys):
    """train_bns.py on a tiny class-conditional folder: the folder lands in <model>/amed/, the pipeline samples on
    its learned grid with 3 evaluations x 2 (CFG), and a resumed finished run changes nothing."""
    from pipelines.pixel_diffusion import PixelDiffusionPipeline
    from helpers import run_cli

    folder = save_tiny_pipeline(tmp_path / "model")
    cmd = [sys.executable, "training/train_bns.py", "--model", folder, "--nfe", "3", "--ref_steps", "4",
           "--num_trajectories", "4", "--batch_size", "2", "--eval_num", "2", "--epochs", "2", "--device", "cpu",
           "--checkpointing_steps", "2", "--resume_from_checkpoint", "latest"]
    for _ in range(2):
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    out_dir = Path(folder) / "amed" / "bns-nfe3-g2"
    metrics = (out_dir / "metrics.json").read_text()
    assert '"step": 4' in metrics and "error_heldout_trained" in metrics
    pipe = PixelDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=3, solver="bns", guidance_scale=2.0, class_labels="a",
               generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.nfe == 3 * 2 and torch.isfinite(out.images).all()
    with pytest.raises(ValueError, match="no BNS weights .*num_inference_steps=4.*train_bns.py"):
        pipe(num_inference_steps=4, solver="bns", guidance_scale=2.0, class_labels="a")
    rc, _, err = run_cli(capsys, "sample", "--model", folder, "--solver", "bns", "--steps", "3", "--num", "2",
                         "--out", tmp_path / "s", "--device", "cpu")
    assert rc == 0, err
    assert '"grid": "learned"' in (tmp_path / "s" / "manifest.json").read_text()

    # a warm start from that run (its pools copied), learning sigma_0 too, with a cosine lr
    warm = tmp_path / "warm"
    warm.mkdir()
    for name in ("teacher-pool.pt", "teacher-eval.pt"):
        shutil.copy(out_dir / name, warm / name)
    res = subprocess.run(cmd + ["--init_from", str(out_dir), "--learn_sigma_max", "--lr_schedule", "cosine",
                                "--output_dir", str(warm)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    first, second = (json.loads((d / "config.json").read_text())["sigmas"] for d in (out_dir, warm))
    assert second[0] < first[0] and '"error_heldout_trained"' in (warm / "metrics.json").read_text()
    res = subprocess.run(cmd + ["--init_from", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--init_from=" in res.stderr and "no state.pt there" in res.stderr

    # AFS: NFE 2 on 3 grid steps, D at sigma_max from a table of the 3 classes + the null class
    res = subprocess.run(cmd[:5] + ["2", "--afs"] + cmd[6:], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    afs_dir = Path(folder) / "amed" / "bns-nfe2-afs-g2"
    back = load_predictor(afs_dir)
    assert back.config.afs and back.config.num_steps == 3 and tuple(back.first_table.shape) == (4, 3, 8, 8)
    assert back.first_table.dtype == torch.float16                       # stored at half the size
    with pytest.raises(ValueError, match=r"2 sets of weights fit num_inference_steps=3.*\(NFE 2\).*\(NFE 3\)"):
        pipe(num_inference_steps=3, solver="bns", guidance_scale=2.0, class_labels="a")  # with and without AFS
    kw = dict(num_inference_steps=3, solver="bns", guidance_scale=2.0, amed_predictor=str(afs_dir))
    out = pipe(batch_size=2, class_labels=["a", "b"], generator=torch.Generator().manual_seed(0), output_type="pt",
               **kw)
    assert out.nfe == 2 * 2 and torch.isfinite(out.images).all()
    with pytest.raises(ValueError, match="height=16 is not allowed.*8x8 images"):
        pipe(class_labels="a", height=16, width=16, **kw)
    rc, _, err = run_cli(capsys, "sample", "--model", folder, "--solver", "bns", "--steps", "3", "--num", "2",
                         "--amed-predictor", afs_dir, "--out", tmp_path / "s3", "--device", "cpu")
    assert rc == 0, err
    assert json.loads((tmp_path / "s3" / "manifest.json").read_text())["nfe_per_image"] == 2 * 2
    res = subprocess.run(cmd + ["--afs", "--learn_sigma_max"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--afs with --learn_sigma_max is not allowed" in res.stderr

    # the benchmarks' lookup by NFE: one set of weights per solver, NFE, guidance and grid, a second one refused
    from genkit.sampling.amed import predictors_by_nfe
    assert {k[:2] for k in predictors_by_nfe(folder)} == {("bns", 3), ("bns", 2)}
    shutil.copytree(afs_dir, afs_dir.with_name("bns-nfe2-afs-g2-copy"))
    with pytest.raises(ValueError, match=r"--model=.*bns-nfe2-afs-g2 and .*-copy are both bns at NFE 2 \(keep one\)"):
        predictors_by_nfe(folder)
