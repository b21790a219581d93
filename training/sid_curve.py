"""FD against generator images seen, from a distill_sid.py run's metrics.jsonl: fd_curve.json (the rows, and the
least-squares slope of log FD on log images over the rows with images > 0) and fd_curve.png (log-log axes).
Rows with fd_teacher (distill_sid.py --fd_teacher_features: FD to the teacher's own samples) get their own slope,
a second line in the plot and a projection: the images at which that slope's line reaches the teacher's FD to its
own samples on other seeds (images_to_fd_teacher_of_the_teacher_itself).

    python training/sid_curve.py runs/sid/metrics.jsonl --out weights/openmoji-32-sid
    python training/sid_curve.py runs/sid/metrics.jsonl runs/sid-b/metrics.jsonl --out weights/openmoji-32-sid

Several files make one curve: each later run continued the one before it (started with --init_generator from
its generator), so its images and minutes count on from the previous run's last row, and its step-0 row (the
same generator, measured again) is dropped.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

from genkit.checks import OneLineParser
from genkit.io import atomic_write_bytes


def chain(runs: list[list[dict]]) -> list[dict]:
    """One curve from runs that continue each other: (images, minutes) offset by the previous run's last row;
    a continuing run's step-0 row is dropped; each row records its "run" index."""
    out, images, minutes = [], 0, 0.0
    for i, rows in enumerate(runs):
        for r in rows:
            if i and r.get("images", 0) == 0:
                continue
            out.append({**r, "run": i, "images": images + r["images"],
                        "minutes": round(minutes + r.get("minutes", 0.0), 3)})
        if out:
            images, minutes = out[-1]["images"], out[-1]["minutes"]
    return out


def fit(rows: list[dict], key: str = "fd") -> tuple[float, float, float] | None:
    """Least-squares line of log rows[key] on log images, over the rows with images > 0 and a value:
    (slope, mean log images, mean log value), or None with fewer than two distinct image counts."""
    pts = [(math.log(r["images"]), math.log(r[key])) for r in rows if r.get("images", 0) > 0 and r.get(key)]
    if len(pts) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return (sum((x - mx) * (y - my) for x, y in pts) / sxx, mx, my) if sxx > 0 else None


def slope(rows: list[dict], key: str = "fd") -> float | None:
    """The slope of fit(rows, key): d log value / d log images."""
    line = fit(rows, key)
    return line[0] if line else None


# The FD between the teacher's own samples on two seed sets (n = 392, weights/openmoji-32-sid/HISTORY.md, session
# 32): a generator whose FD to the teacher's samples reaches it is as close as the teacher is to itself
TEACHER_SELF_FD = 2.6


def images_to_reach(rows: list[dict], target: float, key: str = "fd_teacher") -> float | None:
    """Generator images at which fit(rows, key) reaches `target` (None when the line does not fall)."""
    line = fit(rows, key)
    if line is None or line[0] >= 0:
        return None
    b, mx, my = line
    return math.exp(mx + (math.log(target) - my) / b)


def curve(rows: list[dict]) -> dict:
    out = {"rows": rows, "slope_log_fd_per_log_images": slope(rows)}
    if any(r.get("fd_teacher") for r in rows):
        out["slope_log_fd_teacher_per_log_images"] = slope(rows, "fd_teacher")
        out["teacher_self_fd"] = TEACHER_SELF_FD
        out["images_to_fd_teacher_of_the_teacher_itself"] = images_to_reach(rows, TEACHER_SELF_FD)
    return out


SERIES = (("fd", "FD to data", (40, 90, 200)), ("fd_teacher", "FD to the teacher's samples", (220, 110, 20)))


def plot(rows: list[dict], size=(480, 320), pad=48) -> bytes:
    """log10 FD vs log10 images, one line per series present (images 0 drawn at the left edge: the start)."""
    series = [(label, colour, [(max(r["images"], 1), r[key]) for r in rows if r.get(key)])
              for key, label, colour in SERIES]
    series = [s for s in series if s[2]]
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    w, h = size
    if series:
        lx = [math.log10(n) for _, _, pts in series for n, _ in pts]
        ly = [math.log10(v) for _, _, pts in series for _, v in pts]
        x0, x1 = min(lx), max(max(lx), min(lx) + 1)
        y0, y1 = min(ly) - 0.05, max(ly) + 0.05
        to = lambda x, y: (pad + (math.log10(x) - x0) / (x1 - x0) * (w - 2 * pad),  # noqa: E731
                           h - pad - (math.log10(y) - y0) / (y1 - y0) * (h - 2 * pad))
        for i, (label, colour, pts) in enumerate(series):
            xy = [to(n, v) for n, v in pts]
            if len(xy) > 1:
                d.line(xy, fill=colour, width=2)
            for px, py in xy:
                d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            d.text((pad, 6 + 12 * i), f"{label}: last {pts[-1][1]:.1f} at {pts[-1][0]:,} images", fill=colour)
        d.text((pad, h - pad + 8), f"10^{x0:.1f}", fill="black")
        d.text((w - pad - 30, h - pad + 8), f"10^{x1:.1f}", fill="black")
        d.text((w // 2 - 60, h - pad + 20), "generator images (log)", fill="black")
        d.text((4, pad - 12), f"{10 ** y1:.0f}", fill="black")
        d.text((4, h - pad - 4), f"{10 ** y0:.0f}", fill="black")
    d.rectangle([pad, pad, w - pad, h - pad], outline="gray")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def main():
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", nargs="+", help="a distill_sid.py run's metrics.jsonl; more than one: each continues "
                   "the one before")
    p.add_argument("--out", required=True, help="folder for fd_curve.json and fd_curve.png")
    args = p.parse_args()
    rows = chain([[json.loads(line) for line in Path(m).read_text().splitlines() if line.strip()]
                  for m in args.metrics])
    out = Path(args.out)
    atomic_write_bytes(out / "fd_curve.json", (json.dumps(curve(rows), indent=1) + "\n").encode())
    atomic_write_bytes(out / "fd_curve.png", plot(rows))
    print(json.dumps({k: v for k, v in curve(rows).items() if k != "rows"}))


if __name__ == "__main__":
    main()
