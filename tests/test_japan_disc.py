"""`genkit bench japan-disc` and its two measurements on constructed cases: the red-centre count of drawings
(exact on painted flags) and the centre-patch loss (the mean of patch_losses over the central 2 x 2 patches);
the committed weights/openmoji-mm/japan_disc.json says what the model card quotes."""

import json
from pathlib import Path

import pytest
import torch

from genkit.mm import MultimodalAR
from genkit.mm.evaluate import centre_patch_losses, red_centre
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
