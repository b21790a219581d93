"""AMED: the solver against exact answers on toy Gaussian data, training that works, predictors that refuse
the wrong run, and the whole loop (train_amed -> pipeline) on a genkit folder and a plain diffusers DDPM folder."""

import math

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from genkit.sampling import dpm2, get_solver, grid_polynomial, make_grid
from genkit.sampling.amed import AMED_BASES, AMEDPredictor, amed_sample, load_predictor
from tests.helpers import save_tiny_pipeline, tiny_unet
from training.train_amed import main, parse_args, student_error, teacher_points, train_batch, train_batch_final

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def gaussian(mu=0.3, s=0.5):
    """E[x0 | x] for x0 ~ N(mu, s^2), x = x0 + sigma n: exact; sigma a float, 0-d or per sample (N,)."""
    def den(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return mu + s * s / (s * s + sigma ** 2) * (x - mu)
    return den


def exact(x, s_from, s_to, mu=0.3, s=0.5):
    """The Gaussian PF-ODE's closed-form flow: x - mu scales by sqrt(s^2 + sigma^2)."""
    return mu + (x - mu) * math.sqrt(s * s + s_to ** 2) / math.sqrt(s * s + s_from ** 2)


def x_start(n=256, d=3, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * SIGMA_MAX


@pytest.mark.parametrize("base", ["amed", "dpm2"])
@pytest.mark.parametrize("num_steps", [2, 4, 9])
def test_r_half_c_one_a_one_is_dpm_solver_2(base, num_steps):
    grid = grid_polynomial(num_steps, SIGMA_MIN, SIGMA_MAX)
    x = x_start()
    want = dpm2(gaussian(), x, grid[:-1])                                  # DPM-Solver-2 down to sigma_min
    got = amed_sample(gaussian(), x, grid, lambda *a: (0.5, 1.0, 1.0), base, afs=False)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12)


def test_r_moves_the_midpoint_and_c_scales_the_direction():
    """One AMED step by hand: s_mid = s_next^r s^(1-r), x_next = x + c (s_next - s) d(x_mid, a s_mid)."""
    den, x, s, sn, r, c, a = gaussian(), x_start(8), 10.0, 1.0, 0.3, 1.02, 0.9
    got = amed_sample(den, x, torch.tensor([s, sn, 0.0], dtype=torch.float64), lambda *_: (r, c, a), afs=False)
    s_mid = sn ** r * s ** (1 - r)
    x_mid = x + (s_mid - s) * (x - den(x, s)) / s
    torch.testing.assert_close(got, x + c * (sn - s) * (x_mid - den(x_mid, a * s_mid)) / s_mid)


def _toy_training(base, steps=40, num_steps=4, afs=True, seed=0, loss="interval"):
    """Train a predictor on the toy for `steps` batches; -> (error before, error after) to the exact ODE."""
    den = gaussian()
    sigmas = grid_polynomial(num_steps, SIGMA_MIN, SIGMA_MAX)[:-1]
    torch.manual_seed(seed)
    pred = AMEDPredictor(solver="amed" if base == "amed" else f"amed-{base}", num_steps=num_steps,
                         scale_dir=0.05, scale_time=0.2 if base != "amed" else 0.0).double()
    predict = lambda x, s, sn, afs: pred(None, torch.full((len(x),), s, dtype=torch.float64),  # noqa: E731
                                          torch.full((len(x),), sn, dtype=torch.float64))
    opt = torch.optim.Adam(pred.parameters(), lr=5e-3)
    held = x_start(256, seed=99)
    truth = [held] + [exact(held, SIGMA_MAX, float(s)) for s in sigmas[1:]]
    before = student_error(den, predict, sigmas, truth, base, afs)
    for step in range(steps):
        x = x_start(64, seed=step)
        points = teacher_points(den, x, sigmas, "heun", 8, "polynomial")
        if loss == "final":
            train_batch_final(den, predict, opt, sigmas, points, base, afs)
        else:
            train_batch(den, predict, opt, sigmas, points, base, afs)
    return before, student_error(den, predict, sigmas, truth, base, afs)


def test_a_toy_trained_predictor_lowers_the_ode_error():
    before, after = _toy_training("amed")
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("base", [b for b in AMED_BASES if b != "amed"])
def test_every_plugin_trains_on_the_toy(base):
    before, after = _toy_training(base, steps=40)
    assert after < before, (before, after)


@pytest.mark.parametrize("base", AMED_BASES)
def test_the_final_sample_loss_trains_every_arm_on_the_toy(base):
    """--loss final (backprop through the whole student run) at least halves the toy's final-sample error."""
    before, after = _toy_training(base, steps=40, loss="final")
    assert after < 0.5 * before, (before, after)
    with pytest.raises(ValueError, match="--teacher_forcing=True is not allowed: off with --loss final"):
        parse_args(["--model", "m", "--loss", "final", "--teacher_forcing"])


def test_teacher_points_follow_the_exact_flow():
    sigmas = grid_polynomial(4, SIGMA_MIN, SIGMA_MAX)[:-1]
    x = x_start(16)
    def err(M):
        pts = teacher_points(gaussian(), x, sigmas, "heun", M, "polynomial")
        assert len(pts) == len(sigmas) and torch.equal(pts[0], x)
        return max(float((p - exact(x, SIGMA_MAX, float(s))).abs().max()) for p, s in zip(pts, sigmas))
    fine, coarse = err(16), err(1)
    assert fine < 1e-2 and fine < coarse / 4, (fine, coarse)            # Heun: 2nd order in the inserted points


def test_predictor_round_trip_and_refusal_names_what_differs(tmp_path):
    sig = [80.0, 9.7, 0.47, 0.002]
    pred = AMEDPredictor(solver="amed", num_steps=4, sigmas=sig, guidance_scale=2.0, teacher="abc")
    assert 8000 < sum(p.numel() for p in pred.parameters()) < 12000 and pred.nfe == 5
    pred.save_pretrained(tmp_path / "p")
    back = load_predictor(tmp_path / "p")
    back.check(solver="amed", sigmas=sig, guidance_scale=2.0, teacher="abc")     # the same run: fine
    with pytest.raises(ValueError, match=r"guidance_scale: trained for 2\.0, asked 3\.0") as e:
        back.check(solver="amed", sigmas=sig, guidance_scale=3.0, teacher="abc")
    assert "amed_predictor=" in str(e.value) and "sigmas" not in str(e.value)
    with pytest.raises(ValueError, match=r"solver: trained for 'amed', asked 'amed-ipndm'.*teacher"):
        back.check(solver="amed-ipndm", sigmas=sig, guidance_scale=2.0, teacher="xyz")
    with pytest.raises(ValueError, match="sigmas: trained for"):
        back.check(sigmas=[80.0, 5.0, 0.002])
    with pytest.raises(ValueError, match="amed_predictor='.*nothing' is not allowed: a folder"):
        load_predictor(tmp_path / "nothing")


def _train(folder, *flags):
    args = parse_args(["--model", str(folder), "--nfe", "3", "--num_trajectories", "4", "--batch_size", "2",
                       "--eval_num", "2", "--device", "cpu", *flags])
    main(args)


def test_train_and_sample_on_a_genkit_folder(tmp_path):
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    folder = save_tiny_pipeline(tmp_path / "model")
    _train(folder)                                                     # guidance 2 (the class-conditional default)
    _train(folder, "--solver", "amed-ipndm", "--teacher_pool", "4")
    pipe = PixelDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=3, solver="amed", guidance_scale=2.0, class_labels="a",
               generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.nfe == 3 * 2 and out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all()
    assert pipe(num_inference_steps=3, solver="amed-ipndm", guidance_scale=2.0, class_labels="b").nfe == 6
    with pytest.raises(ValueError, match="no AMED predictor .* num_inference_steps=4"):
        pipe(num_inference_steps=4, solver="amed", guidance_scale=2.0, class_labels="a")
    with pytest.raises(ValueError, match="no AMED predictor .*guidance_scale=3"):
        pipe(num_inference_steps=3, solver="amed", guidance_scale=3.0, class_labels="a")
    other = PixelDiffusionPipeline(tiny_unet(4, seed=1), pipe.scheduler, class_names=pipe.config.class_names)
    with pytest.raises(ValueError, match=r"teacher: trained for '\w+', asked '\w+'"):   # another network
        other(num_inference_steps=3, solver="amed", guidance_scale=2.0, class_labels="a",
              amed_predictor=f"{folder}/amed/amed-nfe3-g2")


def test_train_and_sample_on_a_plain_ddpm_folder(tmp_path):
    """eps-prediction, discrete 1000-step time: the predictor hooks the same mid_block, no guidance."""
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    folder = tmp_path / "ddpm"
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    _train(folder, "--solver", "amed-dpmpp_2m")
    pipe = PixelDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=3, solver="amed-dpmpp_2m", output_type="pt",
               generator=torch.Generator().manual_seed(0))
    assert out.nfe == 3 and torch.isfinite(out.images).all()
    lo, hi = pipe.denoiser().sigma_range
    cfg = load_predictor(folder / "amed" / "amed-dpmpp_2m-nfe3-g1").config
    assert math.isclose(cfg.sigmas[0], min(hi, 80.0), rel_tol=1e-5) and cfg.guidance_scale == 1.0


def test_train_amed_flags_are_checked():
    for flags, match in ((["--solver", "euler"], "--solver='euler' is not allowed: one of amed"),
                         (["--nfe", "0"], "--nfe=0"), (["--learning_rate", "2"], "--learning_rate=2.0"),
                         (["--teacher", "amed"], "--teacher='amed'")):
        with pytest.raises(ValueError, match=match):
            parse_args(["--model", "m", *flags])


def test_solver_needs_a_predictor():
    with pytest.raises(ValueError, match="amed_predictor=None is not allowed"):
        get_solver("amed")(gaussian(), x_start(2), make_grid("polynomial", 3, SIGMA_MIN, SIGMA_MAX))


@pytest.mark.slow
def test_bench_samplers_runs_amed_and_skip_arms_and_bench_skip_stores_the_best_rho(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from genkit.cli import main as cli_main
    from tests.helpers import run_cli, save_tiny_features

    folder = save_tiny_pipeline(tmp_path / "model")
    feats = save_tiny_features(tmp_path / "features")
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(real / f"{i:03d}.png")
    assert cli_main(["eval", "ref", "--samples", str(real), "--features-model", feats, "--out",
                     str(tmp_path / "ref.npz")]) == 0
    _train(folder)                                                     # amed, NFE 3, guidance 2
    common = ["--model", folder, "--num", 4, "--ode-num", 4, "--ode-ref-steps", 4, "--batch-size", 4,
              "--ref", tmp_path / "ref.npz", "--features-model", feats, "--device", "cpu"]
    samplers = ["bench", "samplers", *common, "--nfe", "3,5", "--solvers", "euler,amed", "--grids", "polynomial",
                "--schedulers", "", "--skip-rhos", "0.8", "--out", tmp_path / "b.json"]
    rc, _, err = run_cli(capsys, *samplers)
    assert rc == 0, err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert set(rows) == {"euler/polynomial@3", "euler/polynomial+skip0.8@3", "amed/polynomial@3",
                         "amed/polynomial+skip0.8@3", "euler/polynomial@5", "euler/polynomial+skip0.8@5"}
    assert rows["amed/polynomial@3"]["nfe"] == 3 and rows["amed/polynomial@3"]["network_evals"] == 6
    assert rows["euler/polynomial+skip0.8@3"]["skip_tuning"] == 0.8
    # the predictor retrained at the same path: its rows are measured again, the others kept as they were
    from genkit.sampling.amed import load_predictor
    pred_dir = next((tmp_path / "model" / "amed").iterdir())
    pred = load_predictor(pred_dir)
    with torch.no_grad():
        for prm in pred.parameters():
            prm.add_(0.01)
    pred.save_pretrained(pred_dir)
    rc, _, err = run_cli(capsys, *samplers)
    assert rc == 0, err
    again = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert again["euler/polynomial@3"] == rows["euler/polynomial@3"] and "trained" not in rows["euler/polynomial@3"]
    for key in ("amed/polynomial@3", "amed/polynomial+skip0.8@3"):
        assert again[key]["trained"] != rows[key]["trained"], key
    ratios = json.loads((tmp_path / "b.json").read_text())["ratios"]       # a skip arm pairs with itself untuned
    assert {"amed/polynomial+skip0.8@3 / amed/polynomial@3", "amed/polynomial@3 / euler/polynomial@3"} <= set(ratios)
    rc, out, err = run_cli(capsys, "bench", "skip", *common, "--nfe", "3", "--solvers", "euler", "--rhos", "0.7,0.9",
                           "--teacher-nfe", 2, "--out", tmp_path / "s.json")
    assert rc == 0, err
    sweep = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert "teacher:dpmpp_2m@2" in sweep and "fd_teacher" in sweep["euler/polynomial+skip0.7@3"]
    best = json.loads((tmp_path / "model" / "skip_tuning.json").read_text())["best"]
    assert [(b["solver"], b["nfe"], b["num_steps"]) for b in best] == [("euler", 3, 3)]
    assert best[0]["rho_bottom"] in (0.7, 0.9, 1.0) and best[0]["rule"] == "paired"
    assert [s["rho_bottom"] for s in best[0]["sweep"]] == [0.7, 0.9]
    # a sweep on another grid adds its pick beside the first (picks are keyed by solver, NFE, grid and guidance)
    rc, out, err = run_cli(capsys, "bench", "skip", *common, "--nfe", "3", "--solvers", "euler", "--rhos", "0.8",
                           "--grid", "logsnr", "--out", tmp_path / "s2.json")
    assert rc == 0, err
    best = json.loads((tmp_path / "model" / "skip_tuning.json").read_text())["best"]
    assert [(b["solver"], b["nfe"], b["grid"]) for b in best] == [("euler", 3, "polynomial"), ("euler", 3, "logsnr")]
    assert "--grid logsnr" in best[1]["command"]
    rc, _, err = run_cli(capsys, "bench", "overhead", "--model", folder, "--steps", 4, "--solvers", "euler,amed",
                         "--guidance", 2, "--out", tmp_path / "o.json")
    assert rc == 2 and "--steps=4 is not allowed" in err and "amed reaches 3 and 5" in err, err
    rc, out, err = run_cli(capsys, "bench", "overhead", "--model", folder, "--steps", 3, "--solvers", "euler,amed",
                           "--guidance", 2, "--batch-size", 2, "--repeats", 1, "--out", tmp_path / "o.json")
    assert rc == 0, err                                                  # the predictor's cost at equal NFE
    o = json.loads((tmp_path / "o.json").read_text())
    assert o["steps"] == {"euler": 3, "amed": 3} and set(o["all_s"]) == {"bare", "pipeline", "pipeline:amed"}
    assert o["ratio_over_first_solver"]["amed"] > 0 and "amed / euler at 3 NFE" in out


def test_the_default_teacher_is_accurate_and_a_crude_one_is_not():
    """The student copies its teacher: the default (Heun, >= 64 steps) sits on the exact flow; M = 1 does not."""
    from training.train_amed import teacher_M

    sigmas = grid_polynomial(4, SIGMA_MIN, SIGMA_MAX)[:-1]                 # NFE 5's grid: 3 intervals
    assert (teacher_M(3) + 1) * 3 >= 64 and (teacher_M(5) + 1) * 5 >= 64
    x = x_start(16)
    def err(M):
        pts = teacher_points(gaussian(), x, sigmas, "heun", M, "polynomial")
        return max(float((p - exact(x, SIGMA_MAX, float(s))).abs().max()) for p, s in zip(pts, sigmas))
    assert err(teacher_M(3)) < 1e-2 < 0.1 < err(1), (err(teacher_M(3)), err(1))    # x spans about +-80


def test_a_cached_teacher_made_with_other_settings_is_refused(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "model")
    _train(folder, "--solver", "amed-euler", "--teacher_pool", "4", "--M", "3")
    with pytest.raises(ValueError, match=r"teacher-(eval|pool)\.pt was made with .*'M': 3.*'M': 2"):
        _train(folder, "--solver", "amed-euler", "--teacher_pool", "4", "--M", "2")


def test_a_time_only_predictor_ignores_the_bottleneck():
    torch.manual_seed(0)
    pred = AMEDPredictor(use_feature=False)
    for head in (pred.head_r, pred.head_c, pred.head_a):
        torch.nn.init.normal_(head.weight)                                  # not the all-zero start
    s, sn = torch.full((2,), 9.7), torch.full((2,), 0.47)
    a, b = pred(torch.randn(2, 16, 4, 4), s, sn), pred(torch.randn(2, 16, 4, 4) * 9, s, sn)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    full = AMEDPredictor(use_feature=True)
    full.load_state_dict(pred.state_dict())
    assert not torch.equal(full(torch.randn(2, 16, 4, 4), s, sn)[0], full(torch.randn(2, 16, 4, 4) * 9, s, sn)[0])


def test_a_learned_grid_lowers_the_toy_error_and_keeps_its_ends():
    """learn_grid on the Gaussian toy (exact final samples): from the polynomial grid the search lowers the
    Euler plugin's error by a third, keeps the ends, stays strictly decreasing, and a second start (1, 0.1)
    lands on the same grid."""
    from training.train_amed import UNTRAINED, learn_grid

    den, x = gaussian(), x_start(64)
    truth = exact(x, SIGMA_MAX, SIGMA_MIN)
    err = lambda g: student_error(den, UNTRAINED, g.double(), [x, truth], "euler", False)  # noqa: E731
    start = grid_polynomial(4, SIGMA_MIN, SIGMA_MAX)[:-1]
    learned, history = learn_grid(err, start, max_evals=60)
    assert history[0][1] == pytest.approx(err(start)) and len(history) <= 60
    assert math.isclose(float(learned[0]), SIGMA_MAX, rel_tol=1e-9)
    assert math.isclose(float(learned[-1]), SIGMA_MIN, rel_tol=1e-9)
    assert bool((learned[1:] < learned[:-1]).all())
    assert err(learned) < 0.7 * err(start), (err(start), err(learned))
    again, _ = learn_grid(err, torch.tensor([SIGMA_MAX, 1.0, 0.1, SIGMA_MIN], dtype=torch.float64), 60)
    torch.testing.assert_close(again, learned, rtol=0.03, atol=0)


def test_a_learned_grid_predictor_brings_its_grid_to_the_pipeline(tmp_path):
    from pipelines.pixel_diffusion import PixelDiffusionPipeline

    folder = save_tiny_pipeline(tmp_path / "model")
    _train(folder, "--solver", "amed-euler")                                 # the model's grid (polynomial)
    _train(folder, "--solver", "amed-euler", "--learn_grid", "2", "--grid_evals", "5")
    cfg = load_predictor(f"{folder}/amed/amed-euler-nfe3-g2-learned").config
    poly = load_predictor(f"{folder}/amed/amed-euler-nfe3-g2").config.sigmas
    assert cfg.grid == "learned" and len(cfg.sigmas) == 3 and cfg.sigmas[::2] == pytest.approx(poly[::2])
    pipe = PixelDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    seen = {}

    def run(**kw):
        seen.clear()
        cb = lambda p, i, t, kw_: seen.setdefault(i, float(t)) and {}  # noqa: E731
        return pipe(batch_size=1, num_inference_steps=3, solver="amed-euler", guidance_scale=2.0, class_labels="a",
                    callback_on_step_end=cb, output_type="pt", **kw)

    run()                                                                # no grid asked: the learned one
    assert [seen[i] for i in range(2)] == pytest.approx(cfg.sigmas[:2], rel=1e-5)
    run(grid="polynomial")                                               # the polynomial predictor
    assert [seen[i] for i in range(2)] == pytest.approx(poly[:2], rel=1e-5)
    for trained_on in (poly, cfg.sigmas):                                # explicit sigmas: the predictor for them
        run(sigmas=[*trained_on, 0.0])
        assert [seen[i] for i in range(2)] == pytest.approx(trained_on[:2], rel=1e-5)
    with pytest.raises(ValueError, match=r"no AMED predictor .* sigmas=\[80\.0, 5\.0, 0\.002, 0\.0\] \(have: "):
        run(sigmas=[80.0, 5.0, 0.002, 0.0])
    with pytest.raises(ValueError, match="grid='learned' is not allowed here: a learned grid belongs to an AMED"):
        pipe(num_inference_steps=3, solver="euler", grid="learned", guidance_scale=2.0, class_labels="a")
    from argparse import Namespace

    from genkit.commands.sample import check_early, resolve_solver      # the CLI records what it samples on
    args = lambda solver="amed-euler", pred=None: Namespace(  # noqa: E731
        solver=solver, grid=None, model=folder, steps=3, amed_predictor=pred)
    assert resolve_solver(pipe, args(), 2.0) == ("amed-euler", "learned", 6)
    model_grid = pipe.scheduler.config.get("grid")
    assert resolve_solver(pipe, args(pred=f"{folder}/amed/amed-euler-nfe3-g2"), 2.0)[1] == model_grid
    assert resolve_solver(pipe, args("euler"), 2.0) == ("euler", model_grid, 6)
    check_early("amed-euler", "learned")
    with pytest.raises(ValueError, match="--grid='learned' is not allowed: one of polynomial, .* --solver=euler"):
        check_early("euler", "learned")
    from genkit.ui import diffusion                                      # the app offers it, for AMED only
    assert diffusion.opt.grid_names(diffusion.opt.model_dir(pipe))[-1] == "learned"
    assert diffusion.opt.grid_names(None)[-1] != "learned"
    assert diffusion.validate(pipe, "a", 0, 3, "amed-euler", "learned", 2.0, 1, 1).grid == "learned"
    with pytest.raises(ValueError, match="grid='learned' is not allowed: .* for sampler 'euler'"):
        diffusion.validate(pipe, "a", 0, 3, "euler", "learned", 2.0, 1, 1)
    with pytest.raises(ValueError, match=r"grid\.json was made with .*'evals': 5.*'evals': 6.*another --output_dir"):
        _train(folder, "--solver", "amed-euler", "--learn_grid", "2", "--grid_evals", "6")  # never a silent redo
