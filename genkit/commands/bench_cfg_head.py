"""`genkit bench cfg-head`: the multimodal diffusion head's classifier-free guidance, before and after issue 16.

    genkit bench cfg-head --model weights/openmoji-mm --prompts 4 --repeats 3 --out docs/bench_cfg_head.json

Before issue 16 a guided head step called the head three times: conditional, unconditional, and the
unconditional again for the mix. Now [cond; uncond] go as one batch (genkit.mm.diffusion_head.
guided_head_denoiser: 2 evaluations in 1 call). Two arms, interleaved, on the same prompts and seeds:
  fused   the library as it is;
  before  the old evaluation order, rebuilt here from head_denoiser and swapped in for this arm only.
Reports head evaluations per patch and step (counted by a forward pre-hook), the median seconds per full
text -> image draw and the ratio before / fused, and the largest pixel difference between the two arms' images
(the same formula: it should be at float rounding).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from .. import __version__
from .common import atomic_write_json, pick_device

PROMPTS = ("grinning face", "red apple", "dog face", "rocket", "sun", "green heart", "snowman", "pizza")


def guided_before(head, z, guidance_scale=1.0, z_uncond=None):
    """The pre-issue-16 guided head: D_u + w (D_c - D_u) with D_u evaluated twice, each in its own call."""
    from genkit.mm.diffusion_head import head_denoiser

    if z_uncond is None or guidance_scale == 1.0:
        return head_denoiser(head, z)
    cond, uncond = head_denoiser(head, z), head_denoiser(head, z_uncond)
    return lambda x, s: uncond(x, s) + guidance_scale * (cond(x, s) - uncond(x, s))


@contextlib.contextmanager
def before_issue_16():
    import genkit.mm.diffusion_head as dh

    fused = dh.guided_head_denoiser
    dh.guided_head_denoiser = guided_before
    try:
        yield
    finally:
        dh.guided_head_denoiser = fused


def run_cfg_head(args) -> dict:
    from genkit.checks import LIMITS, check_float, check_int

    from genkit.loading import load_mm_pipeline
    from pipelines.multimodal import DEFAULT_GUIDANCE

    check_int("--prompts", args.prompts, 1, len(PROMPTS))
    check_int("--repeats", args.repeats, 1, 100)
    check_int("--head-steps", args.head_steps, 1, LIMITS["steps"])    # the CLI's names, not the pipeline's
    if args.guidance is not None:
        check_float("--guidance", args.guidance, 0, LIMITS["guidance"])
    device = pick_device(args.device)
    pipe = load_mm_pipeline(args.model, device)
    pipe.set_progress_bar_config(disable=True)
    head = pipe.model.patch_head
    rows = {"n": 0, "calls": 0}

    def count(module, inputs):
        rows["calls"] += 1
        rows["n"] += len(inputs[0])

    args.guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    prompts = list(PROMPTS[:args.prompts])
    call = dict(guidance_scale=args.guidance, head_steps=args.head_steps, output_type="pt")

    def draw():
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        return pipe(prompts, generator=gens, **call).images

    arms = {"fused": contextlib.nullcontext, "before": before_issue_16}
    times, images, evals = {k: [] for k in arms}, {}, {}
    handle = head.register_forward_pre_hook(count)
    try:
        for rep in range(args.repeats + 1):  # the first round warms up and counts
            for name, ctx in arms.items():
                rows.update(n=0, calls=0)
                with ctx():
                    t0 = time.perf_counter()
                    images[name] = draw()
                    if rep:
                        times[name].append(time.perf_counter() - t0)
                if not rep:
                    evals[name] = dict(rows)
    finally:
        handle.remove()
    patches = len(prompts) * pipe.model.num_patches * args.head_steps
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "bench": "cfg-head", "model": args.model, "prompts": prompts, "guidance": args.guidance,
        "head_steps": args.head_steps, "repeats": args.repeats,
        "head_evals_per_patch_step": {k: round(v["n"] / patches, 3) for k, v in evals.items()},
        "head_calls": {k: v["calls"] for k, v in evals.items()},
        "median_s_per_draw": {k: round(v, 3) for k, v in med.items()},
        "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio_before_over_fused": round(med["before"] / med["fused"], 3),
        "max_abs_pixel_diff": float((images["before"] - images["fused"]).abs().max()),
        "command": f"genkit bench cfg-head --model {args.model} --prompts {args.prompts} --repeats {args.repeats} "
                   f"--guidance {args.guidance:g} --head-steps {args.head_steps} --out {args.out}",
        "device": f"cpu ({torch.get_num_threads()} threads)" if device.type == "cpu"
        else torch.cuda.get_device_name(device), "genkit": __version__, "torch": torch.__version__,
    }
    atomic_write_json(args.out, result)
    print(f"head evaluations per patch and step: {result['head_evals_per_patch_step']}; median s per draw of "
          f"{len(prompts)} images: {result['median_s_per_draw']}; before / fused = "
          f"{result['ratio_before_over_fused']}; max pixel difference {result['max_abs_pixel_diff']:.2g}")
    return result


def add_parser(bsub):
    p = bsub.add_parser("cfg-head", help="the multimodal head's guidance: 2 evaluations per step now vs 3 before "
                                         "issue 16, draw time side by side", description=__doc__,
                        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--model", default="weights/openmoji-mm")
    p.add_argument("--prompts", type=int, default=4, help=f"draw the first K of {len(PROMPTS)} fixed prompts")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per arm (after one warm-up round)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the pipeline's, 5)")
    p.add_argument("--head-steps", type=int, default=20)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, metavar="FILE.json")
