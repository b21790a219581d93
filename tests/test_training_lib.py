"""genkit.training: checkpoints without pickle (EMA as safetensors + JSON; old custom_checkpoint_*.pkl read with
weights_only=True, so a crafted one cannot run code), .jsonl logs that never repeat a step after a resume, and
train_diffusion.py resuming an old-format checkpoint with its loss log and minutes continuing."""

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from genkit.training import JsonlLog, load_checkpoint, minutes_before, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_jsonl_log_drops_rows_after_the_resumed_step(tmp_path):
    path = tmp_path / "loss.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    log = JsonlLog(path, 4)                                   # resumed from checkpoint-4: rows 5-7 (and a cut line) go
    log.write({"step": 5, "loss": 0.0})
    assert [json.loads(r)["step"] for r in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert log.last() == {"step": 5, "loss": 0.0}
    JsonlLog(path, -1)                                        # a new run starts afresh
    assert path.read_text() == ""
    assert JsonlLog(tmp_path / "none.jsonl", 3).last() == {}


def test_minutes_before_reads_the_first_log_with_minutes(tmp_path):
    (tmp_path / "loss.jsonl").write_text("".join(json.dumps({"step": s, "minutes": s * 2.0}) + "\n" for s in (5, 10)))
    assert minutes_before(tmp_path, 7) == 10.0 and minutes_before(tmp_path, 10) == 20.0
    assert minutes_before(tmp_path, 0) == 0.0


def tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    ema = EMAModel(model.parameters(), decay=0.9)
    return model, torch.optim.Adam(model.parameters(), lr=1e-2), ema


def train_steps(model, opt, ema, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        loss = model(torch.randn(16, 4, generator=g)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        ema.step(model.parameters())


def test_checkpoint_round_trip_has_no_pickled_objects(tmp_path):
    acc = Accelerator(cpu=True)
    model, opt, ema = tiny()
    model, opt = acc.prepare(model, opt)
    train_steps(model, opt, ema, 3)
    save_checkpoint(acc, tmp_path, 3, keep=1, emas={"net": ema}, state={"minutes": 1.5, "avg": {"loss": 0.2}})
    ckpt = tmp_path / "checkpoint-3"
    names = {p.name for p in ckpt.iterdir()}
    assert {"ema_net.safetensors", "ema_net.json", "trainer_state.json"} <= names
    assert not [n for n in names if n.startswith("custom_checkpoint")]   # accelerate's pickled custom objects
    model2, opt2, ema2 = tiny()
    acc2 = Accelerator(cpu=True)                               # a new run: its own prepared objects
    model2, opt2 = acc2.prepare(model2, opt2)
    state = load_checkpoint(acc2, ckpt, {"net": ema2})
    assert state == {"step": 3, "minutes": 1.5, "avg": {"loss": 0.2}}
    assert ema2.optimization_step == ema.optimization_step == 3 and ema2.decay == ema.decay
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow_params, ema2.shadow_params))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    # the same training continues identically
    train_steps(model, opt, ema, 2, seed=1)
    train_steps(model2, opt2, ema2, 2, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow_params, ema2.shadow_params))


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/genkit-pwned",))


def test_old_checkpoints_load_their_ema_with_weights_only_and_refuse_code(tmp_path):
    acc = Accelerator(cpu=True)
    model, opt, ema = tiny()
    model, opt = acc.prepare(model, opt)
    train_steps(model, opt, ema, 2)
    ckpt = tmp_path / "checkpoint-2"
    acc.save_state(str(ckpt))
    torch.save(ema.state_dict(), ckpt / "custom_checkpoint_0.pkl")   # what register_for_checkpointing wrote
    _, _, ema2 = tiny()
    assert load_checkpoint(acc, ckpt, {"net": ema2}) == {}           # no trainer_state.json: {}
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow_params, ema2.shadow_params))
    # a crafted pickle is refused, not run
    with open(ckpt / "custom_checkpoint_0.pkl", "wb") as f:
        pickle.dump({"shadow_params": [Exploit()]}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(acc, ckpt, {"net": ema2})
    assert not Path("/tmp/genkit-pwned").exists()


@pytest.mark.slow  # two train_diffusion.py runs (~40 s on a busy 2-core box)
def test_train_diffusion_resumes_an_old_format_checkpoint_without_repeating_log_rows(tmp_path):
    """checkpoint-2 rewritten as the pre-genkit.training code wrote it (EMA in custom_checkpoint_0.pkl, no
    trainer_state.json), and loss.jsonl rows 3-4 of a run killed after that checkpoint: the resumed run continues
    from it, logs steps 3-4 once, and its minutes continue from the row at step 2."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    script = str(ROOT / "training" / "train_diffusion.py")
    tiny_flags = ["--channels", "32,32", "--attention_levels", "1", "--layers_per_block", "1", "--resolution", "16",
                  "--train_batch_size", "4", "--checkpointing_steps", "2", "--log_every", "1", "--seed", "0",
                  "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def run(*extra):
        res = subprocess.run(["python", script, *tiny_flags, *extra], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stderr

    run("--max_train_steps", "2")
    ckpt = out / "checkpoint-2"
    meta = json.loads((ckpt / "ema_unet.json").read_text())
    shadow = load_file(str(ckpt / "ema_unet.safetensors"))
    torch.save({**meta, "shadow_params": [shadow[str(i)] for i in range(len(shadow))]},
               ckpt / "custom_checkpoint_0.pkl")
    for name in ("ema_unet.json", "ema_unet.safetensors", "trainer_state.json"):
        (ckpt / name).unlink()
    rows = [json.loads(r) for r in (out / "loss.jsonl").read_text().splitlines()]
    with open(out / "loss.jsonl", "a") as f:                # the killed run had logged two more steps
        for s in (3, 4):
            f.write(json.dumps({"step": s, "loss": 9.0, "minutes": 99.0}) + "\n")
    log = run("--max_train_steps", "4", "--resume_from_checkpoint", "latest")
    assert "resumed from" in log and "at step 2" in log
    after = [json.loads(r) for r in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in after] == [1, 2, 3, 4]
    assert after[:2] == rows and all(r["loss"] != 9.0 for r in after)
    assert after[2]["minutes"] >= rows[1]["minutes"] and after[3]["minutes"] >= after[2]["minutes"] < 99
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["minutes"] >= rows[1]["minutes"] and state["loss_avg"] == after[3]["loss"]
