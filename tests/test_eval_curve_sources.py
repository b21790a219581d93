"""`genkit eval curve` reads a run's snapshots/step-N pipeline folders first, and for steps with no snapshot the
checkpoint-N EMA: ema_unet.safetensors (the current format), an old custom_checkpoint_0.pkl only through
torch.load(weights_only=True), else model.safetensors. Tiny 8 px folders of every kind; exact weight equality."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from genkit.commands.common import load_pipeline
from genkit.commands.study_curve import checkpoints, load_checkpoint_weights
from genkit.metrics import ReferenceStats, load_openmoji_features
from helpers import run_cli, save_tiny_features, save_tiny_pipeline


class _Evil:  # unpickling this would run code: the tool must refuse it, never execute it
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _shadow(pipe, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g) * 0.1 for p in pipe.unet.parameters()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run as the study leaves it: snapshots 100 and 200, checkpoint-200 (shadowed by its snapshot),
    checkpoint-300 (new EMA format), checkpoint-400 (old pickle), checkpoint-500 (raw weights only), and the
    temp folders of a copy / save in progress."""
    root = tmp_path_factory.mktemp("curve")
    run = root / "run"
    save_tiny_pipeline(run)
    pipe = load_pipeline(str(run), torch.device("cpu"))
    expected = {}
    for step in (100, 200):  # snapshots: full pipeline folders with other unet weights
        with torch.no_grad():
            for p, s in zip(pipe.unet.parameters(), _shadow(pipe, step)):
                p.copy_(s)
        pipe.save_pretrained(run / "snapshots" / f"step-{step}", safe_serialization=True)
        expected[step] = _shadow(pipe, step)
    for step in (200, 300):  # new format: shadow tensors "0".."P-1" + scalars in json
        (run / f"checkpoint-{step}").mkdir()
        save_file({str(i): t for i, t in enumerate(_shadow(pipe, step + 1))},
                  str(run / f"checkpoint-{step}" / "ema_unet.safetensors"))
        (run / f"checkpoint-{step}" / "ema_unet.json").write_text(json.dumps({"decay": 0.999}))
    expected[300] = _shadow(pipe, 301)
    (run / "checkpoint-400").mkdir()
    expected[400] = _shadow(pipe, 400)
    torch.save({"decay": 0.999, "optimization_step": 400, "shadow_params": expected[400]},
               run / "checkpoint-400" / "custom_checkpoint_0.pkl")
    (run / "checkpoint-500").mkdir()
    expected[500] = _shadow(pipe, 500)
    names = [n for n, _ in pipe.unet.named_parameters()]
    save_file(dict(zip(names, expected[500])), str(run / "checkpoint-500" / "model.safetensors"))
    shutil.copytree(run / "snapshots" / "step-100", run / "snapshots" / "step-600.tmp")  # a copy in progress
    (run / ".tmp-checkpoint-700").mkdir()                                                  # a save in progress
    return {"run": run, "expected": expected, "root": root}


def test_snapshots_first_then_checkpoints_without_a_snapshot_temp_folders_never(run):
    found = [(s, p.relative_to(run["run"]).as_posix()) for s, p in checkpoints(run["run"])]
    assert found == [(100, "snapshots/step-100"), (200, "snapshots/step-200"), (300, "checkpoint-300"),
                     (400, "checkpoint-400"), (500, "checkpoint-500")]


@pytest.mark.parametrize("step", [100, 200, 300, 400, 500])
def test_every_source_loads_exactly_its_weights(run, step):
    pipe = load_pipeline(str(run["run"]), torch.device("cpu"))
    folder = dict(checkpoints(run["run"]))[step]
    sha = load_checkpoint_weights(pipe, folder)
    assert len(sha) == 12
    for p, e in zip(pipe.unet.parameters(), run["expected"][step]):
        assert torch.equal(p.detach(), e)


def test_an_old_pickle_holding_code_is_refused_not_run(tmp_path, run):
    marker = tmp_path / "pwned"
    (tmp_path / "checkpoint-1").mkdir()
    torch.save({"shadow_params": [], "x": _Evil(marker)}, tmp_path / "checkpoint-1" / "custom_checkpoint_0.pkl")
    assert not marker.exists()
    pipe = load_pipeline(str(run["run"]), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"checkpoint='.*custom_checkpoint_0.pkl' is not allowed: .*weights_only"):
        load_checkpoint_weights(pipe, tmp_path / "checkpoint-1")
    assert not marker.exists()


def test_an_ema_of_another_architecture_is_refused(tmp_path, run):
    pipe = load_pipeline(str(run["run"]), torch.device("cpu"))
    (tmp_path / "checkpoint-1").mkdir()
    save_file({"0": torch.zeros(3)}, str(tmp_path / "checkpoint-1" / "ema_unet.safetensors"))
    with pytest.raises(ValueError, match="1 EMA tensors"):
        load_checkpoint_weights(pipe, tmp_path / "checkpoint-1")


def test_eval_curve_measures_every_source_read_only(run, tmp_path, capsys):
    feats = save_tiny_features(tmp_path / "features")
    net, fid = load_openmoji_features(feats)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ReferenceStats.from_features(net(images), fid, 8).save(tmp_path / "ref8.npz")
    before = {p: p.stat().st_mtime_ns for p in run["run"].rglob("*")}
    out = tmp_path / "curve.json"
    rc, _, err = run_cli(capsys, "eval", "curve", "--run", f"a={run['run']}", "--num", 4, "--steps", 2,
                         "--bootstrap", 20, "--features-model", feats, "--ref", tmp_path / "ref8.npz", "--out", out)
    assert rc == 0, err
    points = json.loads(out.read_text())["runs"]["a"]["points"]
    assert {k: v["source"] for k, v in points.items()} == {
        "100": "snapshots/step-100", "200": "snapshots/step-200", "300": "checkpoint-300",
        "400": "checkpoint-400", "500": "checkpoint-500"}
    assert len({v["fd"] for v in points.values()}) == 5  # five different weights, five different FDs
    assert {p: p.stat().st_mtime_ns for p in run["run"].rglob("*")} == before
