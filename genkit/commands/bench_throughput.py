"""`genkit bench throughput` (its flags and what it measures: genkit/commands/bench_app_flags.py)."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch

from .. import __version__
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


def arms_for(device, no_compile: bool) -> tuple[list[dict], dict]:
    """(arms this machine runs, {arm: why skipped})."""
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
        arms.append({"name": "ddim-peer", "dtype": torch.float16, "peer": True})
    else:
        arms = [{"name": "fp32", "dtype": torch.float32}, {"name": "bf16", "dtype": torch.bfloat16},
                {"name": "ddim-peer", "dtype": torch.float32, "peer": True}]
        for name in ("fp16", "fp16+xformers", "fp16+compile"):
            skipped[name] = "needs CUDA"
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
            return pipe(batch_size=b, num_inference_steps=nfe, solver="euler", generator=gens, output_type="pt").images
    return run, time.perf_counter() - t0


def run_throughput(args) -> dict:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # from_config's "attributes ignored", the dtype cast note
    device = pick_device(args.device)
    base = load_pipeline(args.model, device, attention="sdpa")  # each arm picks its own kernel
    arms, skipped = arms_for(device, args.no_compile)
    runners, setup = {}, {}
    for arm in arms:
        runners[arm["name"]], setup[arm["name"]] = build_arm(base, arm, device)
    rows = []
    for b in args.batch_sizes:
        for nfe in args.nfe:
            times = {name: [] for name in runners}
            for name, run in runners.items():   # warm-up (and compilation for a new shape)
                t0 = time.perf_counter()
                run(b, nfe)
                _sync(device)
                setup[name + f"@b{b}n{nfe}"] = round(time.perf_counter() - t0, 3)
            for _ in range(args.repeats):
                for name, run in runners.items():
                    _sync(device)
                    t0 = time.perf_counter()
                    run(b, nfe)
                    _sync(device)
                    times[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            first = next(iter(med))
            row = {"batch_size": b, "nfe": nfe,
                   "images_per_s": {k: round(b / v, 2) for k, v in med.items()},
                   "ratio_to_" + first: {k: round(med[first] / v, 3) for k, v in med.items()}}
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
                   + (f" --device {args.device}" if args.device else ""),
        "genkit": __version__, "torch": torch.__version__,
    }
    if args.out:
        atomic_write_json(Path(args.out), result)
    return result
