"""The --size / --ug / --ug-window flags of `genkit sample` and `genkit eval fd` -> pipeline kwargs, checked with
the flags' names before any work."""

from __future__ import annotations

from ..checks import LIMITS, bad, check_float

WINDOW_HELP = "comma-separated A-B ranges of model time, 0 <= A < B <= 1, e.g. 0-1,0.4-1"


def parse_windows(text: str, flag: str = "--windows") -> list[tuple[float, float]]:
    """'0-1,0.4-1' -> [(0.0, 1.0), (0.4, 1.0)]."""
    out = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        try:
            lo, hi = (float(v) for v in part.split("-"))
        except ValueError:
            bad(flag, text, WINDOW_HELP)
        if not 0 <= lo < hi <= 1:
            bad(flag, text, WINDOW_HELP)
        out.append((lo, hi))
    if not out:
        bad(flag, text, WINDOW_HELP)
    return out


def size_ug_kwargs(pipe, args) -> dict:
    """height / width / upsample_guidance_scale / upsample_guidance_window for this pipeline, or a ValueError
    naming --size, --ug or --ug-window."""
    kw = {}
    ug = check_float("--ug", args.ug, 0.0, LIMITS["guidance"])
    size = args.size if args.size is not None else pipe.trained_size
    try:
        pipe.check_size(size, size)
        if ug > 0:
            pipe.upsample_factor(size, size)
    except ValueError as e:
        msg = str(e).replace("height=", "--size=", 1).replace("width=", "--size=", 1)
        raise ValueError(msg + ("" if ug == 0 else f" (with --ug {ug})")) from None
    if args.size is not None:
        kw.update(height=size, width=size)
    if ug > 0:
        windows = parse_windows(args.ug_window, "--ug-window")
        if len(windows) != 1:
            bad("--ug-window", args.ug_window, "one A-B range, e.g. 0.4-1")
        kw.update(upsample_guidance_scale=ug, upsample_guidance_window=windows[0])
    return kw


def resolution_fields(pipe, args, size_kw: dict, info: dict) -> dict:
    """Manifest / JSON fields for --size and --ug, present only when one was given (older files stay the same)."""
    if args.size is None and not args.ug:
        return {}
    return {"size": size_kw.get("height", pipe.trained_size), "ug": args.ug,
            "ug_window": args.ug_window if args.ug else None, "nfe_low_res_per_image": info["nfe_low_res"]}
