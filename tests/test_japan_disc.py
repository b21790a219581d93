"""`genkit bench japan-disc` and its measurements on constructed cases: the red-centre count of drawings
(exact on painted flags), the centre-patch loss (the mean of patch_losses over the central 2 x 2 patches, with
none or all other patches known) and the head's red share (a stand-in head whose red draws are known); the
committed weights/openmoji-mm/japan_disc.json says what the model card quotes, in its tables and in its words."""

import json
from pathlib import Path

import pytest
import torch
from einops import rearrange

from genkit.mm import MultimodalAR
import genkit.mm.diffusion_head as diffusion_head
from genkit.mm.evaluate import centre_patch_losses, centre_patches, head_red_share, red_centre
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
RED, WHITE = torch.tensor([255, 0, 0], dtype=torch.uint8), torch.tensor([255, 255, 255], dtype=torch.uint8)


def flag(disc: slice, extra=None) -> torch.Tensor:
    """A white 32 x 32 flag with a red square over rows and columns `disc`; `extra`: one more red pixel."""
    x = WHITE.expand(32, 32, 3).clone()
    x[disc, disc] = RED
    if extra is not None:
        x[extra] = RED
    return x


def test_red_centre_counts_a_central_disc_and_nothing_else():
    japan = flag(slice(12, 20))                        # the whole centre 8 x 8 red
    small = flag(slice(14, 18))                        # 16 of 64 centre pixels: 25% < 40%
    rim = flag(slice(11, 21))                          # red up to the 12 x 12 box: still nothing outside it
    spill = flag(slice(9, 23))                         # 14 x 14: 52 red pixels outside the box, 5.1% of 1024
    white = WHITE.expand(32, 32, 3).clone()
    out = red_centre(torch.stack([japan, small, rim, spill, white]))
    assert out["centre_red"] == [1.0, 0.25, 1.0, 1.0, 0.0]
    assert out["red_centre"] == 2 and out["n"] == 5 and out["centre_red_mean"] == pytest.approx(3.25 / 5)
    # red means R - G > 0.5 on [-1, 1], i.e. R - G > 63.75 in uint8: (255, 192) is not red, (255, 191) is
    x = flag(slice(12, 20))
    x[12:20, 12:20, 1] = 192
    assert red_centre(x[None])["red_centre"] == 0
    x[12:20, 12:20, 1] = 191
    assert red_centre(x[None])["red_centre"] == 1


def test_centre_patch_losses_are_the_central_four_of_patch_losses():
    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=2, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16).eval()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    caps = {"own": list(b"ab"), "none": []}
    out = centre_patch_losses(model, image, caps, draws=3, seed=5)
    for key, cap in caps.items():
        per = model.patch_losses(image[None], [cap], draws=3, generator=torch.Generator().manual_seed(5)).view(8, 8)
        assert out[key]["centre"] == pytest.approx(per[3:5, 3:5].mean().item(), rel=1e-6)
        assert out[key]["whole"] == pytest.approx(per.mean().item(), rel=1e-6)
    assert out["own"]["centre"] != pytest.approx(out["own"]["whole"], rel=1e-3)     # four patches, not all 64


def test_bad_flags_name_themselves(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "bench", "japan-disc", "--name", "flag: Atlantis", "--out", tmp_path / "d.json")
    assert rc == 2 and "--name='flag: Atlantis' is not allowed" in err
    rc, _, err = run_cli(capsys, "bench", "japan-disc", "--draws", "0", "--out", tmp_path / "d.json")
    assert rc == 2 and "--draws=0 is not allowed" in err
    assert not (tmp_path / "d.json").exists()


def test_the_committed_json_backs_the_cards_figures():
    """What weights/openmoji-mm's card says in words: the disc's loss flat (0.36-0.38) up to step 22,000, then
    0.24; 16 of 16 drawings with a red centre at step 24,800 (58% red on average), 0 of 16 at step 22,000."""
    res = json.loads((ROOT / "weights/openmoji-mm/japan_disc.json").read_text())
    arms = res["arms"]
    before = [a["disc_loss"]["own"] for k, a in arms.items() if not k.startswith("step24800")]
    assert len(before) == 4 and 0.355 <= min(before) and max(before) < 0.385
    shipped = arms["step24800"]
    assert round(shipped["disc_loss"]["own"], 2) == 0.24 and shipped["model"] == "weights/openmoji-mm"
    assert (shipped["red_centre"], shipped["n"], round(100 * shipped["centre_red_mean"])) == (16, 16, 58)
    assert arms["step22000@99994bb"]["red_centre"] == 0


def tiny_model():
    torch.manual_seed(0)
    return MultimodalAR(d_model=32, n_layers=2, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16).eval()


def test_centre_patches_are_the_middle_two_by_two():
    assert centre_patches(tiny_model()).tolist() == [27, 28, 35, 36]         # rows 3-4, columns 3-4 of 8 x 8


def test_centre_patch_losses_with_the_others_known_hide_only_the_centre():
    model = tiny_model()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = centre_patch_losses(model, image, {"own": list(b"ab")}, draws=3, seed=5, others_known=True)
    known = torch.ones(1, 64, dtype=torch.bool)
    known[0, [27, 28, 35, 36]] = False
    per = model.patch_losses(image[None], [list(b"ab")], known=known, draws=3,
                             generator=torch.Generator().manual_seed(5))[0]
    assert per.isnan().sum() == 60
    assert out["own"]["centre"] == pytest.approx(per[~known[0]].mean().item(), rel=1e-6) == out["own"]["whole"]
    none_known = centre_patch_losses(model, image, {"own": list(b"ab")}, draws=3, seed=5)
    assert out["own"]["centre"] != pytest.approx(none_known["own"]["centre"], rel=1e-3)   # the context is used


def test_head_red_share_counts_red_draws_from_the_centre_outputs(monkeypatch):
    """A stand-in for the head's sampler: for the k-th disc patch it draws red patches in the first 5 k + 2 of 20
    rows (half-red ones in the next 3: not red), and records what it was given."""
    model, calls = tiny_model(), []

    def fake(head, z, steps, solver, temperature, guidance_scale, z_uncond, generator, patch_dim):
        calls.append((z, z_uncond, guidance_scale, temperature))
        k = len(calls) - 1
        x = torch.ones(len(z), 3, 4, 4)                                      # white patches (3, 4, 4) in [-1, 1]
        x[:5 * k + 2, 1:] = -1                                               # red: R = 1, G = B = -1
        x[5 * k + 2:5 * k + 5, 1:, :2] = -1                                  # 8 of 16 pixels red: not over half
        return rearrange(x, "n c p q -> n (p q c)")

    monkeypatch.setattr(diffusion_head, "sample_patches", fake)
    shares = head_red_share(model, list(b"ab"), draws=20, guidance_scale=3.0, temperature=0.5, seed=0)
    assert shares == pytest.approx([(5 * k + 2) / 20 for k in range(4)])
    batch = model.batch([list(b"ab")], [False])
    hidden = torch.zeros(1, 64, dtype=torch.bool)
    z = model.image_outputs(model.run(model.embed(batch["tokens"], batch["is_image"], batch["slot"],
                                                  torch.zeros(1, 64, 48), hidden), batch), batch["slot"])[0]
    for (zc, zu, g, t), k in zip(calls, [27, 28, 35, 36]):
        assert zc.shape == (20, 32) and torch.allclose(zc, z[k].expand(20, -1)) and (g, t) == (3.0, 0.5)
        assert not torch.allclose(zu, zc)                                    # the no-name output, not the same


def test_bad_detail_flags_name_themselves(capsys, tmp_path):
    out = tmp_path / "d.json"
    rc, _, err = run_cli(capsys, "bench", "japan-disc", "--detail", "nope", "--out", out)
    assert rc == 2 and "--detail='nope' is not allowed: the NAME of an --arm: one of ['step24800']" in err
    for bad_pair in ("5", "x:4", "nan:4", "5:0", "5:65", "60:4"):
        rc, _, err = run_cli(capsys, "bench", "japan-disc", "--detail_guidance", "1:16", bad_pair, "--out", out)
        assert rc == 2 and f"--detail_guidance={bad_pair!r} is not allowed: G:N" in err
    rc, _, err = run_cli(capsys, "bench", "japan-disc", "--head_draws", "0", "--out", out)
    assert rc == 2 and "--head_draws=0 is not allowed" in err
    assert not out.exists()


def test_the_cards_words_on_why_match_the_json():
    """What the card says in words beside the generated mm-disc-why table, checked against the JSON it renders."""
    res = json.loads((ROOT / "weights/openmoji-mm/japan_disc.json").read_text())
    card = (ROOT / "weights/openmoji-mm/README.md").read_text()
    old, new = res["arms"]["step22000@99994bb"], res["arms"]["step24800"]
    d = old["detail"]
    # "with the other 60 patches shown ... the disc's loss was higher than with none shown"
    assert d["disc_loss_others_known"]["own"] > old["disc_loss"]["own"]
    # "drew a red patch at guidance 1 and temperature 1 now and then, and almost never at the defaults"
    g1, g5 = d["head_red_share"]["guidance 1, temperature 1"], d["head_red_share"]["guidance 5, temperature 0.7"]
    assert min(g1) > 0.05 and max(g5) <= 0.01
    # "at temperature 1 a few drawings have a red centre at every guidance"
    assert all(0 < c["red_centre"] <= c["n"] / 8 for c in d["temperature_1"].values())
    # "names the real flag 'flag: St. Barthélemy' ... log p higher on the real flag than with its disc painted
    # white, and higher on the few drawings with a red centre than on the rest"
    lp = d["logprob_name"]
    assert d["real_caption"] == "flag: St. Barthélemy" and '"flag: St. Barthélemy"' in card
    assert lp["real"] > lp["real_disc_painted_white"] and lp["drawn_red_centre"] > lp["drawn_other"]
    # "at the defaults drew none with a red centre (0 of 16)"
    assert (old["red_centre"], old["n"]) == (0, 16) and "drew none with a red centre (0 of 16)" in card
    # "the shipped model ... at the defaults draws red on nearly every disc patch"
    assert min(new["detail"]["head_red_share"]["guidance 5, temperature 0.7"]) > 0.85
    # the hand-typed figures are gone, and those without a JSON say so
    for gone in ("9-26%", "0-5% at", "-4.66", "-4.65", "4.9 min"):
        assert gone not in card
    assert "these two have no JSON" in card and "so they have no JSON" in card
    assert "--detail step22000@99994bb --detail step24800" in res["command"]
