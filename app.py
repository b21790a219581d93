"""genkit's Gradio app: the shipped models behind one UI (genkit/ui/, one module per tab).

    python app.py                                   # every model under weights/ on http://127.0.0.1:7860
    python app.py --model DIR --host 0.0.0.0 --port 7861 --device cuda
    python app.py --model weights/openmoji-32 --model weights/openmoji-32-sid   # the Diffusion tab's Model menu
    python app.py --tokenizer DIR                   # the Tokenizer tab's model (default weights/openmoji-vq)
    python app.py --mm DIR                          # the Text and image tab's model (default weights/openmoji-mm)

Tabs: Diffusion (live previews, Stop, seeds, PNG parameters, zip, history), Text and image, Tokenizer, PNG info.
Each event is also an API endpoint (gradio_client):

    from gradio_client import Client
    gallery, info = Client("http://127.0.0.1:7860/").predict(
        "face-smiling", 0, 20, "dpmpp_2m", "polynomial", 2.0, 4, 1, 32, 0.0, False, 1.0, 0,
        api_name="/generate")
    gallery, info = Client(url).predict("red apple", 0, 4, 5.0, 0.7, "", api_name="/text_to_image")
    caption = Client(url).predict(handle_file("emoji.png"), api_name="/caption")
    original, reconstruction, codes, info = Client(url).predict(handle_file("emoji.png"), api_name="/tokenize")

/generate's values: class, seed (-1 = random), steps, sampler, sigma grid, guidance, batch size, batch count,
size (the model's own, or 2x with upsample guidance: 32 or 64 for openmoji-32; openmoji-64 draws 64
natively), upsample guidance, batch-invariant, skip-tuning rho (1 = off), preview
every k steps (0 = none; previews only matter in a browser), model (a folder name of the Model menu, e.g.
"openmoji-32-sid"; default the first; a one-step model ignores steps, sampler, grid, guidance, size, upsample
guidance and skip-tuning). Image k of a run uses seed + k, the image
`genkit sample --seed SEED` gives for that seed. Every image is a PNG with a `parameters` chunk. /generate
returns the gallery and the info line; the browser's "Download all" zip is made by a follow-up after the run.
Bad input is answered with an error naming the parameter, the value and what is allowed; the app keeps serving.
Environment: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT set the defaults of --host / --port. The app never
opens a share link and runs offline (GRADIO_ANALYTICS_ENABLED=False and HF_HUB_OFFLINE=1 unless set).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Before gradio / diffusers are imported: no analytics, no hub access.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genkit.checks import LIMITS, OneLineParser, int_arg  # noqa: E402  (light: no torch)

# gradio and torch are imported inside main() so that `python app.py --help` and a bad --model fail fast, before
# the slow imports.


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="app.py", description="Serve a genkit pipeline as a Gradio app (local only, "
                                "no share link).", formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--model", action="append", default=None, metavar="DIR",
                   help="diffusion pipeline folder for the Diffusion tab's Model menu; repeat for several, the "
                        "first is the default (default: every diffusion or one-step folder under weights/, "
                        "weights/openmoji-32 first)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1", metavar="H",
                   help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 in Docker)")
    p.add_argument("--port", type=int_arg("--port", 1, 65535), default=os.environ.get("GRADIO_SERVER_PORT") or "7860",
                   metavar="P",
                   help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--device", default=None, metavar="D", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--max-batch-size", type=int_arg("--max-batch-size", 1, LIMITS["batch_size"]), default=16,
                   metavar="N",
                   help="largest batch the UI allows (default 16)")
    p.add_argument("--queue-size", type=int_arg("--queue-size", 1, 10_000), default=64, metavar="N",
                   help="calls that may wait in the queue; the next is told the queue is full (default 64)")
    p.add_argument("--tokenizer", default="weights/openmoji-vq", metavar="DIR",
                   help="VQ tokenizer folder for the Tokenizer tab (default: weights/openmoji-vq; "
                        "the tab is left out if the folder is missing)")
    p.add_argument("--mm", default="weights/openmoji-mm", metavar="DIR",
                   help="multimodal model folder for the Text and image tab (default: weights/openmoji-mm; "
                        "the tab is left out if the folder is missing)")
    return p


def _fail(message: str, code: int = 2):
    print(f"app.py: error: {' '.join(str(message).split())}", file=sys.stderr)  # one line
    sys.exit(code)


def _load_optional(folder: str, flag: str, tab: str, load):
    """A model for an optional tab: None (with a note) if the folder is missing; a one-line exit if damaged."""
    if not os.path.isdir(folder):
        print(f"app.py: note: nothing at --{flag}={folder!r}; the {tab} tab is left out", file=sys.stderr)
        return None
    try:
        return load(folder)
    except Exception as e:  # noqa: BLE001  (any load failure: a damaged folder)
        _fail(f"--{flag}={folder!r} could not be loaded ({type(e).__name__}: {e})")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    for folder in args.model or []:  # answered before the slow imports (torch, diffusers, gradio)
        if not os.path.isdir(folder):
            _fail(f"--model={folder!r} is not a folder: give a pipeline folder such as weights/openmoji-32")
    from genkit.loading import diffusion_folders

    folders = args.model or diffusion_folders() or ["weights/openmoji-32"]
    names = [Path(f).resolve().name for f in folders]
    if len(set(names)) < len(names):
        _fail(f"--model={folders!r} is not allowed: two folders with one name ({', '.join(names)}); the Model "
              "menu and PNG parameters tell models by folder name")
    from genkit.loading import load_mm_pipeline, load_pipeline, load_tokenizer, pick_device
    from genkit.ui import CSS, build_demo

    try:
        device = pick_device(args.device)
        models = {name: load_pipeline(folder, device) for name, folder in zip(names, folders)}
    except ValueError as e:
        _fail(e)
    pipe = next(iter(models.values()))
    tokenizer = _load_optional(args.tokenizer, "tokenizer", "Tokenizer", load_tokenizer)
    examples = sorted(str(p) for p in Path(args.tokenizer, "examples").glob("*.png")) or None
    mm = _load_optional(args.mm, "mm", "Text and image", lambda d: load_mm_pipeline(d, pipe.device))
    demo = build_demo(models, args.max_batch_size, tokenizer, examples, mm, queue_size=args.queue_size)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=False, css=CSS)
    except OSError as e:  # port in use, address not available
        _fail(f"cannot serve on {args.host}:{args.port} ({e})", 1)

if __name__ == "__main__":
    main()
