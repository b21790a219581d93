"""FD-OpenMoji with the shipped feature network and reference statistics: the sanity facts, offline, on a
small scale (the full figures are in weights/openmoji-features/README.md, from `genkit eval sanity`)."""

import json

import pytest
import torch
from PIL import Image

from genkit.cli import main
from genkit.commands.evaluate import fd_sanity, load_features, openmoji_images, resolve_ref

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def sanity32():
    net, fid = load_features("openmoji")
    refs = {s: resolve_ref(f"openmoji-{s}-32", 32, "openmoji", None)[0] for s in ("train", "val")}
    train = openmoji_images("train", 32)
    return fd_sanity(net, fid, refs, openmoji_images("val", 32), train[::4], 32), refs


def test_shipped_references_match_the_data(sanity32):
    _, refs = sanity32
    assert refs["train"].n == len(openmoji_images("train", 32)) and refs["val"].n == len(openmoji_images("val", 32))
    assert refs["train"].features == refs["val"].features and refs["train"].resolution == 32


def test_train_vs_train_is_near_zero_and_val_is_the_floor(sanity32):
    s, _ = sanity32
    assert s["fd_train_vs_train"] < 0.25 * s["fd_val_vs_train"]       # a quarter of train: sampling noise only
    assert s["fd_val_vs_train"] > 0
    assert s["fd_val_vs_train_again"] == s["fd_val_vs_train"]          # deterministic
    assert s["fd_val_vs_train"] == pytest.approx(s["fd_val_vs_train_from_refs"], rel=1e-4)


def test_fd_rises_monotonically_with_blur_and_with_noise(sanity32):
    s, _ = sanity32
    for curve in (s["fd_blurred_train"], s["fd_noisy_train"]):
        values = [s["fd_train_vs_train"]] + list(curve.values())
        assert all(a < b for a, b in zip(values, values[1:])), values
    assert list(s["fd_blurred_val"].values())[-1] > 3 * s["fd_val_vs_train"]      # strong damage dwarfs the floor
    assert list(s["fd_noisy_val"].values())[-1] > 3 * s["fd_val_vs_train"]


def test_eval_fd_on_a_folder_with_the_shipped_reference_repeats(tmp_path, capsys):
    val = openmoji_images("val", 32)[:64]
    for i, img in enumerate(val.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).save(tmp_path / f"{i:06d}.png")
    runs = []
    for _ in range(2):
        assert main(["eval", "fd", "--samples", str(tmp_path), "--no-progress"]) == 0
        runs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert runs[0] == runs[1] and runs[0]["ref"] == "openmoji-train-32" and runs[0]["n"] == 64


def test_classifier_recognises_val_emoji_it_never_saw():
    net, _ = load_features("openmoji")
    from genkit.data import OpenMojiDataset

    ds = OpenMojiDataset(32, "val")
    pred = net.predict(torch.from_numpy(ds.images).permute(0, 3, 1, 2))
    # the card's 53.0% (98 classes: chance is ~1%); deterministic, so to one image of 400 (0.25%)
    assert (pred.numpy() == ds.labels).mean() == pytest.approx(0.530, abs=0.003)


@pytest.mark.slow
def test_train_vs_train_is_zero_on_the_full_train_set():
    """README: FD(train vs train) = 0. All 3,544 train images against the shipped train reference: the same
    statistics, so 0 up to the float rounding of the features and sqrtm (measured 0.0; a quarter of train above
    gives ~sampling noise, not 0)."""
    from genkit.metrics import FrechetDistance

    net, fid = load_features("openmoji")
    ref = resolve_ref("openmoji-train-32", 32, "openmoji", None)[0]
    fd = FrechetDistance(net, fid, resolution=32)
    fd.set_reference(ref)
    train = openmoji_images("train", 32)
    for i in range(0, len(train), 256):
        fd.update(train[i:i + 256])
    assert abs(fd.compute()) < 1e-2
