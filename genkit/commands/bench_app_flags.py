"""The flags of `genkit bench throughput` and `genkit bench app` (no torch import: `genkit --help` stays fast)."""

from __future__ import annotations

import argparse

THROUGHPUT_DOC = """`genkit bench throughput`: images per second of the pipeline by precision, attention kernel and
compilation, against diffusers' own DDIMPipeline on the same UNet, at several batch sizes and NFE.

    genkit bench throughput --model weights/openmoji-32 --batch-sizes 16,64 --nfe 1,5,20 --out tp.json   # CPU
    genkit bench throughput --model weights/openmoji-32 --batch-sizes 64,256,512 --out tp.json --device cuda

Arms (the ones this machine can run; the others are listed as skipped with the reason):
  fp32                genkit pipeline, Euler (NFE = steps), null class (no guidance: 1 evaluation per step)
  bf16                the same UNet in bfloat16 (CPU and CUDA)
  fp16                float16 (CUDA only)
  fp16+xformers       float16 with xformers' memory-efficient attention (CUDA, when xformers is importable)
  fp16+compile        float16, torch.compile(unet) (CUDA only; compile time reported apart, not in images/s)
  fp32+batch-invariant, fp16+batch-invariant (CUDA)
                      fp32 / fp16 with one network call per image (`genkit sample --batch-invariant`):
                      byte-identical PNGs whatever the batch size. The JSON adds its slowdown over the same
                      precision batched, how many batched images differ from the same seed drawn alone, and
                      (with several batch sizes) whether its images kept their bytes
  ddim-peer           diffusers' DDIMPipeline on the same UNet and precision as the first arm (eta 0 = Euler)
PyTorch SDPA is the attention of every arm but the xformers one (diffusers' default AttnProcessor2_0).
Each cell is the median of --repeats timed runs after one warm-up, arms interleaved; ratios are to the first arm;
the spread (slowest and fastest repeat, and the ratio within each repeat) is in the JSON.

The cost of `genkit sample --batch-invariant` (README quotes this run):

    genkit bench throughput --model weights/openmoji-32 --arms fp32,fp32+batch-invariant --batch-sizes 32,8
      --nfe 10 --repeats 5 --out weights/openmoji-32/bench_batch_invariant.json
"""

ARMS = ("fp32", "bf16", "fp16", "fp16+xformers", "fp16+compile", "fp32+batch-invariant", "fp16+batch-invariant",
        "ddim-peer")

APP_DOC = """`genkit bench app`: the app served for real (in this process, on a free port) and called with gradio_client.

    genkit bench app --model weights/openmoji-32 --mm weights/openmoji-mm --clients 20 --out app.json

Measures, side by side on the same model and seeds:
  diffusion  the Diffusion tab's /generate against the same pipeline call in a script, with live previews off
             and on (the denoised estimate streamed every step, the app's default)
  draw       the Text and image tab's /text_to_image against the same pipeline call in a script (previews off
             and on), and the old app's way (one pipeline call per image), the cause of its 2x
  concurrent N simultaneous /generate calls: how many were served, latency median / max, the process's peak
             resident memory before and after (the queue runs one model call at a time: memory stays bounded)
Ratios app / script: 1.0 = no overhead. Medians over --repeats, arms interleaved.
"""


def int_list(name: str):
    """argparse type: '1,5,20' -> [1, 5, 20], each >= 1, else the one-line error naming the flag."""
    def parse(text):
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            values = []
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"--{name}={text!r} is not allowed: ints >= 1, comma-separated")
        return values
    return parse


def arm_list(text: str) -> list[str]:
    """argparse type: 'fp32,bf16' -> ['fp32', 'bf16'], each a name in ARMS."""
    values = [v.strip() for v in text.split(",")]
    if not values or any(v not in ARMS for v in values):
        raise argparse.ArgumentTypeError(f"--arms={text!r} is not allowed: comma-separated names from "
                                         + ", ".join(ARMS))
    return values


def add_throughput_parser(bsub, positive_int):
    t = bsub.add_parser("throughput", help="images/s by precision, attention, torch.compile, vs diffusers' "
                                           "DDIMPipeline, at several batch sizes and NFE",
                        description=THROUGHPUT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", required=True, metavar="DIR")
    t.add_argument("--batch-sizes", type=int_list("batch-sizes"), default=[16, 64], metavar="B,B",
                   help="batch sizes (default 16,64; on a GPU try 64,256,512)")
    t.add_argument("--nfe", type=int_list("nfe"), default=[1, 5, 20], metavar="N,N",
                   help="network evaluations per image (default 1,5,20)")
    t.add_argument("--repeats", type=positive_int("repeats"), default=3)
    t.add_argument("--device", default=None)
    t.add_argument("--no-compile", action="store_true", help="leave out the torch.compile arm (CUDA)")
    t.add_argument("--arms", type=arm_list, default=None, metavar="A,A",
                   help="run only these arms (default: every arm this machine can run); the first is the "
                        "reference of the ratios")
    t.add_argument("--out", default=None, metavar="FILE.json")


def add_app_parser(bsub, positive_int):
    a = bsub.add_parser("app", help="the app served for real: latency against the same pipeline call in a script, "
                                    "and N concurrent gradio_client calls (all served? latency, memory)",
                        description=APP_DOC,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--model", default="weights/openmoji-32", metavar="DIR")
    a.add_argument("--mm", default="weights/openmoji-mm", metavar="DIR",
                   help="the Text and image tab's model (left out if the folder is missing)")
    a.add_argument("--clients", type=positive_int("clients"), default=20, help="concurrent calls (default 20)")
    a.add_argument("--steps", type=positive_int("steps"), default=20)
    a.add_argument("--batch-size", type=positive_int("batch-size"), default=4)
    a.add_argument("--repeats", type=positive_int("repeats"), default=3)
    a.add_argument("--device", default=None)
    a.add_argument("--out", default=None, metavar="FILE.json")
