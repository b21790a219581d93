"""checkpoint-N folders: written atomically, pruned after the save, found again by --resume_from_checkpoint,
and loaded without unpickling anything a user could have crafted.

A checkpoint holds
  accelerate's files   model*.safetensors, optimizer*.bin, scheduler*.bin, random_states_R.pkl
                       (accelerate loads every one of them with torch.load(weights_only=True))
  ema_NAME.safetensors + ema_NAME.json   each EMAModel: shadow tensors / its scalars (no pickle at all)
  trainer_state.json   the loop's own state: step, minutes, smoothed losses, images seen ...
EMAs are never registered with accelerator.register_for_checkpointing: accelerate would pickle them
(custom_checkpoint_N.pkl) and load them back with weights_only=False. Checkpoints from before this change
(custom_checkpoint_N.pkl, no ema_*.safetensors) still resume: those files are read with weights_only=True.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """checkpoint-N folders in step order (temp folders of an interrupted save are not among them)."""
    return sorted((p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[1].isdigit()),
                  key=lambda p: int(p.name.split("-")[1]))


def resolve_checkpoint(out_dir: Path, resume: str | None) -> tuple[Path | None, int]:
    """--resume_from_checkpoint ('latest' or a path) -> (folder, step); (None, 0) when there is nothing to resume."""
    if not resume:
        return None, 0
    if resume == "latest":
        ckpts = checkpoint_dirs(out_dir)
        path = ckpts[-1] if ckpts else None
    else:
        path = Path(resume)
    if path is None:
        return None, 0
    if not path.is_dir() or not path.name.split("-")[-1].isdigit():
        raise ValueError(f"--resume_from_checkpoint={str(path)!r} is not a checkpoint folder: give 'latest' or "
                         "an existing checkpoint-N folder")
    return path, int(path.name.split("-")[-1])


def discard(path: Path) -> None:
    """Delete a folder, renamed to a hidden temp name first so that a kill never leaves half of it visible."""
    trash = path.with_name(f".tmp-old-{path.name}")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash)


# --- EMA as safetensors + JSON ----------------------------------------------------------------------------

def save_ema(ema, folder: Path, name: str) -> None:
    state = dict(ema.state_dict())
    shadow = state.pop("shadow_params")
    save_file({f"{i}": p.detach().to("cpu").contiguous() for i, p in enumerate(shadow)},
              str(folder / f"ema_{name}.safetensors"))
    (folder / f"ema_{name}.json").write_text(json.dumps(state, indent=1) + "\n")


def load_ema(ema, folder: Path, name: str, legacy_index: int) -> None:
    """Restore an EMAModel in place from ema_NAME.* or (old checkpoints) custom_checkpoint_{legacy_index}.pkl."""
    folder = Path(folder)
    tensors = folder / f"ema_{name}.safetensors"
    if tensors.is_file():
        state = json.loads((folder / f"ema_{name}.json").read_text())
        shadow = load_file(str(tensors))
        state["shadow_params"] = [shadow[f"{i}"] for i in range(len(shadow))]
    else:
        legacy = folder / f"custom_checkpoint_{legacy_index}.pkl"
        if not legacy.is_file():
            raise ValueError(f"--resume_from_checkpoint={str(folder)!r} is not allowed: it holds no EMA "
                             f"(ema_{name}.safetensors)")
        state = torch.load(legacy, map_location="cpu", weights_only=True)   # tensors and numbers only
    device = ema.shadow_params[0].device if ema.shadow_params else "cpu"
    if len(state["shadow_params"]) != len(ema.shadow_params):
        raise ValueError(f"--resume_from_checkpoint={str(folder)!r} is not allowed: its EMA {name!r} has "
                         f"{len(state['shadow_params'])} tensors, the model {len(ema.shadow_params)}")
    ema.load_state_dict(state)
    ema.to(device)


# --- save / load ------------------------------------------------------------------------------------------

def save_checkpoint(accelerator, out_dir: Path, step: int, keep: int, emas: dict | None = None,
                    state: dict | None = None) -> None:
    """accelerator.save_state + EMAs + trainer_state.json into checkpoint-{step}: written under a temp name, then
    renamed; older ones beyond `keep` pruned after the save (never before, so a kill always leaves one complete
    checkpoint); the hidden .tmp-* folders a killed save left behind are swept first."""
    out_dir = Path(out_dir)
    tmp, final = out_dir / f".tmp-checkpoint-{step}", out_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:  # saves run one at a time, so any temp here was left by a killed run
        for stale in out_dir.glob(".tmp-*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, ema in (emas or {}).items():
            save_ema(ema, tmp, name)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **(state or {})}, indent=1) + "\n")
        if final.exists():  # resumed from an older checkpoint: this step was saved before
            discard(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(out_dir)[:-keep]:
            discard(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, path: Path, emas: dict | None = None) -> dict:
    """accelerator.load_state (weights_only loads) + EMAs; returns trainer_state.json ({} for old checkpoints).
    `emas` must list the EMAs in the order the old code registered them (their custom_checkpoint index)."""
    path = Path(path)
    if list(path.glob("custom_checkpoint_*.pkl")):
        # an old checkpoint: accelerate refuses custom_checkpoint files that no registered object claims (and would
        # unpickle them with weights_only=False). Load the rest through a view of the folder without them.
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-view-") as view:
            for f in path.iterdir():
                if not f.name.startswith("custom_checkpoint_"):
                    os.symlink(f.resolve(), Path(view) / f.name)
            accelerator.load_state(view)
    else:
        accelerator.load_state(str(path))
    for i, (name, ema) in enumerate((emas or {}).items()):
        load_ema(ema, path, name, i)
    f = path / STATE_FILE
    return json.loads(f.read_text()) if f.is_file() else {}
