"""The solver registry: exact NFE by counting for every entry, the CLI's help in step, CFG costing 2 evaluations."""

import pytest
import torch

from genkit.guidance import classifier_free_guidance
from genkit.sampling import (REGISTRY, available_solvers, get_solver, grid_polynomial, nfe, solver_entry,
                             solver_names, steps_for_nfe)
from genkit.sampling.amed import AMEDPredictor, amed_interval

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def gaussian(x, sigma, mu=0.3, s=0.5):
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return mu + s * s / (s * s + sigma ** 2) * (x - mu)


def fixed(x, s, s_next, use_afs):
    return 0.4, 1.0, 1.0


@pytest.mark.parametrize("name", solver_names())
def test_nfe_is_counted_exactly_for_every_entry(name):
    entry, calls = solver_entry(name), []

    def counting(x, sigma):
        assert torch.all(torch.as_tensor(sigma) > 0), "the denoiser must never see sigma = 0"
        calls.append(1)
        return gaussian(x, sigma)

    for afs in (True, False):
        for n in range(entry.min_steps, 9):
            calls.clear()
            kw = dict(predictor=fixed, afs=afs) if entry.has_afs else {}
            if name == "bns":  # AFS: D at sigma_max given (the weights' per-class table)
                kw = {"weights": torch.eye(n, dtype=torch.float64), "first": torch.zeros(3, 2) if afs else None}
            entry.fn(counting, torch.ones(3, 2, dtype=torch.float64), grid_polynomial(n, SIGMA_MIN, SIGMA_MAX), **kw)
            assert len(calls) == nfe(name, n, afs), (n, afs)


def test_steps_for_nfe_is_the_largest_that_fits():
    for name in solver_names():
        for budget in range(1, 21):
            k = steps_for_nfe(name, budget)
            assert nfe(name, k) <= max(budget, nfe(name, solver_entry(name).min_steps))
            assert nfe(name, k + 1) > budget
    assert [steps_for_nfe("amed", b) for b in (3, 5, 7, 9)] == [3, 4, 5, 6]  # the paper's AFS budgets
    assert [nfe("amed-ipndm", k) for k in (3, 4, 5, 6)] == [3, 5, 7, 9]
    assert [nfe("amed", k, afs=False) for k in (3, 4, 5, 6)] == [4, 6, 8, 10]
    assert [nfe("bns", k) for k in (3, 5)] == [3, 5] and nfe("bns", 6, afs=True) == 5  # AFS off unless asked


def test_registry_entries_and_bad_names():
    assert set(solver_names(predictor=False)) == {"euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "ipndm"}
    assert solver_names(predictor=True) == ["amed", "amed-euler", "amed-dpm2", "amed-dpmpp_2m", "amed-ipndm", "bns"]
    assert all(e.display for e in REGISTRY.values())
    with pytest.raises(ValueError, match=r"solver='rk9' is not allowed: one of euler, .*amed-ipndm"):
        get_solver("rk9")
    with pytest.raises(ValueError, match="solver='rk9'"):
        nfe("rk9", 3)


def test_cli_help_names_every_registered_solver():
    from genkit.cli import _SOLVER_HELP

    for name in solver_names():
        assert name in _SOLVER_HELP.replace(",", " ").replace(";", " ").split()


def test_available_solvers_lists_amed_only_with_a_predictor(tmp_path):
    assert available_solvers(tmp_path) == solver_names(predictor=False)
    AMEDPredictor(solver="amed-ipndm", num_steps=4).save_pretrained(tmp_path / "amed" / "p")
    assert available_solvers(tmp_path) == solver_names(predictor=False) + ["amed-ipndm"]


def test_cfg_is_one_batched_call_with_the_exact_combination():
    calls = []

    def den(x, sigma, class_labels):
        calls.append((len(x), class_labels.tolist()))
        return x * (1 + class_labels.view(-1, 1).float()) / (1 + sigma.view(-1, 1) ** 2)

    labels = torch.tensor([0, 2])
    guided = classifier_free_guidance(den, labels, null_label=5, scale=3.0)
    x = torch.randn(2, 4, dtype=torch.float64)
    out = guided(x, torch.tensor(2.0))
    assert calls == [(4, [0, 2, 5, 5])]                                   # cond first, one batch of 2N
    c, u = x * (1 + labels.view(-1, 1)) / 5, x * 6 / 5
    torch.testing.assert_close(out, u + 3.0 * (c - u), rtol=1e-6, atol=1e-6)


def test_diffusion_head_cfg_costs_two_evaluations_per_call():
    from genkit.mm.diffusion_head import DiffusionHead, sample_patches

    torch.manual_seed(0)
    head = DiffusionHead(patch_dim=6, cond_dim=8, width=16, depth=1).eval()
    batches = []
    head.register_forward_pre_hook(lambda m, args: batches.append(len(args[0])))
    z, zu = torch.randn(3, 8), torch.randn(3, 8)
    sample_patches(head, z, steps=4, solver="dpmpp_2m", guidance_scale=2.0, z_uncond=zu)
    assert batches == [6] * nfe("dpmpp_2m", 4)                           # one call of 2N per solver evaluation
    from genkit.commands.bench_cfg_head import before_issue_16            # the bench's "before" arm: 3 calls
    batches.clear()
    g = torch.Generator().manual_seed(1)
    fused = sample_patches(head, z, steps=4, guidance_scale=2.0, z_uncond=zu, generator=g)
    with before_issue_16():
        before = sample_patches(head, z, steps=4, guidance_scale=2.0, z_uncond=zu,
                                generator=torch.Generator().manual_seed(1))
    assert batches == [6] * 4 + [3] * 12                                    # same math, 3 evaluations per step
    torch.testing.assert_close(before, fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flag, value, allowed", [("--head-steps", "0", "an int in"), ("--guidance", "nan", "a finite")])
def test_the_cfg_head_bench_names_its_own_flags(capsys, tmp_path, flag, value, allowed):
    from tests.helpers import run_cli

    rc, _, err = run_cli(capsys, "bench", "cfg-head", "--model", tmp_path, flag, value, "--out", tmp_path / "b.json")
    assert rc == 2 and f"{flag}={value}" in err.replace("'", "") and allowed in err, err


def test_one_step_runs_with_gradients_and_sampling_keeps_none():
    r = torch.full((3,), 0.5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 2, dtype=torch.float64)
    out, *_ = amed_interval(gaussian, x, 10.0, 2.0, lambda *a: (r, 1.0, 1.0), "amed")
    out.sum().backward()
    assert r.grad is not None and torch.all(r.grad != 0)
    pred = AMEDPredictor(solver="amed", num_steps=3)
    pred_fn = lambda x, s, sn, afs: pred(None, torch.full((len(x),), s), torch.full((len(x),), sn))  # noqa: E731
    y = get_solver("amed")(gaussian, torch.randn(3, 2), grid_polynomial(3, SIGMA_MIN, SIGMA_MAX), predictor=pred_fn)
    assert not y.requires_grad
