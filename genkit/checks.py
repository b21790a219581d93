"""One set of input checks for every user-facing edge: pipelines' __call__, the CLI, the app, training flags.

Every failure is a ValueError in one format, naming the parameter, the value and what is allowed:

    guidance_scale=nan is not allowed: a finite number >= 0

`name` is what the user typed: "guidance_scale" in Python, "--guidance" on the command line.
Numbers from numpy (np.float32, np.int64) are accepted; bool is never a number; NaN and inf never pass a
float check.
"""

from __future__ import annotations

import argparse
import math
import numbers
import re
from typing import NoReturn


def bad(name: str, value, allowed: str) -> NoReturn:
    raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


def _range_text(kind: str, lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def check_float(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number in [lo, hi] (either bound optional) -> float."""
    allowed = _range_text("a finite number", lo, hi)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        bad(name, value, allowed)
    out = float(value)
    if not math.isfinite(out) or (lo is not None and out < lo) or (hi is not None and out > hi):
        bad(name, value, allowed)
    return out


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """An integer in [lo, hi] -> int. 3.7, "3", True and 3.0 are refused (no silent truncation)."""
    allowed = _range_text("an int", lo, hi)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bad(name, value, allowed)
    out = int(value)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        bad(name, value, allowed)
    return out


def check_choice(name: str, value, choices):
    """One of `choices` (compared with ==) -> value."""
    choices = tuple(choices)
    if value not in choices:
        bad(name, value, "one of " + ", ".join(map(str, choices)))
    return value


# -- limits: one table, stated in --help and README, enforced by the CLI, the pipelines and the app ------------

LIMITS = {
    "num_images": 100_000,       # genkit sample --num: images per job (seeds are streamed, never built up front)
    "steps": 1_000,              # solver steps per image (pipelines' num_inference_steps, --steps)
    "batch_size": 1_024,         # images per network call
    "image_size": 1_024,         # height / width in pixels (the pixel pipeline's upsampling sizes)
    "guidance": 100.0,           # classifier-free guidance scale, in [0, this]
    "temperature": 10.0,         # the multimodal head's noise scale, in [0, this]
    "seed": 2**63 - 1,           # seeds are in [0, this]: torch.Generator.manual_seed's range
    "prompts": 64,               # prompts per request (genkit draw --prompt / --prompts-file, the app)
    "app_images": 16,            # images per app request
}


def limits_text() -> str:
    """The table for --help and README: 'num_images <= 100000, steps <= 1000, ...'."""
    return ", ".join(f"{k} <= {v:g}" if isinstance(v, float) else f"{k} <= {v}" for k, v in LIMITS.items())


def check_seed(name: str, value, count: int = 1) -> int:
    """A seed such that seed .. seed + count - 1 all fit torch's generator."""
    return check_int(name, value, 0, LIMITS["seed"] - (count - 1))


def check_text(name: str, value, max_bytes: int | None = None) -> str:
    """A non-empty str (not bytes, not None) of at most max_bytes UTF-8 bytes."""
    if not isinstance(value, str) or not value.strip():
        bad(name, value, "a non-empty text (str)")
    n = len(value.strip().encode("utf-8", "surrogatepass"))
    if max_bytes is not None and n > max_bytes:
        bad(name, value if len(value) <= 40 else value[:40] + "...", f"at most {max_bytes} UTF-8 bytes (it has {n})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: what a non-UTF-8 command-line argument decodes to
        bad(name, value, "valid UTF-8 text")
    return value


def check_sigmas(name: str, sigmas) -> list[float]:
    """A noise-level grid: at least 2 finite values, the first > 0, strictly decreasing, the last >= 0."""
    try:
        values = [float(s) for s in (sigmas.tolist() if hasattr(sigmas, "tolist") else sigmas)]
    except (TypeError, ValueError):
        bad(name, sigmas, "a sequence of numbers")
    allowed = "at least 2 finite numbers, strictly decreasing, ending >= 0"
    if len(values) < 2 or not all(math.isfinite(v) for v in values) or values[-1] < 0 \
            or any(a <= b for a, b in zip(values, values[1:])):
        bad(name, sigmas, allowed)
    return values


def check_new_file(name: str, path) -> str:
    """A path a file can be written to: not an existing folder, its parent folder existing or creatable."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        bad(name, str(path), "a file path, not an existing folder")
    parent = next((a for a in [p.parent, *p.parent.parents] if a.exists()), None)
    if parent is not None and not parent.is_dir():
        bad(name, str(path), f"a path under a folder ({str(parent)!r} is a file)")
    return str(path)


# -- argparse `type=`s: the same checks and the same message on the command line ------------------------------

def _arg(check, flag: str, *bounds, number=int):
    import argparse

    def parse(text: str):
        try:
            value = number(text)
        except (ValueError, OverflowError):
            value = text  # not a number: the check names it
        try:
            return check(flag, value, *bounds)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = flag  # argparse prints the type's name only for its own errors
    return parse


def int_arg(flag: str, lo: int | None = 1, hi: int | None = None):
    """type= for an int flag: `--steps=0 is not allowed: an int in [1, 1000]`."""
    return _arg(check_int, flag, lo, hi)


def float_arg(flag: str, lo: float | None = None, hi: float | None = None):
    """type= for a finite float flag (nan, inf refused)."""
    return _arg(check_float, flag, lo, hi, number=float)


def seed_arg(flag: str = "--seed"):
    return _arg(check_seed, flag)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (no usage block) and exits 2, in the format above:

        train_vq.py: error: --seed='abc' is not allowed: an int in [0, ...]

    Used by the genkit CLI and every training script. A plain `type=int` / `type=float` becomes int_arg /
    float_arg (no bounds; the script's check_args holds the ranges), `--seed` becomes seed_arg, so argparse's
    own "invalid int value" message never shows and NaN/inf are refused where they are typed."""

    def add_argument(self, *flags, **kwargs):
        flag = max(flags, key=len) if flags else ""
        if flag.startswith("-") and kwargs.get("type") in (int, float):
            kind = kwargs["type"]
            kwargs["type"] = (seed_arg(flag) if kind is int and flag == "--seed"
                              else int_arg(flag, None) if kind is int else float_arg(flag))
        return super().add_argument(*flags, **kwargs)

    def error(self, message):
        # "argument --steps: --steps=0 is not allowed: ..." -> "--steps=0 is not allowed: ..." (one format)
        message = re.sub(r"^argument [^:]+: (--[\w-]+=)", r"\1", message)
        message = re.sub(r"^argument (--[\w-]+): expected one argument$",
                         r"\1 is missing its value (write \1=VALUE for a value that starts with '-', e.g. \1=-1)",
                         message)
        self.exit(2, f"{self.prog.split()[0]}: error: {' '.join(message.split())}\n")
