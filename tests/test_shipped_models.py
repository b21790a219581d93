"""Every shipped model loads offline, is under 30 MB, and reproduces a cheap figure of its model card.

Tolerances are stated beside each check: exact-ish where the figure is deterministic on CPU, a binomial
interval where the test measures on fewer samples than the card.
"""

import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("name", ["openmoji-32", "openmoji-vq", "openmoji-mm", "openmoji-features"])
def test_shipped_folder_is_small_safetensors_with_a_card(name):
    folder = WEIGHTS / name
    files = list(folder.rglob("*"))
    # the model and its learned solvers; not the benches' local caches (.bench_*: hidden, untracked)
    shipped = [f for f in folder.rglob("*.safetensors")
               if not any(p.startswith(".") for p in f.relative_to(folder).parts)]
    assert sum(f.stat().st_size for f in shipped) < 30e6
    assert any(f.suffix == ".safetensors" for f in files) and not any(f.suffix in (".bin", ".pt", ".pth", ".ckpt")
                                                                       for f in files)
    card = (folder / "README.md").read_text()
    assert "CC BY-SA 4.0" in card                                     # OpenMoji's attribution, in every card


@pytest.mark.slow
def test_openmoji_vq_reproduces_its_card_figures():
    """Card: val MSE 0.0212, usage 99.4% (994 of 1,000), perplexity/K 75.5% (metrics.json at step 4,000).
    Deterministic: the same 400 val images through the same weights, so to float rounding (1e-4 relative)."""
    from genkit.commands.evaluate import openmoji_images
    from genkit.vq import VQTokenizer
    from genkit.vq.fit import evaluate_tokenizer

    card = json.loads((WEIGHTS / "openmoji-vq/metrics.json").read_text())
    tok = VQTokenizer.from_pretrained(WEIGHTS / "openmoji-vq")
    m = evaluate_tokenizer(tok, openmoji_images("val", 32))
    assert m["codebook_size"] == card["val_codebook_size"] == 1000
    assert m["mse"] == pytest.approx(card["val_mse"], rel=1e-3)
    assert m["usage"] == pytest.approx(card["val_usage"], abs=1e-3)          # 994 of 1,000: one code is 0.001
    assert m["perplexity_ratio"] == pytest.approx(card["val_perplexity_ratio"], rel=1e-3)


@pytest.mark.slow
def test_openmoji_32_reproduces_its_card_class_accuracy(tmp_path, capsys):
    """Card / eval.json: euler on the polynomial grid at 5 NFE, guidance 2, class cycle: 84.9% of 192 samples
    are classified as the subgroup they were asked for (bf16). Here 64 seeds in float32 (~15 s): within
    +-3 binomial sd at n = 64 (+-13 points). An untrained or class-blind model scores ~1%; a broken solver,
    denoiser or CFG sign far below 70%."""
    from genkit.cli import main

    row = json.loads((WEIGHTS / "openmoji-32/eval.json").read_text())["rows"]["euler/polynomial@5"]
    assert row["class_accuracy"] == pytest.approx(0.849, abs=1e-3)
    out = tmp_path / "fd.json"
    rc = main(["eval", "fd", "--model", str(WEIGHTS / "openmoji-32"), "--num", "64", "--steps", "5", "--solver",
               "euler", "--grid", "polynomial", "--guidance", "2", "--seed", "0", "--batch-size", "32",
               "--device", "cpu", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    got = json.loads(out.read_text())
    sd = math.sqrt(row["class_accuracy"] * (1 - row["class_accuracy"]) / 64)
    assert abs(got["class_accuracy"] - row["class_accuracy"]) < 3 * sd, got
    assert got["nfe_per_image"] == 10


def test_openmoji_mm_captions_are_the_committed_ones():
    """train_captions.json (README: 86%, 55 of 64 exact, `genkit bench captions`) against a fresh run: greedy
    decoding is deterministic, so at most 1 of the 64 captions may differ (float rounding across thread counts)."""
    from genkit.commands.bench_captions import caption_indices
    from genkit.data import OpenMojiDataset
    from pipelines.multimodal import MultimodalARPipeline

    committed = json.loads((WEIGHTS / "openmoji-mm/train_captions.json").read_text())
    assert committed["exact"] == 55 and committed["n"] == 64
    ds = OpenMojiDataset(32, "train")
    idx = caption_indices(len(ds), 64)
    assert idx == [p["index"] for p in committed["pairs"]]
    x = torch.from_numpy(ds.images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    got = MultimodalARPipeline.from_pretrained(WEIGHTS / "openmoji-mm").caption(x)
    assert sum(g != p["caption"] for g, p in zip(got, committed["pairs"])) <= 1
    assert abs(sum(g == ds.captions[i] for g, i in zip(got, idx)) - 55) <= 1


def test_openmoji_features_reproduces_its_card_accuracy():
    """Card / metrics.json: 53.0% val accuracy at 32 px (98 subgroups); deterministic, so to one image (0.25%)."""
    from genkit.commands.evaluate import load_features
    from genkit.data import OpenMojiDataset

    card = json.loads((WEIGHTS / "openmoji-features/metrics.json").read_text())
    net, _ = load_features("openmoji")
    ds = OpenMojiDataset(32, "val")
    pred = net.predict(torch.from_numpy(ds.images).permute(0, 3, 1, 2))
    assert (pred.numpy() == ds.labels).mean() == pytest.approx(card["val_acc_32"], abs=0.003)
