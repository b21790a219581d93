"""`genkit bench overhead`: what the pipeline costs on top of the network.

Arms, side by side on the same model, batch and noise, interleaved to share the machine's noise:
  bare      S forward calls of the UNet on a fixed batch (the floor)
  pipeline  PixelDiffusionPipeline at S NFE (euler, so S steps = S network calls), output_type="pt"
Reports the median time of each arm over --repeats and the ratio pipeline / bare.
"""

from __future__ import annotations

import statistics
import time

import torch

from .. import __version__
from .common import atomic_write_json, load_pipeline, pick_device


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_overhead(args) -> dict:
    device = pick_device(args.device)
    pipe = load_pipeline(args.model, device)
    unet, b, s = pipe.unet, args.batch_size, args.steps
    cfg = unet.config
    x = torch.randn(b, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)
    t = torch.full((b,), 500.0, device=device)
    labels = torch.full((b,), pipe.num_classes, device=device) if pipe.num_classes else None
    gens = [torch.Generator(device).manual_seed(i) for i in range(b)]

    def bare():
        with torch.no_grad():
            for _ in range(s):
                unet(x, t, class_labels=labels)

    def pipeline():
        pipe(batch_size=b, num_inference_steps=s, solver="euler", generator=gens, output_type="pt")

    arms = {"bare": bare, "pipeline": pipeline}
    for fn in arms.values():  # warm-up
        fn()
    times = {k: [] for k in arms}
    for _ in range(args.repeats):
        for k, fn in arms.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "bench": "overhead", "model": args.model, "nfe": s, "batch_size": b, "repeats": args.repeats,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "ratio_pipeline_over_bare": round(med["pipeline"] / med["bare"], 4),
        "command": f"genkit bench overhead --model {args.model} --steps {s} --batch-size {b} --repeats {args.repeats}",
        "genkit": __version__, "torch": torch.__version__,
    }
    print(f"pipeline / bare UNet at {s} NFE, batch {b}: {result['ratio_pipeline_over_bare']:.3f}x "
          f"({med['pipeline']:.3f}s vs {med['bare']:.3f}s, median of {args.repeats})")
    if args.out:
        from pathlib import Path
        atomic_write_json(Path(args.out), result)
    return result
