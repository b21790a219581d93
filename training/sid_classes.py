"""Class accuracy class by class, for arms of a `genkit bench samplers` run, from its cached features: which classes
a one-step generator misses that its teacher draws, and whether they stay the same from one generator to the next.

    python training/sid_classes.py weights/openmoji-32-sid/interval_teacher_n3000.json \
        --arms teacher:dpmpp_2m@20,generator:openmoji-32-sid@1,generator:sid-H-7k@1 \
        --out weights/openmoji-32-sid/classes_n3000.json

The bench caches each arm's FD features (the OpenMoji network's embedding) beside its JSON; the classifier is that
network's linear head on the same embedding, so the predictions (and the bench's class_accuracy) come back without
drawing an image again. Seed s drew class s mod K (the bench's class cycle). Writes per-class accuracies of every
arm and, for each arm after the first, the classes where it is significantly below or above the first arm
(two-proportion z beyond 3) and its classes furthest below it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from genkit.checks import OneLineParser
from genkit.io import atomic_write_bytes


def per_class(pred: np.ndarray, want: np.ndarray, num_classes: int) -> list[float | None]:
    """pred, want (N,) class ids -> accuracy on each class's seeds (None for a class with no seed)."""
    return [float((pred[want == c] == c).mean()) if (want == c).any() else None for c in range(num_classes)]


def z_score(b: float, a: float, n: int) -> float:
    """Two-proportion z of accuracy a against b, both on n images (pooled variance; 0 where both are 0 or 1)."""
    pooled = (a + b) / 2
    se = math.sqrt(2 * pooled * (1 - pooled) / n) if n else 0.0
    return (a - b) / se if se > 0 else 0.0


def compare(base: list, arm: list, names: list[str], counts: list[int], worst: int = 10, z: float = 3.0) -> dict:
    """One arm against the base arm, class by class (counts: images of each class in both): the correlation of the
    per-class accuracies, where the arm is at or above the base, where it draws none of a class the base draws, the
    classes where it is significantly below or above (|two-proportion z| > z: 3 leaves about 0.3 false calls in 100
    classes) and its `worst` largest shortfalls (name, base, arm)."""
    rows = [(n, b, a, k) for n, b, a, k in zip(names, base, arm, counts) if a is not None and b is not None]
    gaps = sorted(rows, key=lambda r: (r[2] - r[1], r[0]))
    both = np.array([(b, a) for _, b, a, _ in rows])
    r = float(np.corrcoef(both.T)[0, 1]) if len(rows) > 1 and both.std(0).min() > 0 else None
    return {"classes": len(rows), "correlation": None if r is None else round(r, 3),
            "at_or_above": sum(a >= b for _, b, a, _ in rows),
            "none_right": [n for n, b, a, _ in rows if a == 0 and b > 0],
            "below": [n for n, b, a, k in rows if z_score(b, a, k) < -z],
            "above": [n for n, b, a, k in rows if z_score(b, a, k) > z],
            "worst": [[n, round(b, 3), round(a, 3)] for n, b, a, _ in gaps[:worst] if a < b]}


def main(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", type=Path, help="a `genkit bench samplers` JSON whose features are cached beside it")
    p.add_argument("--arms", required=True, help="comma-separated row keys; the first is the yardstick")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.json")
    p.add_argument("--features-model", default=None, help="the bench's --features-model (default: the shipped one)")
    args = p.parse_args(argv)

    from genkit.commands.common import FeatureCache, class_ids_for
    from genkit.commands.evaluate import features_model_dir
    from genkit.loading import load_pipeline
    from genkit.metrics import load_openmoji_features

    bench = json.loads(args.bench.read_text())
    c = bench["config"]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    missing = [a for a in arms if a not in bench["rows"]]
    if len(arms) < 2 or missing:
        p.error(f"--arms={args.arms!r} is not allowed: two or more row keys of {args.bench} "
                f"(not there: {', '.join(missing) or '-'})")
    net, fid = load_openmoji_features(features_model_dir(args.features_model))
    if fid != c["features"]:
        p.error(f"{args.bench} was measured with features {c['features']}, --features-model is {fid}")
    names = list(net.config.class_names)
    want = np.array(class_ids_for(load_pipeline(c["model"], "cpu"), c["class"],
                                  list(range(c["seed"], c["seed"] + c["num"]))))
    cache = FeatureCache(args.bench, c)
    acc = {}
    for arm in arms:
        f = cache.load(arm)
        if f is None:
            p.error(f"{arm}: no cached features in {cache.dir}")
        with torch.no_grad():
            pred = net.head(torch.from_numpy(f).float()).argmax(1).numpy()   # (N,) from the (N, d) embedding
        acc[arm] = per_class(pred, want, len(names))
        if abs(float((pred == want).mean()) - bench["rows"][arm]["class_accuracy"]) > 1e-3:
            p.error(f"{arm}: accuracy from the features differs from the bench row's")
    counts = np.bincount(want, minlength=len(names)).tolist()
    out = {"bench": str(args.bench), "arms": arms, "images_per_class": [min(counts), max(counts)],
           "classes": names, "accuracy": {a: [None if v is None else round(v, 3) for v in acc[a]] for a in arms},
           "against_first": {a: compare(acc[arms[0]], acc[a], names, counts) for a in arms[1:]},
           "command": shlex.join(["python", "training/sid_classes.py", *(sys.argv[1:] if argv is None else argv)])}
    atomic_write_bytes(args.out, (json.dumps(out, indent=2) + "\n").encode())
    for a, s in out["against_first"].items():
        print(f"{a}: at or above {arms[0]} on {s['at_or_above']} of {s['classes']} classes; significantly below on "
              f"{len(s['below'])}, above on {len(s['above'])}; none right: {', '.join(s['none_right']) or '-'}")


if __name__ == "__main__":
    main()
