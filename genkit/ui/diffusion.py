"""The Diffusion tab: class, seed (-1 = random), steps, sampler (genkit solvers and diffusers' schedulers), sigma
grid, guidance, batch size and count -> images that stream in as they form, with Stop, PNG parameters, a zip of
the batch and a history that restores its settings.

API endpoint /generate (gradio_client), the form's values in order (class, seed, steps, sampler, grid, guidance,
batch size, batch count, size, upsample guidance, batch-invariant, skip-tuning rho, preview every k steps, then
optionally the model's name and the guidance interval's top sigma, 0 = guided at every step); it returns the final
gallery and info (the browser's "Download all" zip is built after the run, not by /generate):

    gallery, info = Client(url).predict("face-smiling", 0, 20, "dpmpp_2m", "polynomial", 2.0, 4, 1,
                                        32, 0.0, False, 1.0, 0, api_name="/generate")

Image j of batch b has seed + b * batch_size + j, so it is the image `genkit sample --seed` gives for that seed.
"""

import io
import os
import secrets
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Handlers' gr.Request / gr.SelectData annotations must resolve at module level: Gradio reads them to
# pass the session and the selected item (so no `from __future__ import annotations` here).
import gradio as gr

from genkit.checks import bad, check_choice, check_float, check_int
from genkit.png_info import diffusion_settings, fingerprint, format_parameters, parse_parameters, png_bytes
from genkit.sampling import solver_entry, solver_names
from genkit.sampling.grids import LEARNED
from genkit.skip_tuning import RHO_RANGE

from . import options as opt
from .runner import Stops


def as_int(name: str, value, lo: int, hi: int) -> int:
    """check_int, but an integral float (3.0, as JSON numbers may arrive from a browser) is taken as its int."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check_int(name, value, lo, hi)


@dataclass(frozen=True)
class Settings:
    class_name: str
    seed: int            # the first image's seed (never -1: a random seed is drawn before this is made)
    steps: int
    sampler: str
    grid: str | None     # None for diffusers' schedulers (their own timestep spacing)
    guidance: float      # the scale used: 1 for unconditional samples (guidance there changes nothing)
    batch_size: int
    batch_count: int
    size: int = 0                # height = width; 0 = the UNet's own size
    upsample_guidance: float = 0.0   # upsample guidance scale at sizes above the trained one (0 = off)
    batch_invariant: bool = False    # each image alone through the net: the same bytes in any batch, ~2x slower
    skip_tuning: float = 1.0         # rho_bottom of skip-tuning (1 = off): UNet skips scaled, for few steps
    model: str = ""                  # the Model menu's name of the pipeline ("" = the only / first one)
    guidance_sigma_max: float = 0.0  # guidance interval: guided only at sigma <= this (0 = every step)

    @property
    def guidance_sigma_range(self) -> tuple[float, float] | None:
        return (0.0, self.guidance_sigma_max) if self.guidance_sigma_max and self.guidance != 1.0 else None

    def seeds(self, b: int) -> list[int]:
        return [self.seed + b * self.batch_size + j for j in range(self.batch_size)]


def as_models(pipe, model_name: str | None = None) -> dict:
    """{name: pipeline} (the Model menu, first = default) from a dict as given, or from one pipeline."""
    if isinstance(pipe, dict):
        if not pipe:
            raise ValueError("models={} is not allowed: at least one diffusion pipeline")
        return dict(pipe)
    return {model_name or Path(getattr(pipe, "name_or_path", "") or "model").name: pipe}


def pick_model(models: dict, model) -> tuple[str, object]:
    """The Model menu's value -> (name, pipeline); None or "" = the first."""
    name = next(iter(models)) if model in (None, "") else check_choice("model", model, list(models))
    return name, models[name]


def validate(pipe, class_name, seed, steps, sampler, grid, guidance, batch_size, batch_count, size=None,
             upsample_guidance=0.0, batch_invariant=False, skip_tuning=1.0, guidance_sigma_max=0.0,
             max_batch_size: int = 16, model: str | None = None) -> Settings:
    """The form's raw values -> Settings, or a ValueError naming the parameter, its value and what is allowed.
    `pipe` is one pipeline or the Model menu's {name: pipeline}; `model` picks one (default: the first). A one-step
    generator ignores steps, sampler, grid, guidance, size, upsample guidance, skip-tuning and the guidance interval
    (the form hides them): it has none of them."""
    model, pipe = pick_model(as_models(pipe), model)
    class_name = check_choice("class", class_name, opt.class_choices(pipe))
    batch_size = as_int("batch_size", batch_size, 1, max_batch_size)
    batch_count = as_int("batch_count", batch_count, 1, opt.MAX_BATCH_COUNT)
    seed = as_int("seed", seed, opt.RANDOM_SEED, opt.MAX_SEED - batch_size * batch_count + 1)
    if opt.is_one_step(pipe):
        batch_invariant = check_choice("batch_invariant", batch_invariant, (True, False))
        if seed == opt.RANDOM_SEED:
            seed = secrets.randbelow(2**32)
        return Settings(class_name, seed, 1, "one_step", None, 1.0, batch_size, batch_count,
                        pipe.unet.config.sample_size, 0.0, batch_invariant, 1.0, model)
    steps = as_int("steps", steps, 1, opt.MAX_STEPS)
    sampler = check_choice("sampler", sampler, opt.sampler_choices(opt.model_dir(pipe)))
    grid = check_choice("grid", grid, opt.grid_names(opt.model_dir(pipe)))
    if grid == LEARNED and not (sampler in solver_names() and solver_entry(sampler).needs_predictor):
        bad("grid", grid, f"a grid other than {LEARNED!r} for sampler {sampler!r}: a learned grid belongs to an "
            "AMED predictor or BNS weights (sampler amed-... or bns)")
    guidance = check_float("guidance", guidance, 0, opt.MAX_GUIDANCE)
    native = pipe.unet.config.sample_size
    size = native if size in (None, 0, "") else check_choice("size", as_int("size", size, 1, 4096), opt.sizes(pipe))
    upsample_guidance = check_float("upsample_guidance", upsample_guidance, 0, opt.MAX_UPSAMPLE_GUIDANCE)
    if upsample_guidance and size == native:
        bad("upsample_guidance", upsample_guidance, f"0 at the trained size {native}: it needs a larger size "
            f"({', '.join(map(str, opt.sizes(pipe)[1:]))})")
    batch_invariant = check_choice("batch_invariant", batch_invariant, (True, False))
    skip_tuning = check_float("skip_tuning", skip_tuning, *RHO_RANGE)
    if skip_tuning != 1.0 and sampler in opt.DIFFUSERS_SCHEDULERS:
        bad("skip_tuning", skip_tuning, "1 (off) with diffusers' schedulers (a genkit solver applies it)")
    guidance_sigma_max = check_float("guidance_sigma_max", guidance_sigma_max, 0, opt.MAX_SIGMA)
    if guidance_sigma_max and sampler in solver_names() and solver_entry(sampler).needs_predictor:
        bad("guidance_sigma_max", guidance_sigma_max, f"0 (every step) with sampler {sampler!r}: its predictor was "
            "trained for guidance at every step")
    if guidance_sigma_max and upsample_guidance:
        bad("guidance_sigma_max", guidance_sigma_max, "0 (every step) with upsample guidance")
    if seed == opt.RANDOM_SEED:
        seed = secrets.randbelow(2**32)
    conditional = class_name != opt.UNCONDITIONAL and pipe.num_classes > 0
    if upsample_guidance and sampler in opt.DIFFUSERS_SCHEDULERS:
        bad("upsample_guidance", upsample_guidance, "0 with diffusers' schedulers (a genkit solver applies it)")
    return Settings(class_name, seed, steps, sampler, None if sampler in opt.DIFFUSERS_SCHEDULERS else grid,
                    guidance if conditional else 1.0, batch_size, batch_count, size, upsample_guidance,
                    batch_invariant, skip_tuning, model, guidance_sigma_max)


class Sampler:
    """The pipeline call for a Settings: genkit solvers on `pipe`, diffusers' schedulers on a sibling pipeline
    that shares the UNet (built once per scheduler)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self._siblings = {}

    def pipeline(self, sampler: str):
        if sampler not in opt.DIFFUSERS_SCHEDULERS:
            return self.pipe
        if sampler not in self._siblings:
            import diffusers

            diffusers.utils.logging.set_verbosity_error()  # from_config's "attributes ignored" notes
            cls = getattr(diffusers, opt.DIFFUSERS_SCHEDULERS[sampler])
            sibling = type(self.pipe)(self.pipe.unet, cls.from_config(self.pipe.scheduler.config),
                                      class_names=self.pipe.config.class_names)
            sibling.set_progress_bar_config(disable=True)
            self._siblings[sampler] = sibling
        return self._siblings[sampler]

    def __call__(self, s: Settings, seeds: list[int], on_step=None):
        import torch

        if opt.is_one_step(self.pipe):
            return self.one_step(s, seeds, on_step)
        pipe = self.pipeline(s.sampler)
        diffusers_loop = s.sampler in opt.DIFFUSERS_SCHEDULERS
        gens = [torch.Generator(pipe.device).manual_seed(k) for k in seeds]
        return pipe(batch_size=len(seeds), num_inference_steps=s.steps,
                    solver=None if diffusers_loop else s.sampler, grid=s.grid, guidance_scale=s.guidance,
                    class_labels=None if s.class_name == opt.UNCONDITIONAL else s.class_name, generator=gens,
                    height=s.size, width=s.size, upsample_guidance_scale=s.upsample_guidance,
                    batch_invariant=s.batch_invariant, skip_tuning=None if s.skip_tuning == 1.0 else s.skip_tuning,
                    guidance_sigma_range=s.guidance_sigma_range, callback_on_step_end=on_step,
                    callback_on_step_end_tensor_inputs=["latents"] if diffusers_loop else ["denoised"])


    def one_step(self, s: Settings, seeds: list[int], on_step=None):
        """One network evaluation per image; batch-invariant = each image in its own call."""
        import torch

        labels = None if s.class_name == opt.UNCONDITIONAL else s.class_name
        groups = [[k] for k in seeds] if s.batch_invariant else [seeds]
        outs = [self.pipe(batch_size=len(g), class_labels=labels, callback_on_step_end=on_step,
                          generator=[torch.Generator(self.pipe.device).manual_seed(k) for k in g]) for g in groups]
        outs[0].images = [im for o in outs for im in o.images]
        return outs[0]


def parameters_text(s: Settings, seed: int, batch_pos: int, model_hash: str, model: str) -> str:
    """The image's PNG parameters. Batched network calls may round differently from one image alone, so unless
    the run was batch-invariant the batch (size, position) is recorded too: regenerating that batch gives the
    same bytes at that position. A one-step image: Steps 1, Sampler one_step, no grid, CFG scale 1."""
    batch = {"Batch invariant": True} if s.batch_invariant else {"Batch size": s.batch_size, "Batch pos": batch_pos}
    return format_parameters(s.class_name, diffusion_settings(
        steps=s.steps, solver=s.sampler, grid=s.grid, guidance=s.guidance, seed=seed, size=s.size,
        model_hash=model_hash, model=model, **({"Upsample guidance": s.upsample_guidance}
                                               if s.upsample_guidance else {}),
        **({"Skip tuning": s.skip_tuning} if s.skip_tuning != 1.0 else {}),
        **({"Guidance interval": f"0-{s.guidance_sigma_max:g}"} if s.guidance_sigma_range else {}), **batch))


def model_of(kv: dict, models: dict) -> str:
    """The loaded model a PNG's parameters name (by Model, else by Model hash); ValueError if none is loaded."""
    if kv.get("Model") in models:
        return kv["Model"]
    for name, pipe in models.items():
        if kv.get("Model hash") == fingerprint(pipe.unet):
            return name
    raise ValueError(f"model={kv.get('Model')!r} is not allowed: this app serves {', '.join(models)}")


def form_values(text: str, pipe) -> list:
    """A PNG's `parameters` text -> the form's values (FORM order, the model last) that regenerate exactly that
    image: its own seed alone when it was drawn batch-invariant, else its whole batch; ValueError if it is not a
    diffusion image a loaded model can make. `pipe`: one pipeline or {name: pipeline}. Fields a one-step model
    has not (steps, sampler, grid, guidance, size, upsample guidance, skip-tuning, guidance interval) come back
    as None."""
    prompt, _, kv = parse_parameters(text)
    if "Sampler" not in kv or "Seed" not in kv or "Temperature" in kv:
        raise ValueError(f"parameters={text[:60]!r} is not allowed: a Diffusion tab or `genkit sample` image")
    models = as_models(pipe)
    name = model_of(kv, models) if len(models) > 1 else next(iter(models))
    pipe = models[name]
    grid = kv.get("Schedule type")
    invariant = kv.get("Batch invariant") == "True"
    pos, size = (0, 1) if invariant else (int(kv.get("Batch pos", 0)), int(kv.get("Batch size", 1)))
    if opt.is_one_step(pipe):
        values = [prompt, int(kv["Seed"]) - pos, None, None, None, None, size, 1, None, None, invariant, None, None,
                  name]
    else:
        values = [prompt, int(kv["Seed"]) - pos, int(kv["Steps"]), kv["Sampler"],
                  grid if grid in opt.grid_names(opt.model_dir(pipe)) else pipe.scheduler.config.get("grid", "polynomial"),
                  float(kv["CFG scale"]), size, 1, int(kv.get("Size", "0x0").split("x")[0]),
                  float(kv.get("Upsample guidance", 0.0)), invariant, float(kv.get("Skip tuning", 1.0)),
                  float(kv.get("Guidance interval", "0-0").split("-")[1]), name]
    validate(models, *values[:-1], max_batch_size=max(size, 1), model=name)
    return values


def to_pil(x):
    """(B, C, H, W) in [-1, 1] -> PIL images (the pipeline's own rounding)."""
    from PIL import Image

    from pipelines.pixel_diffusion import to_uint8

    return [Image.fromarray(a) for a in to_uint8(x.float()).permute(0, 2, 3, 1).cpu().numpy()]


def make_generate(pipe, stops: Stops | None = None, max_batch_size: int = 16, model_name: str | None = None,
                  out_dir: str | None = None):
    """The event handler: a generator yielding (gallery, info, finished PNG paths, history) as the images form
    (zip_run makes the "Download all" zip of the paths). `pipe`: one pipeline (named model_name) or the Model
    menu's {name: pipeline}."""
    stops = stops or Stops()
    models = as_models(pipe, model_name)
    samplers = {name: Sampler(p) for name, p in models.items()}
    hashes = {name: fingerprint(p.unet) for name, p in models.items()}
    root = Path(out_dir or os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "genkit-images"

    def generate(class_name, seed, steps, sampler_name, grid, guidance, batch_size, batch_count, size=None,
                 upsample_guidance=0.0, batch_invariant=False, skip_tuning=1.0, preview_every=1, model=None,
                 guidance_sigma_max=0.0, history=None, request: gr.Request = None, progress=gr.Progress()):
        try:
            s = validate(models, class_name, seed, steps, sampler_name, grid, guidance, batch_size, batch_count,
                         size, upsample_guidance, batch_invariant, skip_tuning, guidance_sigma_max, max_batch_size,
                         model)
            preview_every = as_int("preview_every", preview_every, 0, opt.MAX_STEPS)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        pipe, sampler, model_hash, model_name = models[s.model], samplers[s.model], hashes[s.model], s.model
        history = list(history or [])
        session = getattr(request, "session_hash", None) or "local"
        run_dir = Path(tempfile.mkdtemp(prefix=f"{s.seed}-", dir=_mkdir(root)))
        finished: list[tuple[str, str]] = []   # (png path, caption)
        texts: list[str] = []
        total = s.steps * s.batch_count
        t0 = time.perf_counter()

        def work(report):
            for b in range(s.batch_count):
                def on_step(_pipe, i, _t, tensors):
                    stops.check(session)
                    if preview_every and ((i + 1) % preview_every == 0 or i + 1 == s.steps):
                        report("step", b, i, next(iter(tensors.values())).detach().cpu())
                    else:
                        report("step", b, i, None)
                    return {}
                seeds = s.seeds(b)
                out = sampler(s, seeds, on_step)
                report("batch", b, seeds, out.images, out.nfe, getattr(out, "nfe_low_res", 0))

        def info(done_steps: int, note: str = "", nfe: int | None = None) -> str:
            wall = time.perf_counter() - t0
            left = wall / done_steps * (total - done_steps) if done_steps else float("nan")
            head = f"**step {done_steps}/{total}** · {wall:.1f} s" + (f" · ~{left:.1f} s left" if done_steps < total
                                                                       and done_steps else "")
            extra = f" · **NFE per image:** {nfe}" if nfe is not None else ""
            if low_res[0]:
                extra += f" + {low_res[0]} at low resolution (upsample guidance)"
            unused = " · guidance not used for unconditional samples" if s.guidance != guidance and \
                s.class_name == opt.UNCONDITIONAL else ""
            return f"{head}{extra} · **seed** {s.seed} · **device:** {pipe.device}{unused}{note}"

        def paths() -> list[str]:
            return [p for p, _ in finished]

        previews, nfe, done, low_res = [], None, 0, [0]
        for kind, *payload in stops.run(session, work):
            if kind == "step":
                b, i, x = payload
                done = b * s.steps + i + 1
                progress((done, total), desc="sampling", unit="steps")
                if x is not None:
                    previews = [(im, f"seed {k} · step {i + 1}/{s.steps}") for im, k in zip(to_pil(x), s.seeds(b))]
                    yield finished + previews, info(done), paths(), history
            elif kind == "batch":
                b, seeds, images, nfe, low_res[0] = payload
                for j, (k, im) in enumerate(zip(seeds, images)):
                    text = parameters_text(s, k, j, model_hash, model_name)
                    path = run_dir / f"{k}.png"
                    path.write_bytes(png_bytes(im, text))
                    finished.append((str(path), f"seed {k}"))
                    texts.append(text)
                previews = []
                if b + 1 < s.batch_count:   # the last batch is shown by the final update, which follows at once
                    yield finished, info(done, nfe=nfe), paths(), history
            else:  # "done" or "stopped"
                note = "" if kind == "done" else f" · **stopped**: kept {len(finished)} finished image" \
                    f"{'s' if len(finished) != 1 else ''}"
                history = ([{"path": p, "caption": c, "parameters": t, "run_seed": s.seed}
                            for (p, c), t in zip(finished, texts)][::-1]
                           + history)[:opt.HISTORY_SIZE]
                yield finished, info(done, note, nfe), paths(), history

    return generate


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def zip_run(paths: list[str]) -> str | None:
    """A run's PNGs, stored byte for byte (their parameters chunks kept), in images.zip beside them; None if the
    run kept no image."""
    if not paths:
        return None
    path = Path(paths[0]).parent / "images.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in paths:
            z.write(p, Path(p).name)
    path.write_bytes(buf.getvalue())
    return str(path)


def build(pipe, stops: Stops, max_batch_size: int = 16, model_name: str | None = None):
    """Lay out the tab inside the current gr.Blocks; return its form (for PNG info; the model last). `pipe`: one
    pipeline or the Model menu's {name: pipeline} (first = default)."""
    models = as_models(pipe, model_name)
    generate = make_generate(models, stops, max_batch_size)
    pipe = next(iter(models.values()))
    history = gr.State([])
    run_files = gr.State([])   # the last run's PNG paths, for the zip
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model = gr.Dropdown(opt.model_choices(models), value=next(iter(models)), elem_id="model",
                                label="Model (a one-step generator has no steps, sampler, grid or guidance)",
                                visible=len(models) > 1)
            cls = gr.Dropdown(opt.class_choices(pipe), value=opt.default_class(pipe), label="Class", elem_id="class")
            with gr.Row():
                seed = gr.Number(value=opt.RANDOM_SEED, precision=0, minimum=opt.RANDOM_SEED, scale=3,
                                 label="Seed (-1 = random; image k uses seed + k)", elem_id="seed")
                reuse = gr.Button("♻ Reuse", scale=1, min_width=60, elem_id="reuse_seed")
            steps = gr.Slider(1, opt.MAX_STEPS, value=20, step=1, label="Steps", elem_id="steps")
            sampler = gr.Dropdown(opt.sampler_choices(opt.model_dir(pipe)),
                                  value=pipe.scheduler.config.get("solver", "dpmpp_2m"), elem_id="sampler",
                                  label="Sampler (genkit solvers, learned AMED / BNS arms where trained; diffusers' schedulers)")
            grid = gr.Dropdown(opt.grid_names(opt.model_dir(pipe)), value=pipe.scheduler.config.get("grid", "polynomial"),
                               label="Sigma grid (genkit solvers)", elem_id="grid")
            guidance = gr.Slider(0, opt.MAX_GUIDANCE, value=2.0, step=0.1, label="Guidance (1 = off)",
                                 elem_id="guidance")
            with gr.Row():
                batch_size = gr.Slider(1, max_batch_size, value=min(4, max_batch_size), step=1, label="Batch size",
                                       elem_id="batch_size")
                batch_count = gr.Slider(1, opt.MAX_BATCH_COUNT, value=1, step=1, label="Batch count",
                                        elem_id="batch_count")
            skip = gr.Slider(RHO_RANGE[0], RHO_RANGE[1], value=1.0, step=0.01, elem_id="skip_tuning",
                             label="Skip-tuning rho (1 = off; below 1 scales the UNet's skips: for few steps)")
            interval = gr.Number(value=0.0, minimum=0, maximum=opt.MAX_SIGMA, elem_id="guidance_sigma_max",
                                 label="Guidance interval: guide only at noise sigma <= this (0 = every step; e.g. 1: "
                                       "more variety within a class, fewer NFE)")
            with gr.Accordion("Size and batch invariance", open=False) as size_box:
                size = gr.Dropdown(opt.sizes(pipe), value=pipe.unet.config.sample_size, elem_id="size",
                                   label="Size (2x the trained size: use upsample guidance)")
                upsample = gr.Slider(0, opt.MAX_UPSAMPLE_GUIDANCE, value=0.0, step=0.05, elem_id="upsample_guidance",
                                     label="Upsample guidance (0 = off; at 2x size, a low-res pass per step; "
                                           "1 recommended)")
                invariant = gr.Checkbox(False, elem_id="batch_invariant",
                                        label="Batch-invariant: each image alone through the network, the same "
                                              "bytes in any batch (~2x slower on a CPU)")
            preview_every = gr.Slider(0, 20, value=1, step=1, label="Preview every k steps (0 = off)",
                                      elem_id="preview_every")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Samples", columns=4, object_fit="contain", height="auto",
                                 elem_id="gallery", elem_classes="pixelated")
            info = gr.Markdown(elem_id="info")
            download = gr.File(label="Download all (zip, PNGs with their parameters)", elem_id="zip")
    with gr.Accordion("History (this session; click an image to restore its settings)", open=False):
        history_gallery = gr.Gallery(columns=8, height="auto", elem_id="history", elem_classes="pixelated")
    form = [cls, seed, steps, sampler, grid, guidance, batch_size, batch_count, size, upsample, invariant, skip,
            interval]

    # preprocess=False: the handler gets the raw values and checks them itself, so a bad value sent through the
    # API is answered with the parameter's name rather than the components' anonymous range errors. The model comes
    # after preview_every, and the guidance interval after the model: API calls written before either existed keep
    # their meaning.
    # The zip is built by a browser-only follow-up, not by /generate: gradio_client fetches every file of every
    # update, each with a new HTTP client (~35-60 ms here), and the final update arrives twice (last yield, then
    # completion), so a zip in /generate's outputs cost an API caller two fetches per call. One chain: clear the
    # old zip, generate, zip. Two handlers on the click raced: on a busy machine the clear could land after the
    # new zip and leave "Download all" empty.
    cleared = go.click(lambda: None, None, download, api_visibility="private", queue=False)  # no stale zip
    event = cleared.then(generate, inputs=[*form[:-1], preview_every, model, interval, history],
                         outputs=[gallery, info, run_files, history], api_name="generate", concurrency_id="model",
                         concurrency_limit=1, preprocess=False)
    event.success(zip_run, inputs=[run_files], outputs=[download], api_visibility="private", queue=False)

    def show_model(name, class_name, size_value):
        """The form for the chosen model: its classes, samplers and sizes; a one-step model hides what it lacks."""
        p = models.get(name, pipe)
        multi = not opt.is_one_step(p)
        choices = opt.class_choices(p)
        hide = gr.update(visible=multi)
        return [gr.update(choices=choices, value=class_name if class_name in choices else opt.default_class(p)),
                hide, hide, hide, hide, hide, hide,
                gr.update(visible=multi, **({"choices": opt.sampler_choices(opt.model_dir(p))} if multi else {})),
                gr.update(choices=opt.sizes(p), value=size_value if size_value in opt.sizes(p) else
                          p.unet.config.sample_size) if multi else gr.update()]
    model.change(show_model, [model, cls, size], [cls, steps, grid, guidance, skip, interval, size_box, sampler, size],
                 api_visibility="private", queue=False)
    event.then(lambda h: [(x["path"], x["caption"]) for x in h], inputs=[history], outputs=[history_gallery],
               api_visibility="private", queue=False)

    def on_stop(request: gr.Request):
        stops.stop(request.session_hash)
    stop.click(on_stop, None, None, queue=False, api_visibility="private")

    selected_seed = gr.State(None)

    def remember(evt: gr.SelectData):  # captions read "seed N" (finished) or "seed N · step i/n" (preview)
        caption = (evt.value or {}).get("caption") or ""
        return int(caption.split()[1]) if caption.startswith("seed ") else None
    gallery.select(remember, None, selected_seed, api_visibility="private", queue=False)
    def reuse_seed(selected, h):  # the selected image's seed, else the first image of the last run
        if selected is None and h:
            selected = h[0]["run_seed"]
        return selected if selected is not None else gr.update()
    reuse.click(reuse_seed, [selected_seed, history], seed, api_visibility="private", queue=False)

    def restore(h, evt: gr.SelectData):
        try:
            return fill(form_values(h[evt.index]["parameters"], models))
        except (ValueError, IndexError, KeyError) as e:
            raise gr.Error(str(e), print_exception=False) from None
    history_gallery.select(restore, [history], [*form, model], api_visibility="private", queue=False)
    return [*form, model]


def fill(values: list) -> list:
    """form_values' list -> component updates: None (a field the model has not) leaves the field as it is."""
    return [gr.update() if v is None else v for v in values]
