"""One set of input checks for every user-facing edge: pipelines' __call__, the CLI, the app, training flags.

Every failure is a ValueError in one format, naming the parameter, the value and what is allowed:

    guidance_scale=nan is not allowed: a finite number >= 0

`name` is what the user typed: "guidance_scale" in Python, "--guidance" on the command line.
Numbers from numpy (np.float32, np.int64) are accepted; bool is never a number; NaN and inf never pass a
float check.
"""

from __future__ import annotations

import math
import numbers
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
