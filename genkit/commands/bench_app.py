"""`genkit bench app` (its flags and what it measures: genkit/commands/bench_app_flags.py)."""

from __future__ import annotations

import os
import resource
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from .. import __version__
from ..loading import load_mm_pipeline, load_pipeline, pick_device
from .common import atomic_write_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median_pair(repeats: int, arms: dict) -> dict:
    """Run each arm `repeats` times, interleaved, after one warm-up each -> {arm: median seconds}."""
    for fn in arms.values():
        fn()
    times = {k: [] for k in arms}
    for _ in range(repeats):
        for k, fn in arms.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def ratios(med: dict) -> dict:
    """{arm: median s} -> {"ratio_ARM_over_script": ...} for every arm but the script (1.0 = no overhead)."""
    return {f"ratio_{k}_over_script": round(v / med["script"], 3) for k, v in med.items() if k != "script"}


def report(med: dict) -> str:
    return ", ".join(f"{k} {v:.2f} s ({v / med['script']:.3f}x)" for k, v in med.items())


def run_app(args) -> dict:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="genkit-bench-app-"))
    from gradio_client import Client

    from genkit.ui import build_demo
    from genkit.ui.diffusion import Sampler, validate
    from genkit.ui.text_image import defaults

    device = pick_device(args.device)
    pipe = load_pipeline(args.model, device)
    mm = load_mm_pipeline(args.mm, device) if args.mm and Path(args.mm, "model_index.json").is_file() else None
    demo = build_demo(pipe, max_batch_size=max(16, args.batch_size), mm=mm, model_name=Path(args.model).name,
                      queue_size=max(64, 2 * args.clients))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    client = Client(url, verbose=False)
    # gradio_client downloads every file of every streamed update unless told not to: previews on with and without
    # that download tell the server's cost of streaming previews from the client's cost of fetching them
    no_fetch = Client(url, verbose=False, download_files=False)
    result = {"bench": "app", "model": args.model, "mm": args.mm if mm else None, "steps": args.steps,
              "batch_size": args.batch_size, "clients": args.clients, "repeats": args.repeats}
    try:
        # 1. Diffusion tab: /generate (previews off) vs the same pipeline call in a script
        form = ("face-smiling" if "face-smiling" in (pipe.config.class_names or []) else "(unconditional)",
                0, args.steps, "dpmpp_2m", "polynomial", 2.0, args.batch_size, 1, 0, 0.0, False, 1.0)
        s = validate(pipe, *form, max_batch_size=max(16, args.batch_size))  # (size 0 = the trained size)
        sampler = Sampler(pipe)
        med = _median_pair(args.repeats, {
            "script": lambda: sampler(s, s.seeds(0)),
            "app": lambda: client.predict(*form, 0, api_name="/generate"),              # 0: no previews
            "app_previews": lambda: client.predict(*form, 1, api_name="/generate"),     # x0 shown every step
            "app_previews_no_download": lambda: no_fetch.predict(*form, 1, api_name="/generate")})
        result["diffusion"] = {"median_s": {k: round(v, 3) for k, v in med.items()}, **ratios(med)}
        print("diffusion: " + report(med))
        # 2. Text and image tab: /text_to_image vs one pipeline call, and vs one call per image (the old app)
        if mm is not None:
            n, prompt = args.batch_size, "red apple"

            def per_image():
                for k in range(n):
                    mm(prompt=prompt, guidance_scale=g, temperature=temp, generator=torch.Generator().manual_seed(k))
            g, temp = defaults()   # the tab's defaults = the pipeline's
            med = _median_pair(args.repeats, {
                "script": lambda: mm(prompt=prompt, num_images_per_prompt=n, guidance_scale=g, temperature=temp,
                                     generator=torch.Generator().manual_seed(0)),
                "app": lambda: client.predict(prompt, 0, n, g, temp, "", 0, api_name="/text_to_image"),
                "app_previews": lambda: client.predict(prompt, 0, n, g, temp, "", 1, api_name="/text_to_image"),
                "app_previews_no_download": lambda: no_fetch.predict(prompt, 0, n, g, temp, "", 1,
                                                                     api_name="/text_to_image"),
                "script_one_call_per_image": per_image})
            result["draw"] = {"median_s": {k: round(v, 3) for k, v in med.items()}, **ratios(med)}
            print("draw: " + report(med))
        # 3. N concurrent calls
        rss_before = _peak_rss_mb()
        latencies, errors = [], []

        def call(k):
            t0 = time.perf_counter()
            try:
                Client(url, verbose=False).predict(*form[:1], k, *form[2:], 0, api_name="/generate")
                latencies.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001  (counted, reported)
                errors.append(f"{type(e).__name__}: {e}")
        t0 = time.perf_counter()
        threads = [threading.Thread(target=call, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        result["concurrent"] = {
            "served": len(latencies), "errors": errors[:5], "wall_s": round(wall, 2),
            "latency_median_s": round(statistics.median(latencies), 2) if latencies else None,
            "latency_max_s": round(max(latencies), 2) if latencies else None,
            "one_call_s": result["diffusion"]["median_s"]["app"],
            "peak_rss_mb_before": round(rss_before, 1), "peak_rss_mb_after": round(_peak_rss_mb(), 1)}
        print(f"{len(latencies)}/{args.clients} concurrent calls served in {wall:.1f} s; peak RSS "
              f"{rss_before:.0f} -> {_peak_rss_mb():.0f} MB")
    finally:
        client.close()
        no_fetch.close()
        demo.close()
    result.update({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "command": f"genkit bench app --model {args.model} --mm {args.mm} --clients {args.clients} --steps "
                   f"{args.steps} --batch-size {args.batch_size} --repeats {args.repeats}",
        "genkit": __version__, "torch": torch.__version__})
    if args.out:
        atomic_write_json(Path(args.out), result)
    return result
