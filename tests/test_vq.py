"""VQ tokenizers: the rotation trick against an explicit matrix, FSQ's implicit codebook, SimVQ's gradients,
codebook statistics on constructed cases, the tokenizer's round trip and its errors."""

import math

import pytest
import torch

from genkit.metrics.codebook import codebook_stats
from genkit.vq import FSQ, VectorQuantizer, VQTokenizer, kmeans, rotate_to


def explicit_rotation(z, q):
    """lam R with R = I - 2 r r^T + 2 q^ u^T built as a d x d matrix, for one vector."""
    u, qh = z / z.norm(), q / q.norm()
    r = (u + qh) / (u + qh).norm()
    eye = torch.eye(len(z), dtype=z.dtype)
    return (q.norm() / z.norm()) * (eye - 2 * torch.outer(r, r) + 2 * torch.outer(qh, u))


def test_rotation_trick_forward_is_the_code_and_gradient_is_lam_R_transpose_g():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 6, dtype=torch.float64, generator=g).requires_grad_()
    q = torch.randn(5, 6, dtype=torch.float64, generator=g)
    out = rotate_to(z, q)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-12)              # forward value: exactly the code
    upstream = torch.randn(5, 6, dtype=torch.float64, generator=g)
    out.backward(upstream)
    for i in range(5):
        G = explicit_rotation(z[i].detach(), q[i])
        torch.testing.assert_close(G @ z[i].detach(), q[i])              # G maps z onto q ...
        torch.testing.assert_close(G.T @ G, (q[i].norm() / z[i].norm()) ** 2 * torch.eye(6, dtype=torch.float64))
        torch.testing.assert_close(z.grad[i], G.T @ upstream[i])          # ... and the gradient is lam R^T g


def test_ste_gradient_is_identity_and_losses_follow_the_paper_naming():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8, estimator="ste", beta=0.25)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    codes = vq.codebook[out.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(out.z_q, codes)
    g = torch.randn_like(out.z_q)
    (grad,) = torch.autograd.grad((out.z_q * g).sum(), z)
    torch.testing.assert_close(grad, g)                                    # straight through
    # loss = |q - sg(z)|^2 + 0.25 |z - sg(q)|^2: both equal |z - q|^2 in value
    err = (z - codes).pow(2).mean()
    torch.testing.assert_close(out.loss, 1.25 * err)
    (gz,) = torch.autograd.grad(out.loss, z)
    torch.testing.assert_close(gz, 0.25 * 2 * (z - codes).detach() / z.numel())  # only beta's term reaches z


def test_simvq_trains_the_linear_map_and_keeps_its_base_codebook_frozen():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16, simvq=True)
    frozen = vq.frozen_codebook.clone()
    assert not any(p is vq.frozen_codebook for p in vq.parameters())
    before = vq.codebook.detach().clone()
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    out = vq(torch.randn(1, 4, 2, 2))                                     # 4 vectors: at most 4 codes chosen
    out.loss.backward()
    assert vq.codebook_transform.weight.grad.abs().sum() > 0
    opt.step()
    assert torch.equal(vq.frozen_codebook, frozen)
    unused = torch.ones(16, dtype=torch.bool)
    unused[out.indices.unique()] = False
    moved = (vq.codebook.detach() - before).abs().sum(1)
    assert unused.sum() >= 12 and (moved[unused] > 0).all()              # W is shared: unchosen codes move too


def test_unused_codes_of_plain_vq_get_no_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16)
    out = vq(torch.randn(1, 4, 2, 2))
    out.loss.backward()
    used = out.indices.unique()
    unused = torch.ones(16, dtype=torch.bool)
    unused[used] = False
    assert vq.embedding.grad[unused].abs().max() == 0 and vq.embedding.grad[used].abs().sum() > 0


def test_kmeans_init_sets_the_codebook_from_the_first_batch():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0, 0, 0], [-5.0, 0, 0, 0]])
    z = (centres.repeat(50, 1) + 0.01 * torch.randn(100, 4)).view(100, 4, 1, 1)
    vq = VectorQuantizer(4, 2, kmeans_init=True).train()
    vq(z)
    got = vq.embedding.detach()[vq.embedding.detach()[:, 0].argsort()]
    torch.testing.assert_close(got, centres.flip(0), atol=0.01, rtol=0)
    assert not bool(vq.needs_init)
    torch.testing.assert_close(kmeans(z.view(100, 4), 2)[:, 0].abs(), torch.tensor([5.0, 5.0]), atol=0.01, rtol=0)


@pytest.mark.parametrize("levels,size", [([8, 6, 5], 240), ([8, 5, 5, 5], 1000), ([7, 5, 5, 5, 5], 4375)])
def test_fsq_codebook_size_levels_and_index_round_trip(levels, size):
    fsq = FSQ(levels, dim=len(levels))
    assert fsq.codebook_size == size
    z = torch.randn(64, len(levels), 4, 4) * 3
    out = fsq(z)
    assert out.indices.min() >= 0 and out.indices.max() < size
    torch.testing.assert_close(fsq.indices_to_codes(out.indices), out.z_q)   # indices -> the same codes
    every = torch.arange(size).view(1, 1, size)
    codes = fsq.indices_to_codes(every)                                      # all codes are distinct ...
    assert torch.unique(codes[0, :, 0].T, dim=0).shape[0] == size
    for i, L in enumerate(levels):                                           # ... with L values per axis
        assert codes[:, i].unique().numel() == L
    digits = (codes * (torch.tensor(levels).view(1, -1, 1, 1) // 2)).round().permute(0, 2, 3, 1)
    assert torch.equal(fsq.codes_to_indices(digits), every)                 # codes -> indices inverts it


def test_fsq_rounds_with_a_straight_through_gradient():
    fsq = FSQ([5, 5], dim=2)
    z = torch.zeros(1, 2, 1, 1, requires_grad=True)
    out = fsq(z)
    out.z_q.sum().backward()
    # d/dz [tanh(z) * half / (L // 2)] at 0 = half / 2 = (5 - 1) * 1.001 / 2 / 2
    torch.testing.assert_close(z.grad.flatten(), torch.full((2,), 1.001))


def test_codebook_stats_on_constructed_cases():
    uniform = torch.arange(8).repeat(10)
    s = codebook_stats(uniform, 8)
    assert s["usage"] == 1 and s["perplexity"] == pytest.approx(8) and s["perplexity_ratio"] == pytest.approx(1)
    half = codebook_stats(torch.tensor([0, 1, 2, 3] * 5), 8)
    assert half["usage"] == 0.5 and half["perplexity"] == pytest.approx(4)
    skewed = codebook_stats(torch.tensor([0] * 97 + [1, 2, 3]), 4)   # all used, but one dominates
    assert skewed["usage"] == 1 and skewed["perplexity"] == pytest.approx(
        math.exp(-(0.97 * math.log(0.97) + 3 * 0.01 * math.log(0.01))))
    with pytest.raises(ValueError, match="codebook_size=4"):
        codebook_stats(torch.tensor([5]), 4)


@pytest.mark.parametrize("kwargs", [dict(), dict(estimator="rotation", kmeans_init=True), dict(simvq=True),
                                    dict(cosine=True), dict(quantizer="fsq", fsq_levels=[8, 5, 5, 5])])
def test_tokenizer_round_trip(tmp_path, kwargs):
    torch.manual_seed(0)
    tok = VQTokenizer(channels=(32, 32, 32), latent_dim=8, codebook_size=64, **kwargs)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    tok.train()
    loss, logs = tok.loss(images.float() / 127.5 - 1)
    loss.backward()
    tok.eval()
    idx = tok.encode(images)
    assert idx.shape == (3, 8, 8) and idx.dtype == torch.long
    rec = tok.decode(idx)
    assert rec.shape == (3, 3, 32, 32) and rec.min() >= -1 and rec.max() <= 1
    # decode(encode(x)) is exactly the model's own reconstruction
    torch.testing.assert_close(rec, tok(images.float() / 127.5 - 1)[0].clamp(-1, 1))
    tok.save_pretrained(tmp_path / "tok")
    back = VQTokenizer.from_pretrained(tmp_path / "tok").eval()
    assert torch.equal(back.encode(images), idx)


@pytest.mark.parametrize("call,match", [
    (lambda t: t.encode(torch.zeros(2, 1, 32, 32)), r"shape \(2, 1, 32, 32\) are not allowed: \(N, 3, 32, 32\)"),
    (lambda t: t.encode(torch.zeros(2, 3, 64, 64)), r"shape \(2, 3, 64, 64\)"),
    (lambda t: t.decode(torch.full((1, 8, 8), 64)), r"indices in \[64, 64\] are not allowed: codes 0..63"),
    (lambda t: t.decode(torch.full((1, 8, 8), -1)), r"indices in \[-1, -1\]"),
    (lambda t: t.decode(torch.zeros(1, 4, 4, dtype=torch.long)), r"shape \(1, 4, 4\) are not allowed: \(N, 8, 8\)"),
    (lambda t: t.decode(torch.zeros(1, 8, 8)), "integer code ids"),
])
def test_tokenizer_bad_input(call, match):
    tok = VQTokenizer(channels=(32, 32, 32), latent_dim=8, codebook_size=64).eval()
    with pytest.raises(ValueError, match=match):
        call(tok)


@pytest.mark.parametrize("kwargs,match", [
    (dict(quantizer="lfq"), "quantizer='lfq'"), (dict(estimator="gumbel"), "estimator='gumbel'"),
    (dict(simvq=True, kmeans_init=True), "kmeans_init=True is not allowed with simvq=True"),
    (dict(quantizer="fsq"), "needs fsq_levels"), (dict(quantizer="fsq", fsq_levels=[8, 1]), "levels=\\[8, 1\\]"),
])
def test_bad_quantizer_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VQTokenizer(channels=(32, 32, 32), latent_dim=8, **kwargs)


# -- training/train_vq.py ------------------------------------------------------------------------------------

def _train_vq(out, steps, folder, *extra):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "training" / "train_vq.py"), "--output_dir", str(out), "--dataset", str(folder),
           "--max_train_steps", str(steps), "--channels", "8,8,8", "--latent_dim", "4", "--codebook_size", "16",
           "--train_batch_size", "4", "--eval_every", "2", "--checkpointing_steps", "2", *extra]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_train_vq_resumes_exactly_and_logs_codebook_health(tmp_path, image_folder):
    import json

    from safetensors.torch import load_file

    straight = _train_vq(tmp_path / "a", 4, image_folder, "--simvq")
    assert straight.returncode == 0, straight.stderr[-2000:]
    first = _train_vq(tmp_path / "b", 2, image_folder, "--simvq")
    assert first.returncode == 0, first.stderr[-2000:]
    second = _train_vq(tmp_path / "b", 4, image_folder, "--simvq", "--resume_from_checkpoint", "latest")
    assert second.returncode == 0, second.stderr[-2000:]
    a = load_file(str(tmp_path / "a" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"val_mse", "val_usage", "val_perplexity_ratio", "val_quant_error"} <= rows[-1].keys()
    assert [p.name for p in (tmp_path / "b").glob("checkpoint-*")] == ["checkpoint-4"]
    tok = VQTokenizer.from_pretrained(tmp_path / "b")
    assert tok.config.simvq and tok.codebook_size == 16
    from PIL import Image
    with Image.open(tmp_path / "b" / "reconstructions.png") as im:       # 2 held-out images (22 % 10 == 0: 3)
        assert im.size == (3 * 32 * 4, 2 * 32 * 4)
    assert len(list((tmp_path / "b" / "examples").glob("*.png"))) == 3


def test_train_vq_bad_flags_are_one_line(tmp_path, image_folder):
    res = _train_vq(tmp_path / "c", 2, image_folder, "--quantizer", "fsq", "--fsq_levels", "8,x")
    assert res.returncode != 0 and "--fsq_levels='8,x' is not allowed" in res.stderr
    res = _train_vq(tmp_path / "c", 2, image_folder, "--resume_from_checkpoint", str(tmp_path / "nope"))
    assert "is not a checkpoint folder" in res.stderr
