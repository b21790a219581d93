"""Shared pieces of the commands: device choice, model loading with clear errors, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, atomic_write_bytes  # noqa: F401  (atomic_write_bytes: re-exported for the commands)
from ..loading import load_folder, load_pipeline, pick_device, pipeline_class  # noqa: F401  (moved there; re-exported)


@contextlib.contextmanager
def remove_if_created(path: str, main: bool = True):
    """A job that fails leaves no --out folder it created and left empty (a rejected run leaves nothing)."""
    existed = Path(path).exists()
    try:
        yield
    except BaseException:
        p = Path(path)
        if main and not existed and p.is_dir() and not any(p.iterdir()):
            p.rmdir()
        raise


def ensure_writable_dir(path: str, name: str = "out") -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=p, prefix=".probe-", delete=True)
        probe.close()
    except OSError as e:
        raise ValueError(f"--{name}={path!r} is not a writable folder ({e.strerror})") from None
    return p


def weights_fingerprint(folder: str | Path, pattern: str = "**/*.safetensors") -> str:
    """sha256 (12 hex) of the weight files under a model folder, in path order: what a resumable benchmark keys
    its cached rows on, so a retrained model at the same path is measured again."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).glob(pattern)):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def save_png_atomic(image, path: Path, parameters: str | None = None) -> None:
    """Write a PNG atomically, with the `parameters` text chunk when given (see genkit/png_info.py)."""
    from ..png_info import png_bytes

    atomic_write_bytes(path, png_bytes(image, parameters))


def image_grid(images, cols: int | None = None):
    """PIL images of one size -> one grid image (cols x rows)."""
    from PIL import Image

    n = len(images)
    cols = cols or max(1, int(round(n ** 0.5)))
    rows = (n + cols - 1) // cols
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid


def labelled_grid(rows, labels: list[str], scale: int = 3):
    """Rows of PIL images (one size) -> one image: each row's label on the left, images enlarged `scale` times
    (nearest neighbour: 32 px pixel art stays sharp)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    w, h = (scale * d for d in rows[0][0].size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = 8
    label_w = int(max(probe.textlength(t, font=font) for t in labels)) + 2 * pad
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (label_w + cols * w, len(rows) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (row, text) in enumerate(zip(rows, labels)):
        draw.text((pad, i * h + h // 2), text, fill="black", font=font, anchor="lm")
        for j, im in enumerate(row):
            sheet.paste(im.resize((w, h), Image.NEAREST), (label_w + j * w, i * h))
    return sheet


# -- sampling shared by `sample`, `eval fd --model` and `bench samplers` ------------------------------------

DEFAULT_GUIDANCE = 2.0  # CFG is what makes a small class-conditional model draw clear emoji


def is_one_step(pipe) -> bool:
    """A one-step generator (OneStepPipeline, e.g. SiD-distilled): one network evaluation, no solver, no CFG."""
    return pipe.config.get("sigma_init") is not None


def default_steps(pipe, steps: int | None) -> int:
    """--steps: default 20 for a diffusion model, 1 (the only value) for a one-step generator."""
    if is_one_step(pipe):
        if steps not in (None, 1):
            raise ValueError(f"--steps={steps} is not allowed: 1 for a one-step generator (leave --steps out)")
        return 1
    return 20 if steps is None else steps


def resolve_conditioning(pipe, class_label: str | None, guidance: float | None) -> tuple[str, float]:
    """The CLI's --class / --guidance with their defaults, checked against the model: (class, guidance).

    class is 'cycle' (seed s gets class s mod K), 'none' (the null class / an unconditional model) or a
    class name or id; the defaults are 'cycle' and 2.0 for a class-conditional model, 'none' and 1 otherwise.
    """
    conditional = pipe.num_classes > 0
    if is_one_step(pipe) and guidance not in (None, 1.0):   # its teacher's guidance is distilled into it
        raise ValueError(f"--guidance={guidance} is not allowed: 1 for a one-step generator (it was distilled "
                         f"from its teacher at guidance {pipe.config.get('teacher_guidance', 1.0)}, built in)")
    guidance = (DEFAULT_GUIDANCE if conditional and not is_one_step(pipe) else 1.0) if guidance is None else guidance
    cls = class_label if class_label is not None else ("cycle" if conditional else "none")
    if cls not in ("cycle", "none"):  # validate once, early, with the CLI's flag name
        try:
            pipe.class_ids(cls, 1)
        except ValueError as e:
            raise ValueError(str(e).replace("class=", "--class=", 1)) from None
    elif cls == "cycle" and not conditional:
        raise ValueError("--class=cycle needs a class-conditional model: this one is unconditional")
    if guidance < 0:
        raise ValueError(f"--guidance={guidance} is not allowed: a number >= 0")
    if guidance != 1.0 and not conditional:
        raise ValueError(f"--guidance={guidance} needs a class-conditional model: use 1")
    if cls == "none" and guidance != 1.0:
        raise ValueError(f"--guidance={guidance} needs a class (--class NAME|ID|cycle): use --guidance 1")
    return cls, guidance


def class_ids_for(pipe, cls: str, seeds) -> list[int] | None:
    """Class id of each seed (None for 'none'): image k's class depends only on its seed."""
    if cls == "none":
        return None
    if cls == "cycle":
        return [s % pipe.num_classes for s in seeds]
    return pipe.class_ids(cls, len(seeds)).tolist()


def generate(pipe, seeds, batch_size: int, cls: str, device, info: dict | None = None, **call_kwargs):
    """Yield (seeds, x) batch by batch: x the raw samples (B, C, H, W) in [-1, 1] (output_type='latent').

    One generator per seed, so every image is the same whatever the batch size or the process that makes it.
    call_kwargs go to the pipeline (num_inference_steps, solver, grid, guidance_scale, ...); `info`, when given,
    gets the last call's NFE counts (nfe, nfe_low_res).
    """
    seeds = iter(seeds)  # streamed: a list of a billion seeds is never built
    while batch := list(itertools.islice(seeds, batch_size)):
        gens = [torch.Generator(device).manual_seed(s) for s in batch]
        out = pipe(batch_size=len(batch), class_labels=class_ids_for(pipe, cls, batch), generator=gens,
                   output_type="latent", **call_kwargs)
        if info is not None:
            info.update(nfe=out.nfe, nfe_low_res=getattr(out, "nfe_low_res", 0))
        yield batch, out.images


def earlier_result(out: str | Path, config: dict | None = None) -> dict:
    """The JSON an earlier run of a resumable bench left at `out`: {} when there is none, it is unreadable, or it
    was made with another `config` (then nothing of it may be reused)."""
    try:
        old = json.loads(Path(out).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return old if config is None or old.get("config") == config else {}


@contextlib.contextmanager
def file_lock(path: str | Path):
    """An exclusive advisory lock on PATH.lock for a read-merge-write of PATH by processes sharing it."""
    import fcntl
    with open(f"{path}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def process_state():
    """accelerate's PartialState for the length of a command. torchrun without GPUs forms gloo ranks only with
    cpu=True (else every process would do all the work). On the way out the process group is destroyed: a rank
    that exits with gloo's threads still alive aborts ("terminate called without an active exception") and
    fails the whole torchrun job. All ranks meet first after a normal run only: a rank that raised must not
    wait at a barrier the others may never reach."""
    from accelerate import PartialState

    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available())
    try:
        yield state
        if state.num_processes > 1:
            state.wait_for_everyone()
    finally:
        if state.num_processes > 1:
            state.destroy_process_group()


def exit_process(status: int) -> None:
    """sys.exit(status); a rank of a torchrun / accelerate job (WORLD_SIZE > 1) leaves through os._exit once its
    output is flushed instead: after the process group is destroyed, gloo's worker threads can still abort the
    interpreter's finalisation ("terminate called without an active exception", SIGABRT; pytorch/pytorch#179291),
    which fails a job whose work is done and written. Files are written atomically before this point."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def weights_dir() -> Path:
    """The shipped models: $GENKIT_WEIGHTS, else the repository's weights/ (an editable install or the Docker
    image's /app), else ./weights."""
    env = os.environ.get("GENKIT_WEIGHTS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "weights"
    return repo if repo.is_dir() else Path("weights")


class FeatureCache:
    """Per-arm FD features (num, d) float64 as .npy in a hidden folder beside FILE.json, keyed by the bench's config:
    a resumed run reads finished arms back, and intervals / paired ratios can be recomputed offline. An arm that
    takes long can also keep its finished batches (uint8 images and running counts) as ARM.partial.npz, so a run
    killed mid-arm resumes at its last batch; the partial file goes once the arm's features are saved."""

    def __init__(self, out: Path, config: dict):
        key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        self.dir = Path(out).with_name(f".{Path(out).stem}.features-{key}")

    def _path(self, arm: str, suffix: str = ".npy") -> Path:
        return self.dir / (arm.replace("/", "_").replace(":", "_") + suffix)

    def save(self, arm: str, feats: np.ndarray) -> None:
        with atomic_path(self._path(arm), suffix=".npy") as tmp:
            np.save(tmp, feats)
        self._path(arm, ".partial.npz").unlink(missing_ok=True)

    def load(self, arm: str) -> np.ndarray | None:
        path = self._path(arm)
        return np.load(path) if path.is_file() else None

    def rename(self, arm: str, new: str) -> None:
        """Keep arm's features under another arm's name (nothing to do where they are not cached here)."""
        if self._path(arm).is_file():
            os.replace(self._path(arm), self._path(new))

    def save_partial(self, arm: str, images: np.ndarray, **counts: float) -> None:
        """images: (k, C, H, W) uint8 of the first k seeds; counts: running totals (seconds, correct, ...)."""
        with atomic_path(self._path(arm, ".partial.npz"), suffix=".npz") as tmp:
            np.savez(tmp, images=images, **{k: np.asarray(v) for k, v in counts.items()})

    def load_partial(self, arm: str) -> dict | None:
        """{'images': (k, C, H, W) uint8, **counts} saved by save_partial, or None."""
        path = self._path(arm, ".partial.npz")
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: (z[k] if k == "images" else z[k].item()) for k in z.files}
