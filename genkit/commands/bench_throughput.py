"""`genkit bench throughput` (its flags and what it measures: genkit/commands/bench_app_flags.py)."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..checks import bad
from ..loading import load_pipeline, pick_device
from .common import atomic_write_json


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NullClassUNet(torch.nn.Module):
    """The UNet as diffusers' DDIMPipeline calls it, unet(x, t).sample with t a DDPM step: the step goes to the
    model's own time input through the Denoiser (the one place that knows it), the class is the null class."""

    def __init__(self, pipe):
        super().__init__()
        self.den, self.unet, self.num_classes = pipe.denoiser(), pipe.unet, pipe.num_classes
        self.config = pipe.unet.config
        self.ac = pipe.scheduler.alphas_cumprod.double()

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def device(self):
        return self.unet.device

    def forward(self, x, t):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        ac = self.ac.to(x.device)[t]
        logsnr = (torch.log(ac) - torch.log1p(-ac)).float().expand(len(x))
        labels = torch.full((len(x),), self.num_classes, device=x.device) if self.num_classes else None
        return UNet2DOutput(sample=self.den.model_output(x, logsnr, labels).to(x.dtype))


def arms_for(device, no_compile: bool, only: list[str] | None = None) -> tuple[list[dict], dict]:
    """(arms this machine runs, {arm: why skipped}); `only`: keep just these (--arms)."""
    skipped = {}
    if device.type == "cuda":
        arms = [{"name": "fp16", "dtype": torch.float16}, {"name": "bf16", "dtype": torch.bfloat16}]
        try:
            import xformers  # noqa: F401
            arms.append({"name": "fp16+xformers", "dtype": torch.float16, "xformers": True})
        except ImportError:
            skipped["fp16+xformers"] = "xformers is not importable (pip install genkit[gpu])"
        if no_compile:
            skipped["fp16+compile"] = "--no-compile"
        else:
            arms.append({"name": "fp16+compile", "dtype": torch.float16, "compile": True})
        arms.append({"name": "fp16+batch-invariant", "dtype": torch.float16, "batch_invariant": True})
        arms.append({"name": "ddim-peer", "dtype": torch.float16, "peer": True})
    else:
        arms = [{"name": "fp32", "dtype": torch.float32}, {"name": "bf16", "dtype": torch.bfloat16},
                {"name": "fp32+batch-invariant", "dtype": torch.float32, "batch_invariant": True},
                {"name": "ddim-peer", "dtype": torch.float32, "peer": True}]
        for name in ("fp16", "fp16+xformers", "fp16+compile", "fp16+batch-invariant"):
            skipped[name] = "needs CUDA"
    if only is not None:
        if not any(a["name"] in only for a in arms):
            bad("--arms", ",".join(only), "at least one arm this machine runs: " + ", ".join(a["name"] for a in arms))
        for arm in arms:
            if arm["name"] not in only:
                skipped[arm["name"]] = "not in --arms"
        arms = [a for a in arms if a["name"] in only]
    return arms, skipped


def build_arm(base, arm: dict, device):
    """A callable (batch, nfe) -> images tensor for one arm, plus its setup time (compile)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    pipe = type(base)(copy.deepcopy(base.unet).to(device, arm["dtype"]), base.scheduler,
                      class_names=base.config.class_names)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    if arm.get("xformers"):
        pipe.unet.enable_xformers_memory_efficient_attention()
    if arm.get("compile"):
        pipe.unet = torch.compile(pipe.unet)
    if arm.get("peer"):
        peer = DDIMPipeline(NullClassUNet(pipe), DDIMScheduler.from_config(base.scheduler.config))
        peer.set_progress_bar_config(disable=True)

        def run(b, nfe):
            g = torch.Generator(device).manual_seed(0)
            return peer(batch_size=b, num_inference_steps=nfe, eta=0.0, generator=g, output_type="np").images
    else:
        def run(b, nfe):
            gens = [torch.Generator(device).manual_seed(k) for k in range(b)]
            return pipe(batch_size=b, num_inference_steps=nfe, solver="euler", generator=gens, output_type="latent",
                        batch_invariant=arm.get("batch_invariant", False)).images
    return run, time.perf_counter() - t0


def as_png_bytes(images) -> list[bytes] | None:
    """A pipeline arm's raw output (latent, [-1, 1]) -> each image's uint8 bytes, exactly as its PNG holds them."""
    from pipelines.pixel_diffusion import to_uint8

    if not torch.is_tensor(images):
        return None  # the peer's numpy output: not compared
    return [a.tobytes() for a in to_uint8(images.float()).cpu().numpy()]


def identity_check(row: dict, out: dict, first_seen: dict) -> None:
    """Add to `row` what a batch-invariant arm promises, checked on the images just drawn: how many of the
    batched arm's images differ from the same seed drawn alone (the last-bit rounding that --batch-invariant
    removes), and whether its images equal those it drew at the first batch size (seeds 0 .. min(B) - 1)."""
    for arm, images in out.items():
        if not arm.endswith("+batch-invariant") or images is None:
            continue
        batched = out.get(arm.removesuffix("+batch-invariant"))
        if batched is not None:
            row.setdefault("images_differing_from_drawn_alone", {})[arm.removesuffix("+batch-invariant")] = \
                sum(a != b for a, b in zip(batched, images))
        b0, earlier = first_seen.setdefault((arm, row["nfe"]), (row["batch_size"], images))
        if b0 != row["batch_size"]:
            n = min(len(earlier), len(images))
            row.setdefault("same_bytes_as_batch_size", {})[arm] = {b0: earlier[:n] == images[:n]}


def run_throughput(args) -> dict:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # from_config's "attributes ignored", the dtype cast note
    device = pick_device(args.device)
    arms, skipped = arms_for(device, args.no_compile, args.arms)  # before the model loads: a bad --arms is quick
    base = load_pipeline(args.model, device, attention="sdpa")  # each arm picks its own kernel
    runners, setup = {}, {}
    for arm in arms:
        runners[arm["name"]], setup[arm["name"]] = build_arm(base, arm, device)
    rows, first_seen = [], {}
    for b in args.batch_sizes:
        for nfe in args.nfe:
            times = {name: [] for name in runners}
            for name, run in runners.items():   # warm-up (and compilation for a new shape)
                t0 = time.perf_counter()
                run(b, nfe)
                _sync(device)
                setup[name + f"@b{b}n{nfe}"] = round(time.perf_counter() - t0, 3)
            out = {}
            for _ in tqdm(range(args.repeats), desc=f"batch {b} NFE {nfe}", leave=False):
                for name, run in runners.items():   # arms interleaved: a slow moment hits them all
                    _sync(device)
                    t0 = time.perf_counter()
                    images = run(b, nfe)
                    _sync(device)
                    times[name].append(time.perf_counter() - t0)
                    out[name] = images
            med = {k: statistics.median(v) for k, v in times.items()}
            first = next(iter(med))
            row = {"batch_size": b, "nfe": nfe,
                   "images_per_s": {k: round(b / v, 2) for k, v in med.items()},
                   "ratio_to_" + first: {k: round(med[first] / v, 3) for k, v in med.items()},
                   # the spread: images/s of the slowest and fastest repeat, and the ratio within each repeat
                   "images_per_s_range": {k: [round(b / max(v), 2), round(b / min(v), 2)] for k, v in times.items()},
                   "ratio_to_" + first + "_range": {
                       k: [round(min(f / t for f, t in zip(times[first], v)), 3),
                           round(max(f / t for f, t in zip(times[first], v)), 3)] for k, v in times.items()}}
            row["batch_invariant_slowdown"] = {  # time per image, batch-invariant over batched
                k: round(med[k] / med[k.removesuffix("+batch-invariant")], 3)
                for k in med if k.endswith("+batch-invariant") and k.removesuffix("+batch-invariant") in med}
            identity_check(row, {k: as_png_bytes(v) for k, v in out.items()}, first_seen)
            rows.append(row)
            print(f"batch {b:4d} NFE {nfe:3d}: " + "  ".join(f"{k} {b / v:8.1f} img/s" for k, v in med.items()))
    result = {
        "bench": "throughput", "model": args.model, "repeats": args.repeats, "rows": rows, "skipped": skipped,
        "arms": [{k: (str(v) if k == "dtype" else v) for k, v in a.items()} for a in arms],
        "warmup_s": setup,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "command": f"genkit bench throughput --model {args.model} --batch-sizes "
                   f"{','.join(map(str, args.batch_sizes))} --nfe {','.join(map(str, args.nfe))} "
                   f"--repeats {args.repeats}" + (" --no-compile" if args.no_compile else "")
                   + (f" --arms {','.join(args.arms)}" if args.arms else "")
                   + (f" --device {args.device}" if args.device else ""),
        "genkit": __version__, "torch": torch.__version__,
    }
    if args.out:
        atomic_write_json(Path(args.out), result)
    return result
