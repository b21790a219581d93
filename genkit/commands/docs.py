"""`genkit docs tables`: the measurement tables of README.md and the model cards, made from the committed JSON.

A generated table sits between two markers in a markdown file (the DOCS globs below):

    <!-- table:NAME -->
    ...whatever TABLES[NAME](root) returns...
    <!-- /table:NAME -->

To add one: write a renderer `def NAME(root: Path) -> str` that reads only committed files (JSON next to the
model it measures), register it in TABLES, put the two markers where it goes, run `genkit docs tables`.
`genkit docs tables --check` writes nothing and exits 1 naming every stale table; tests/test_docs_tables.py runs
it, so a hand-edited figure (or a JSON rerun without regenerating) fails the suite.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

from genkit.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[2]
# the files scanned for markers (globs, from the repo root)
DOCS = ("README.md", "weights/*/README.md", "weights/*/HISTORY.md", "docs/*.md")
MARKER = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)


def _json(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_text())


def _pct(v, p=1):
    return "-" if v is None else f"{100 * v:.{p}f}%"


def _f(v, p=3):
    return "-" if v is None else f"{v:.{p}f}"


# -- renderers: root -> markdown (no trailing newline needed; one is added) ---------------------------------

def samplers(root: Path) -> str:
    from genkit.commands.bench_samplers import markdown_table

    return markdown_table(_json(root, "weights/openmoji-32/eval.json"))


def vq(root: Path) -> str:
    from genkit.commands.bench_vq import markdown_table

    return markdown_table(_json(root, "weights/openmoji-vq/bench_vq.json"))


ABLATION_LABELS = {  # arm -> the one flag it changes (README wording)
    "base": "base (RoPE-Tie-v2, diffusion head, random order, MAR masking, pixels)",
    "rope1d": "`--positions rope1d`", "tie_v1": "`--positions tie_v1`", "mse": "`--image_head mse`",
    "raster": "`--order raster`", "cosine": "`--mask_schedule cosine`",
    "discrete": "`--vq_tokenizer weights/openmoji-vq` (discrete)",
}


def mm_ablations(root: Path) -> str:
    res = _json(root, "weights/openmoji-mm/ablations/bench_mm.json")
    lines = ["| arm (one flag vs base) | val text NLL | val image loss | FD | class acc. | group acc. | diversity | "
             "top-1 | top-5 | s / image | FD ratio | diversity ratio | text NLL ratio |", "|---" * 13 + "|"]
    order = [a for a in ABLATION_LABELS if a in res["rows"]] + [a for a in res["rows"] if a not in ABLATION_LABELS]
    for arm in order:
        r, q = res["rows"][arm], res["rows"][arm]["ratio_to_first"]
        codes = r.get("config", {}).get("image_tokens") == "codes"
        lines.append(f"| {ABLATION_LABELS.get(arm, arm)} | {_f(r['val_text_loss'])} | "
                     f"{_f(r['val_image_loss'])}{' (CE)' if codes else ''} | {_f(r['fd'], 1)} | "
                     f"{_f(r['class_accuracy'])} | {_f(r['group_accuracy'])} | {_f(r['diversity'])} | "
                     f"{_f(r['retrieval_top1'])} | {_f(r['retrieval_top5'])} | {_f(r['generate_cached_s'], 2)} | "
                     f"{_f(q['fd'], 2)} | {_f(q['diversity'], 2)} | {_f(q['val_text_loss'])} |")
    cap = [r["caption_speedup"] for r in res["rows"].values()]
    gen = [r["generate_speedup"] for r in res["rows"].values()]
    cs = [r["caption_cached_s"] for r in res["rows"].values()]
    cu = [r["caption_uncached_s"] for r in res["rows"].values()]
    lines += ["", f"KV cache, across the arms: captioning {min(cs):.3f}-{max(cs):.3f} s vs {min(cu):.2f}-{max(cu):.2f} s "
                  f"without it ({min(cap):.2f}-{max(cap):.2f}x); text -> image {min(gen):.3f}-{max(gen):.3f}x.",
              "", f"Command: `{res['command']}`"]
    return "\n".join(lines)


MM_STEPS = (("shipped (step 24,800)", "bench_mm.json"), ("step 22,000", "bench_mm_step22000.json"),
            ("step 16,000", "bench_mm_step16000.json"), ("step 11,000", "bench_mm_step11000.json"),
            ("step 8,000", "bench_mm_step8000.json"))


def mm_history(root: Path) -> str:
    """The shipped multimodal model and the checkpoints before each fine-tune, one column each."""
    rows = [next(iter(_json(root, f"weights/openmoji-mm/{f}")["rows"].values())) for _, f in MM_STEPS]
    real = _json(root, "weights/openmoji-mm/bench_mm.json")["real_val_images"]
    floor = _json(root, "weights/openmoji-features/sanity.json")

    def known(r):
        k = r.get("image_loss_by_known")
        return "-" if not k else f"{k['0']:.3f} / {k['0.9']:.3f}"

    def names(r):
        c = r.get("image_loss_by_caption")
        return "-" if not c else f"{c['own']:.3f} / {c['sibling']:.3f} / {c['empty']:.3f}"

    head = " | ".join(label for label, _ in MM_STEPS)
    cells = lambda fn: " | ".join(fn(r) for r in rows)  # noqa: E731
    fd_floor = _fd_floor(floor, 32)
    return "\n".join([
        f"| text -> image (one image per val name) | {head} | the classifier on the 400 real val images |",
        "|---" * 7 + "|",
        f"| FD-OpenMoji vs the val reference | {cells(lambda r: _f(r['fd'], 1))} | floor: FD(val vs train) "
        f"{fd_floor:.1f} |",
        f"| class accuracy (98 subgroups) | {cells(lambda r: _pct(r['class_accuracy']))} | "
        f"{_pct(real['class_accuracy'])} (chance ~1%) |",
        f"| group accuracy (9 groups) | {cells(lambda r: _pct(r['group_accuracy']))} | {_pct(real['group_accuracy'])} |",
        f"| diversity (RMS distance among 4 images of a name, 50 names) | {cells(lambda r: _f(r['diversity']))} | |",
        f"| image loss with 0% / 90% of the patches known | {cells(known)} | |",
        f"| image loss with the own / a sibling's / no name (\"What it reads\") | {cells(names)} | |",
        "",
        f"| image -> text (val images) | {head.replace('shipped (step 24,800)', 'shipped')} | chance |",
        "|---" * 7 + "|",
        f"| greedy caption = the exact name | {cells(lambda r: _pct(r['caption_exact_match'], 2))} | |",
        f"| retrieval top-1 among the 400 val names (log p(name \\| image)) | "
        f"{cells(lambda r: _pct(r['retrieval_top1']))} | 0.25% |",
        f"| retrieval top-5 | {cells(lambda r: _pct(r['retrieval_top5']))} | 1.25% |",
        f"| val text NLL (nats per byte) | {cells(lambda r: _f(r['val_text_loss']))} | |",
        "",
        "| KV cache (2 threads) | " + head + " |",
        "|---" * 6 + "|",
        "| caption 16 images (32 new bytes): with / without cache | "
        + cells(lambda r: f"{r['caption_cached_s']:.3f} / {r['caption_uncached_s']:.3f} s = {r['caption_speedup']:.2f}x")
        + " |",
        "| one text -> image call (16 AR steps, CFG): with / without | "
        + cells(lambda r: f"{r['generate_cached_s']:.3f} / {r['generate_uncached_s']:.3f} s = "
                          f"{r['generate_speedup']:.3f}x") + " |",
        "",
        "Commands (as recorded in each JSON): "
        + "; ".join(f"{label}: `{_json(root, f'weights/openmoji-mm/{f}')['command']}`" for label, f in MM_STEPS[:2])
        + "; the older ones the same as step 22,000's.",
    ])


def _fd_floor(sanity: dict, res: int) -> float:
    s = sanity[str(res)] if str(res) in sanity else sanity
    return s["fd_val_vs_train"]


def _span(curve: dict) -> str:
    """{strength: FD} -> 'first -> last strength: first -> last FD'."""
    (k0, v0), (k1, v1) = list(curve.items())[0], list(curve.items())[-1]
    return f"{float(k0):g} -> {float(k1):g}: {v0:.2f} -> {v1:.0f}"


def _cap(rows, model, split, subgroup_of) -> str:
    (r,) = [r for r in rows if r["model"] == model and r["split"] == split and r["subgroup_of"] == subgroup_of]
    return f"{r['own']:.3f} / {r['sibling']:.3f} / {r['empty']:.3f} (n = {r['n']})"


def _phase_minutes(rows) -> float:
    """Training minutes of a phase whose time-boxed runs each restart their clock: sum of each run's last value."""
    total, last = 0.0, 0.0
    for r in rows:
        if r["minutes"] < last:
            total += last
        last = r["minutes"]
    return total + last


def batch_invariant(root: Path) -> str:
    """The cost of --batch-invariant (`genkit bench throughput --arms fp32,fp32+batch-invariant`), one sentence."""
    res = _json(root, "weights/openmoji-32/bench_batch_invariant.json")
    arm = "fp32+batch-invariant"
    parts = []
    for row in res["rows"]:
        ips, lo, hi = row["images_per_s"], *row["ratio_to_fp32_range"][arm]
        parts.append(f"{row['batch_invariant_slowdown'][arm]:.2f}x at batch {row['batch_size']} "
                     f"({ips['fp32']:.2f} vs {ips[arm]:.2f} images/s; {1 / hi:.2f}-{1 / lo:.2f}x within each of "
                     f"the {res['repeats']} repeats)")
    first = res["rows"][0]
    same = [f"{'the same bytes' if ok else 'DIFFERENT bytes'} at batch {row['batch_size']} as at batch {b}"
            for row in res["rows"] for b, ok in row.get("same_bytes_as_batch_size", {}).get(arm, {}).items()]
    return (f"one network call per image costs {'; '.join(parts)}, NFE {first['nfe']}, Euler, no guidance; "
            f"batched, {first['images_differing_from_drawn_alone']['fp32']} of {first['batch_size']} images "
            f"differed from the same seed drawn alone; the batch-invariant images had {'; '.join(same) or '-'}")


def app_bench(root: Path, rel: str = "docs/bench_app.json") -> str:
    """docs/app.md: `genkit bench app` (the app served for real vs the same pipeline call in a script)."""
    res = _json(root, rel)
    d, m, c = res["diffusion"], res.get("draw"), res["concurrent"]
    arms = ("app", "app_previews", "app_previews_no_download")

    def row(label, part):
        t = part["median_s"]
        return (f"| {label} | {t['script']:.2f} s | "
                + " | ".join(f"{t[a]:.2f} s ({part[f'ratio_{a}_over_script']:.2f}x)" for a in arms) + " |")
    b = res["batch_size"]
    name = Path(rel).name
    lines = [f"`{res['command']}` ([{name}]({name})), {res['device']}, medians of {res['repeats']} "
             "(x: app / script, 1.00 = no overhead; the app columns are gradio_client calls, which download every "
             "file of every update unless told not to):", "",
             "| | script | app, previews off | previews every step | previews every step, client fetches no file |", "|---|---|---|---|---|",
             row(f"Diffusion tab, {b} images, {res['steps']} steps, CFG", d)]
    if m:
        one = m["median_s"]["script_one_call_per_image"]
        lines += [row(f"Text and image tab, {b} images", m),
                  f"| the old Text and image tab: one pipeline call per image | {one:.2f} s "
                  f"({m['ratio_script_one_call_per_image_over_script']:.2f}x) | | | |"]
    lines += ["", f"{c['served']} of {res['clients']} concurrent `/generate` calls served ({len(c['errors'])} errors), "
                  f"one at a time from the queue in {c['wall_s']:.0f} s: latency median {c['latency_median_s']:.0f} s, "
                  f"max {c['latency_max_s']:.0f} s; the process's peak resident memory "
                  f"{c['peak_rss_mb_before']:.0f} -> {c['peak_rss_mb_after']:.0f} MB over the {res['clients']} calls."]
    return "\n".join(lines)


def app_bench_defaults(root: Path) -> str:
    """The same at the Diffusion tab's defaults (20 steps, 4 images)."""
    return app_bench(root, "docs/bench_app_defaults.json")


def measured(root: Path) -> str:
    """README "Measured": one row per figure, each from the JSON its row links."""
    oh = _json(root, "weights/openmoji-32/bench_overhead.json")
    loss = [json.loads(x) for x in (root / "weights/openmoji-32/loss.jsonl").read_text().splitlines() if x]
    p1 = [r for r in loss if r["phase"] == 1]
    p1_min = _phase_minutes(p1)
    p1_steps = p1[-1]["step"]
    orders = _json(root, "docs/solver_orders.json")
    san = _json(root, "weights/openmoji-features/sanity.json")
    feat = _json(root, "weights/openmoji-features/metrics.json")
    mm = _json(root, "weights/openmoji-mm/bench_mm.json")
    r = mm["rows"]["openmoji-mm"]
    hist = {f: next(iter(_json(root, f"weights/openmoji-mm/{f}")["rows"].values()))["fd"] for _, f in MM_STEPS}
    caps = _json(root, "weights/openmoji-mm/train_captions.json")
    disc = _json(root, "weights/openmoji-mm/japan_disc.json")
    ship = next(a for a in disc["arms"].values() if a["model"] == "weights/openmoji-mm")
    old = [a["disc_loss"]["own"] for a in disc["arms"].values() if a is not ship]
    k22 = next(k for k in disc["arms"] if k.startswith("step22000"))
    ctl = _json(root, "weights/openmoji-mm/bench_mm_control.json")["rows"]
    vqm = _json(root, "weights/openmoji-vq/metrics.json")
    a = oh["all_s"]
    fl = _json(root, "weights/openmoji-32/eval.json")["floor"]
    byc = _json(root, "weights/openmoji-mm/by_caption.json")["rows"]
    bi = _json(root, "weights/openmoji-32/bench_batch_invariant.json")
    s32 = san["32"] if "32" in san else san
    ch = _json(root, "docs/bench_cfg_head.json")
    glob = ", ".join(f"{k} {v['global']:.2f}" for k, v in orders["solvers"].items())
    loc = ", ".join(f"{k} {v['local']:.2f}" for k, v in orders["solvers"].items())
    rows = [
        ("pipeline overhead at 20 NFE, batch 16",
         f"{oh['ratio_pipeline_over_bare']:.3f}x of 20 bare UNet forwards (medians of {oh['repeats']}; pipeline "
         f"{min(a['pipeline']):.2f}-{max(a['pipeline']):.2f} s, bare {min(a['bare']):.2f}-{max(a['bare']):.2f} s: "
         f"the ratio is inside the run-to-run spread, i.e. no measurable overhead)",
         f"`{oh['command']}` ([json](weights/openmoji-32/bench_overhead.json))",
         f"{oh['device']}, a training job beside it"),
        ("teacher training throughput (phase 1)",
         f"{p1_steps / (60 * p1_min):.1f} steps/s at batch 256, bf16 ({p1_steps:,} steps in {p1_min:.1f} min of "
         f"time-boxed runs)", "[loss.jsonl](weights/openmoji-32/loss.jsonl) `minutes`; recipe in "
         "[the model card](weights/openmoji-32/README.md)", "1x H100 80GB (as the card records; loss.jsonl has no "
         "device field)"),
        ("solver convergence orders on a closed-form toy (Gaussian mixture)",
         f"global ({orders['global_grid_note']}): {glob}; local (one step, order + 1 expected): {loc}",
         f"`{orders['command']}` ([json](docs/solver_orders.json))", orders["device"]),
        ("FD-OpenMoji sanity (32 px)",
         f"FD(train vs train) = {s32['fd_train_vs_train']:.2g}; floor FD(val vs train) = {s32['fd_val_vs_train']:.2f} "
         f"(n = {s32['n_val']}; {fl['fd_val_subsets_at_n']:.1f} on average at n = {fl['n']}, range "
         f"{fl['subsets_min']:.1f}-{fl['subsets_max']:.1f} over 5 subsets); "
         f"{'the same number twice' if s32['fd_val_vs_train_again'] == s32['fd_val_vs_train'] else 'NOT REPEATABLE'}; "
         f"FD of blurred / noised train images rises with strength (Gaussian blur std {_span(s32['fd_blurred_train'])}"
         f"; noise std {_span(s32['fd_noisy_train'])} in 0..255 units)",
         "`genkit eval sanity --resolutions 32,64` ([json](weights/openmoji-features/sanity.json))", "CPU"),
        ("FD-OpenMoji classifier",
         f"{_pct(feat['val_acc_32'])} / {_pct(feat['val_acc_64'])} val accuracy (98 subgroups) at 32 / 64 px",
         "[model card](weights/openmoji-features/README.md) ([json](weights/openmoji-features/metrics.json))", "CPU"),
        ("shipped multimodal model, text -> image on the 400 val names",
         f"FD-OpenMoji {r['fd']:.1f} (step 8,000: {hist['bench_mm_step8000.json']:.1f}; 11,000: "
         f"{hist['bench_mm_step11000.json']:.1f}; 16,000: {hist['bench_mm_step16000.json']:.1f}; 22,000: "
         f"{hist['bench_mm_step22000.json']:.1f}); class accuracy {_pct(r['class_accuracy'])} (classifier on real "
         f"val: {_pct(mm['real_val_images']['class_accuracy'])}), group accuracy {_pct(r['group_accuracy'])} "
         f"({_pct(mm['real_val_images']['group_accuracy'])}); diversity {r['diversity']:.2f}",
         f"`{mm['command']}` ([json](weights/openmoji-mm/bench_mm.json))", f"{mm['device']} (2-core box)"),
        ("shipped multimodal model, image -> text",
         f"val: exact name {_pct(r['caption_exact_match'], 2)}; retrieval top-1 {_pct(r['retrieval_top1'])}, "
         f"top-5 {_pct(r['retrieval_top5'])} among 400 names (chance 0.25% / 1.25%); train images: "
         f"{_pct(caps['exact'] / caps['n'], 0)} exact ({caps['exact']} of {caps['n']})",
         f"same command; the train figure: `{caps['command']}` ([json](weights/openmoji-mm/train_captions.json))",
         caps["device"]),
        ("cosine-masking fine-tune vs its equal-budget control (3,000 more MAR-masked steps from step 8,000)",
         f"FD-OpenMoji {ctl['openmoji-mm']['fd']:.1f} vs {ctl['mar-control']['fd']:.1f}; class accuracy "
         f"{_pct(ctl['openmoji-mm']['class_accuracy'])} vs {_pct(ctl['mar-control']['class_accuracy'])}; image loss "
         f"with 90% known {ctl['openmoji-mm']['image_loss_by_known']['0.9']:.3f} vs "
         f"{ctl['mar-control']['image_loss_by_known']['0.9']:.3f}",
         "`genkit bench mm --arm openmoji-mm=weights/openmoji-mm --arm mar-control=runs/openmoji-mm-mar-control` "
         "([json](weights/openmoji-mm/bench_mm_control.json))", "2-core CPU"),
        ("does the multimodal model read the name or only its kind?",
         f"image loss with the own name / a sibling's / none: {_cap(byc, 'shipped (step 24,800)', 'train', 'flag: Japan')} "
         f"on the train flags (step 11,000: {_cap(byc, 'step 11,000', 'train', 'flag: Japan')}, it read \"flag\", "
         f"not which country); {_cap(byc, 'shipped (step 24,800)', 'train', None)} on all train images; on val names "
         f"it never saw the own name is worse than none ({_cap(byc, 'shipped (step 24,800)', 'val', None)})",
         "`genkit.mm.evaluate.image_loss_by_caption` ([model card](weights/openmoji-mm/README.md), \"What it reads\"; "
         "[json](weights/openmoji-mm/by_caption.json))", "2-core CPU"),
        ("does the multimodal model draw Japan's red disc?",
         f"loss on the disc's 4 patches with its own name {min(old):.3f}-{max(old):.3f} from step 8,000 to 22,000, "
         f"{ship['disc_loss']['own']:.3f} shipped; drawings with a red centre: {disc['arms'][k22]['red_centre']} of "
         f"{disc['num']} at step 22,000, {ship['red_centre']} of {ship['n']} shipped ({_pct(ship['centre_red_mean'], 0)} "
         f"of the centre red; the real image {_pct(disc['real_centre_red'], 0)})",
         "`genkit bench japan-disc` ([json](weights/openmoji-mm/japan_disc.json), its full command; the model card's "
         "\"Japan's red disc\")", disc["device"]),
        ("KV cache (shipped multimodal model)",
         f"captioning {r['caption_speedup']:.2f}x faster ({r['caption_cached_s']:.3f} vs {r['caption_uncached_s']:.3f} s "
         f"for 16 images), text -> image {r['generate_speedup']:.3f}x ({r['generate_cached_s']:.3f} vs "
         f"{r['generate_uncached_s']:.3f} s)", "same command as text -> image", f"{mm['device']} (2-core box)"),
        ("multimodal head's classifier-free guidance, one [cond; uncond] batch (issue 16) vs before",
         f"{ch['head_evals_per_patch_step']['fused']:g} vs {ch['head_evals_per_patch_step']['before']:g} head "
         f"evaluations per patch and step; a draw of {len(ch['prompts'])} images at guidance {ch['guidance']:g}: "
         f"{ch['median_s_per_draw']['fused']:.2f} vs {ch['median_s_per_draw']['before']:.2f} s (before / now = "
         f"{ch['ratio_before_over_fused']:.2f}x, medians of {ch['repeats']} interleaved rounds); the same images "
         f"(largest pixel difference {ch['max_abs_pixel_diff']:.1g})",
         f"`{ch['command']}` ([json](docs/bench_cfg_head.json))", f"{ch['device']}, 2-core box, other jobs beside it"),
        ("cost of `genkit sample --batch-invariant` (byte-identical images whatever the batch size)",
         batch_invariant(root), f"`{bi['command']} --out weights/openmoji-32/bench_batch_invariant.json` "
         "([json](weights/openmoji-32/bench_batch_invariant.json))", f"{bi['device']}, 2-core box, other jobs beside it"),
        ("shipped VQ tokenizer (FSQ 8,5,5,5, K = 1000)",
         f"val MSE {vqm['val_mse']:.4f}, usage {_pct(vqm['val_usage'])}, perplexity/K {_pct(vqm['val_perplexity_ratio'])}",
         "[model card](weights/openmoji-vq/README.md) ([json](weights/openmoji-vq/metrics.json))", "2-core CPU"),
    ]
    out = ["| what | result | command | hardware |", "|---|---|---|---|"]
    out += [f"| {w} | {res} | {cmd} | {hw} |" for w, res, cmd, hw in rows]
    return "\n".join(out)


def _disc_arm_label(key: str, arm: dict) -> str:
    """A japan_disc.json arm -> its column/row name: "step22000@99994bb" -> "step 22,000 (99994bb)"; the shipped
    model -> "shipped, step 24,800"."""
    step, _, commit = key.partition("@")
    step = f"step {int(step.removeprefix('step')):,}" if step.startswith("step") else step
    if arm["model"] == "weights/openmoji-mm":
        return f"shipped, {step}"
    return f"{step} ({commit})" if commit else step


def mm_disc(root: Path) -> str:
    """weights/openmoji-mm's "Japan's red disc": patch losses and drawings per model (`genkit bench japan-disc`)."""
    res = _json(root, "weights/openmoji-mm/japan_disc.json")
    sib = res["sibling"]
    rows = [f'| model | disc: own name / "{sib}" / no name | whole image, own name | drawn with a red centre '
            f'| centre red, mean |', "|---|---|---|---|---|"]
    for arm, a in res["arms"].items():
        own = _f(a["disc_loss"]["own"])
        shipped = a["model"] == "weights/openmoji-mm"
        rows.append(f"| {_disc_arm_label(arm, a)} | {f'**{own}**' if shipped else own} / {_f(a['disc_loss']['sibling'])} / "
                    f"{_f(a['disc_loss']['none'])} | {_f(a['whole_loss_own'])} | {a['red_centre']} of {a['n']} "
                    f"| {_pct(a['centre_red_mean'], 0)} |")
    rows.append(f"| the real image | - | - | - | {_pct(res['real_centre_red'], 0)} |")
    return "\n".join(rows)


def _span_pct(shares: list) -> str:
    """[0.085, 0.17] -> '8.5-17.0%' (one value: '8.5%')."""
    lo, hi = min(shares), max(shares)
    return _pct(lo) if lo == hi else f"{100 * lo:.1f}-{_pct(hi)}"


def mm_disc_why(root: Path) -> str:
    """weights/openmoji-mm's "Japan's red disc", why: the --detail arms of japan_disc.json side by side."""
    res = _json(root, "weights/openmoji-mm/japan_disc.json")
    arms = {k: a["detail"] for k, a in res["arms"].items() if "detail" in a}
    names = [_disc_arm_label(k, res["arms"][k]) for k in arms]
    d0 = next(iter(arms.values()))
    name = res["name"]
    heads = [h for h in d0["head_red_share"] if h != "draws"]
    gs = list(d0["temperature_1"])
    lp = d0["logprob_name"]
    rows = [
        ("the disc's loss with the other patches shown: own name / no name",
         lambda d: f"{_f(d['disc_loss_others_known']['own'])} / {_f(d['disc_loss_others_known']['none'])}"),
        *[(f"the head alone draws a red disc patch ({d0['head_red_share']['draws']} draws per patch, no patch "
           f"known), {h}", lambda d, h=h: _span_pct(d["head_red_share"][h])) for h in heads],
        (f"drawings at temperature 1 with a red centre, guidance {' / '.join(gs)}",
         lambda d: " / ".join(f"{d['temperature_1'][g]['red_centre']} of {d['temperature_1'][g]['n']}" for g in gs)),
        (f'log p("{name}" \\| drawing), the guidance-{lp["guidance"]} drawings above: with a red centre / without '
         "(how many)", lambda d: f"{_f(d['logprob_name']['drawn_red_centre'], 2)} ({d['logprob_name']['n_red']}) / "
                                 f"{_f(d['logprob_name']['drawn_other'], 2)} ({d['logprob_name']['n_other']})"),
        (f'log p("{name}" \\| the real image): as it is / its red pixels painted white',
         lambda d: f"{_f(d['logprob_name']['real'], 2)} / {_f(d['logprob_name']['real_disc_painted_white'], 2)}"),
        ("greedy caption of the real image", lambda d: f'"{d["real_caption"]}"'),
    ]
    out = ["| measurement | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    out += [f"| {label} | " + " | ".join(fn(d) for d in arms.values()) + " |" for label, fn in rows]
    return "\n".join(out)


def sid_curve(root: Path, rel: str = "weights/openmoji-32-sid/fd_curve.json") -> str:
    """weights/openmoji-32-sid: FD of the EMA generator against generator images seen (fd_curve.json of
    training/sid_curve.py; session26/fd_curve.json: the generator shipped before)."""
    curve = _json(root, rel)
    rows = [r for r in curve["rows"] if r.get("fd") is not None]
    extra = [(k, head) for k, head in (("fd_teacher", "FD to teacher samples"), ("spread", "within-class spread"),
                                      ("class_accuracy", "class accuracy")) if any(k in r for r in rows)]
    cell = lambda r, k: _pct(r[k], 1) if k == "class_accuracy" else _f(r.get(k), 1)  # noqa: E731
    out = ["| run: step | generator images | minutes | FD-OpenMoji (n = 1,000) |"
           + "".join(f" {h} |" for _, h in extra), "|---" * (4 + len(extra)) + "|"]
    out += [f"| {r.get('run', 0) + 1}: {r['step']} | {r['images']:,} | {r['minutes']:.1f} | {r['fd']:.1f} |"
            + "".join(f" {cell(r, k) if k in r else '-'} |" for k, _ in extra)
            for r in rows]  # run: sid_curve.chain's index of a continued run
    slope, n = curve["slope_log_fd_per_log_images"], sum(1 for r in rows if r["images"] > 0)  # as sid_curve.curve
    if slope is not None:
        out += ["", f"Least-squares slope of log FD on log images over the {n} rows with images > 0: {slope:.3f}."]
    st = curve.get("slope_log_fd_teacher_per_log_images")
    reach = curve.get("images_to_fd_teacher_of_the_teacher_itself")
    if st is not None:
        out.append(f"Of log FD to the teacher's samples: {st:.3f}" + (
            f"; the line reaches the teacher's FD to itself ({curve['teacher_self_fd']}) at {reach:.1e} generator "
            "images." if reach else "."))
    return "\n".join(out)


def _sid_runs(folder: Path) -> dict:
    """{ARM: (flags, metrics rows)} from folder/ARM.metrics.jsonl and folder/ARM.training_state.json."""
    runs = {}
    for path in sorted(folder.glob("*.metrics.jsonl")):
        arm = path.name.split(".")[0]
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        runs[arm] = (json.loads((folder / f"{arm}.training_state.json").read_text())["args"], rows)
    return runs


def sid_collapse(root: Path) -> str:
    """weights/openmoji-32-sid, session 32: short runs from the teacher, identical but for the flags their
    training_state.json records (session32/ARM.training_state.json): FD and within-class spread of the EMA
    generator on seeds 0..391 at each row of ARM.metrics.jsonl, beside the teacher's samples on the same seeds
    (session32/teacher_n392_gW.json, `genkit bench samplers --guidance W`)."""
    folder = root / "weights/openmoji-32-sid/session32"
    runs = _sid_runs(folder)
    images = sorted({r["images"] for _, rows in runs.values() for r in rows})
    out = ["| run | teacher guidance in the generator loss | lr generator / fake score | "
           + " | ".join(f"{n:,} images: FD / spread" for n in images) + " |", "|---" * (len(images) + 3) + "|"]
    for arm, (a, rows) in runs.items():
        at = {r["images"]: r for r in rows}
        w = "2 (default)" if a["teacher_guidance"] == "None" else a["teacher_guidance"]
        if a.get("teacher_guidance_sigma_max", "None") != "None":
            w += f" at sigma <= {a['teacher_guidance_sigma_max']}, 1 above"
        lr_f = a.get("fake_score_learning_rate", "None")
        cells = [f"{at[n]['fd']:.1f} / {at[n]['spread']:.1f}" if n in at else "-" for n in images]
        out.append(f"| {arm} | {w} | {a['learning_rate']} / {a['learning_rate'] if lr_f == 'None' else lr_f} | "
                   + " | ".join(cells) + " |")
    teacher = []
    for path in sorted(folder.glob("teacher_n392_g*.json")):
        d = _json(root, str(path.relative_to(root)))
        (v,) = d["rows"].values()
        teacher.append(f"guidance {d['config']['guidance']:g} ({v['arm']}, {v['nfe_budget']} NFE): FD {v['fd']:.1f}, "
                       f"spread {v['spread']:.1f}, class accuracy {_pct(v['class_accuracy'])}")
    fd_n = next(iter(runs.values()))[1][0]["fd_n"]
    return "\n".join(out + ["", f"n = {fd_n} seeds (0..{fd_n - 1}, class = seed mod 98) per cell; FD at this n is "
                            "biased upwards against the n = 1,000 tables; spread: genkit.metrics.within_class_spread "
                            "of the FD features (0: one image per class)."]
                     + ([f"The teacher's samples on the same seeds: {'; '.join(teacher)}."] if teacher else []))


def sid_interval_runs(root: Path, session: str = "session33") -> str:
    """weights/openmoji-32-sid, sessions 33-37: runs with the guidance interval, identical but for the flags their
    training_state.json records (SESSION/ARM.training_state.json): FD to data, FD to the teacher's
    samples, within-class spread and class accuracy of the EMA generator on the fixed seeds at each row of
    SESSION/ARM.metrics.jsonl (rows before class accuracy was logged show FD and spread only)."""
    folder = root / "weights/openmoji-32-sid" / session
    runs = _sid_runs(folder)
    images = sorted({r["images"] for _, rows in runs.values() for r in rows if r["images"]})
    start = lambda a: "" if a.get("init_generator", "None") == "None" else f", from {a['init_generator']}"  # noqa: E731
    ema = lambda a: ", EMA without ramp-up" if a.get("ema_rampup") == "False" else ""  # noqa: E731
    head = [f"{arm}: alpha {a['alpha']}, {a.get('fake_score_steps', '1')} fake-score step(s), guided at sigma <= "
            f"{a.get('teacher_guidance_sigma_max', 'None')}{start(a)}{ema(a)}" for arm, (a, _) in runs.items()]
    out = ["| generator images | " + " | ".join(head) + " |", "|---" * (len(runs) + 1) + "|"]
    at = [{r["images"]: r for r in rows} for _, rows in runs.values()]              # per arm: images -> row
    cell = lambda r: " / ".join([f"{r['fd']:.1f}", _f(r.get("fd_teacher"), 1), f"{r['spread']:.1f}",  # noqa: E731
                                 _pct(r.get("class_accuracy"), 0)])
    for n in images:
        out.append(f"| {n:,} | " + " | ".join(cell(a[n]) if n in a else "-" for a in at) + " |")
    fd_n = next(iter(runs.values()))[1][-1]["fd_n"]
    return "\n".join(out + ["", "Each cell: FD to data / FD to the teacher's samples (guidance 2, same seeds) / "
                            f"within-class spread / class accuracy of the EMA generator, n = {fd_n} seeds "
                            f"(0..{fd_n - 1}, class = seed mod 98)."])


def amed_ode(root: Path) -> str:
    """weights/openmoji-32: ODE error at each NFE budget of bench_amed.json, each arm's ratio to Euler's."""
    from .bench_samplers import arm_name, row_key

    d = _json(root, "weights/openmoji-32/bench_amed.json")
    rows, budgets = d["rows"], sorted({v["nfe_budget"] for v in d["rows"].values()})
    arms = list(dict.fromkeys(v["arm"] for v in rows.values()))
    head = " | ".join(f"NFE {n}: ODE error (x Euler), wall s" for n in budgets)
    out = [f"| arm | {head} |", "|---" * (len(budgets) + 1) + "|"]
    for arm in arms:
        cells = []
        for n in budgets:
            v, euler = rows.get(row_key(arm, n)), rows.get(row_key(arm_name("euler", "polynomial"), n))
            if v is None:
                cells.append("-")
                continue
            ratio = f" ({v['ode_error'] / euler['ode_error']:.2f})" if euler else ""
            cells.append(f"{v['ode_error']:.3f}{ratio}, {v['seconds']:.0f}")
        out.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(out)


FAMILIES = {"AMED": lambda v: v.get("solver", "").startswith("amed"),        # the learned arms, by kind
            "learned multistep (BNS)": lambda v: v.get("solver") == "bns"}


def _learned(v: dict) -> bool:
    return any(f(v) for f in FAMILIES.values())


def _ode_rows(root: Path) -> tuple[dict, dict]:
    """(bench_ode128.json, its rows with the learned arms of bench_ode128_amed.json: a second run of the same
    configuration, same seeds and cached reference)."""
    d = _json(root, "weights/openmoji-32/bench_ode128.json")
    rows = dict(d["rows"])
    amed = root / "weights/openmoji-32/bench_ode128_amed.json"
    if amed.is_file():
        more = json.loads(amed.read_text())
        if more["config"] != d["config"]:
            raise ValueError(f"{amed} was run with another configuration than bench_ode128.json: its rows do not "
                             "compare")
        rows.update(more["rows"])
    return d, rows


def _best_training_free(rows, n: int, key: str):
    """The training-free, untuned arm with the smallest `key` at NFE budget n (None if there is none)."""
    return min((v for v in rows if v["nfe_budget"] == n and not _learned(v) and v.get("skip_tuning") is None
                and not v["arm"].startswith(("teacher:", "generator:")) and v.get(key) is not None),
               key=lambda v: v[key], default=None)


def fewstep_ode(root: Path) -> str:
    """weights/openmoji-32: ODE error on >= 128 seeds per arm and NFE (_ode_rows), each as a ratio to the best
    training-free arm at that NFE; then the issue-16 comparisons, from the same rows."""
    from .bench_samplers import row_key

    d, rows = _ode_rows(root)
    c = d["config"]
    budgets = sorted({v["nfe_budget"] for v in rows.values()})
    best = {n: _best_training_free(rows.values(), n, "ode_error") for n in budgets}
    out = [f"ODE error: mean per-image RMS distance (pixels in [-1, 1]) to {c['ode_reference']} (float32) from "
           f"the same noise, {c['ode_num']} seeds, guidance {c['guidance']}, class = seed mod K; in brackets the "
           "ratio to the best training-free arm at that NFE (**bold**); wall seconds for the "
           f"{c['num']} images; {d['device']}", "",
           "| arm | " + " | ".join(f"NFE {n}" for n in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for arm in dict.fromkeys(v["arm"] for v in rows.values()):
        cells = []
        for n in budgets:
            v = rows.get(row_key(arm, n))
            if v is None or v["ode_error"] is None:
                cells.append("-")
                continue
            err = f"**{v['ode_error']:.3f}**" if v is best[n] else f"{v['ode_error']:.3f}"
            cells.append(f"{err} ({v['ode_error'] / best[n]['ode_error']:.2f}), {v['seconds']:.0f} s")
        out.append(f"| {arm} | " + " | ".join(cells) + " |")
    notes = []
    for (kind, family), n in itertools.product(FAMILIES.items(), budgets):
        # per kind and NFE: its best arm against the best training-free one, and the NFE it saves
        am = min((v for v in rows.values() if family(v) and v["nfe_budget"] == n and v["ode_error"] is not None),
                 key=lambda v: v["ode_error"], default=None)
        if am is None or best[n] is None:
            continue
        e = am["ode_error"]
        reach = [m for m in budgets if best[m] is not None and best[m]["ode_error"] <= e]
        saved = (f"the best training-free arm first reaches {e:.3f} at NFE {reach[0]} ({best[reach[0]]['arm']}, "
                 f"{best[reach[0]]['ode_error']:.3f})" if reach
                 else f"no training-free arm reaches {e:.3f} at any NFE measured")
        notes.append(f"- NFE {n}: best {kind} arm {am['arm']}, {e:.3f} = {e / best[n]['ode_error']:.2f}x the best "
                     f"training-free arm ({best[n]['arm']}, {best[n]['ode_error']:.3f}); NFE saved: {saved}.")
    if notes:
        out += ["", *notes, f"- NFE budgets measured: {', '.join(map(str, budgets))}."]
    return "\n".join(out)


def _fd_ratio(pair: dict | None) -> str:
    """A paired FD ratio entry of a bench's "ratios" -> "0.913 [0.865, 0.956]" ("-" when there is none)."""
    return "-" if not pair else "{:.3f} [{:.3f}, {:.3f}]".format(pair["fd"]["ratio"], *pair["fd"]["ci95"])


def _ci(v: dict, key: str, p: int = 1) -> str:
    lo_hi = v.get(f"{key}_ci95")
    return f"{v[key]:.{p}f}" + (" [{:.{p}f}, {:.{p}f}]".format(*lo_hi, p=p) if lo_hi else "")


def fewstep_fd(root: Path, rel: str = "weights/openmoji-32/bench_fewstep_n1000.json") -> str:
    """weights/openmoji-32 and -sid cards: FD at n >= 1,000 with intervals, to data and to the teacher's samples
    (a `bench samplers --teacher-nfe` JSON), one row per arm, by NFE; wall time per image relative to Euler at the
    same NFE."""
    d = _json(root, rel)
    c, rows = d["config"], sorted(d["rows"].values(), key=lambda v: (v["nfe_budget"], v["fd"]))
    euler = {v["nfe_budget"]: v["seconds"] for v in rows if v["arm"] == "euler/polynomial"}
    cls = "class = seed mod K" if c["class"] == "cycle" else f"class {c['class']}"
    out = [f"n = {c['num']} seeds ({c['seed']}..{c['seed'] + c['num'] - 1}, {cls}), guidance "
           f"{c['guidance']}, bootstrap 95% intervals over {c.get('bootstrap_draws', 0)} resamples of the seeds; "
           f"teacher samples: {c.get('teacher', '-')}; {d['device']}. Intervals are centred on the estimate (a "
           "resample repeats images, which raises its FD: genkit/metrics/bootstrap.py); the paired ratios below are "
           "the comparison to read. Wall seconds are whole arms on a shared CPU, rows from several "
           "runs: a rough cost, not a timing (`genkit bench overhead` times arms side by side)",
           "", "| arm | NFE | network evals / image | FD to data [95%] | FD to teacher samples [95%] | "
           "class accuracy | wall s (x Euler) |", "|---|---|---|---|---|---|---|"]
    for v in rows:
        x = f" ({v['seconds'] / euler[v['nfe_budget']]:.2f})" if v["nfe_budget"] in euler else ""
        out.append(f"| {v['arm']} | {v['nfe']} | {v['network_evals']} | {_ci(v, 'fd')} | "
                   f"{_ci(v, 'fd_teacher') if 'fd_teacher' in v else '-'} | {_pct(v['class_accuracy'], 0)} | "
                   f"{v['seconds']:.0f}{x} |")
    if d.get("ratios"):
        r = lambda p: "{:.2f} [{:.2f}, {:.2f}]".format(p["ratio"], *p["ci95"]) if p else "-"  # noqa: E731
        out += ["", "Paired ratios on the same seeds (bootstrap 95% interval; an interval that excludes 1 separates the "
                "two arms even where their own intervals overlap):", "",
                "| arm / baseline | FD to data | FD to teacher samples |", "|---|---|---|"]
        out += [f"| {k} | {r(p['fd'])} | {r(p.get('fd_teacher'))} |" for k, p in d["ratios"].items()]
    floor = d.get("floor") or {}
    if "fd_val_subsets_at_n" in floor:
        out += ["", f"Floor: {floor['n']} real val emoji (never trained on) score {floor['fd_val_subsets_at_n']:.1f} "
                f"(range {floor['subsets_min']:.1f}-{floor['subsets_max']:.1f} over 5 subsets)."]
    return "\n".join(out)


def skip_picks(root: Path) -> str:
    """weights/openmoji-32 card: `genkit bench skip`'s sweep and picks (MODEL/skip_tuning.json); FD to the
    teacher's samples beside FD to data (the pick is on FD to data)."""
    d = _json(root, "weights/openmoji-32/skip_tuning.json")
    ci = lambda r, k: "-" if r is None else "{:.3f} [{:.3f}, {:.3f}]".format(r, *k)  # noqa: E731
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    out = ["| solver @ NFE | rho_bottom | FD to data | FD x untuned [95%] | FD to teacher samples | "
           "its ratio x untuned [95%] | class accuracy | picked |", "|---|---|---|---|---|---|---|---|"]
    for b in d["best"]:
        out.append(f"| {b['solver']} @ {b['nfe']} | 1 (off) | {b['fd_off']:.2f} | 1 | {f(b.get('fd_teacher_off'))} | "
                   f"1 | {_pct(b.get('class_accuracy_off'))} | {'**yes**' if b['rho_bottom'] == 1.0 else ''} |")
        out += [f"| | {s['rho_bottom']:g} | {s['fd']:.2f} | {ci(s['fd_ratio'], s['fd_ratio_ci95'])} | "
                f"{f(s.get('fd_teacher'))} | {ci(s.get('fd_teacher_ratio'), s.get('fd_teacher_ratio_ci95'))} | "
                f"{_pct(s.get('class_accuracy'))} | {'**yes**' if s['rho_bottom'] == b['rho_bottom'] else ''} |"
                for s in b["sweep"]]
    return "\n".join(out + ["", f"n = {d['best'][0]['n']} per arm, guidance {d['best'][0]['guidance']:g}; rule: "
                                f"{d['metric']}. Command: `{d['command']}`."])


# `genkit bench overhead` runs of the shipped generator beside the teacher's cheapest arm at its FD to data, and at
# its FD to the teacher's samples
SID_OVERHEAD = ["weights/openmoji-32-sid/bench_overhead_sid.json",
                "weights/openmoji-32-sid/bench_overhead_sid_bns3.json"]


def sid_vs_teacher(root: Path) -> str:
    """weights/openmoji-32-sid card: the one-step generators against the teacher's solvers on the same 1,000 seeds
    (bench_fewstep_n1000_learned.json), and the throughput at equal FD: the cheapest teacher arm at least as close
    to data (and to the teacher's samples) as the shipped generator, timed beside it by `genkit bench overhead`
    (SID_OVERHEAD)."""
    from .bench_samplers import generator_arm

    d = _json(root, "weights/openmoji-32/bench_fewstep_n1000_learned.json")
    rows = [v for v in d["rows"].values() if v.get("skip_tuning") is None and "fd_teacher" in v]
    gens = sorted((v for v in rows if "generator" in v), key=lambda v: v["arm"])
    teacher = sorted((v for v in rows if "generator" not in v), key=lambda v: (v["network_evals"], v["fd_teacher"]))
    spread = lambda v: f"{v['spread']:.1f}" if "spread" in v else "-"  # noqa: E731 (rows from before it)
    out = [f"n = {d['config']['num']} seeds, guidance {d['config']['guidance']} for the teacher's arms, teacher "
           f"samples: {d['config']['teacher']}; bootstrap 95% intervals", "",
           "| arm | NFE | network evals / image | FD to data [95%] | FD to teacher samples [95%] | class accuracy | "
           "within-class spread |", "|---|---|---|---|---|---|---|"]
    out += [f"| {v['arm']} | {v['nfe_budget']} | {v['network_evals']} | {_ci(v, 'fd')} | "
            f"{'(itself)' if v['arm'].startswith('teacher:') else _ci(v, 'fd_teacher')} | "
            f"{_pct(v['class_accuracy'])} | {spread(v)} |" for v in gens + teacher]
    shipped = next((g for g in gens if g["arm"] == generator_arm("weights/openmoji-32-sid")), None)
    if shipped is None:
        return "\n".join(out)
    for key, what in (("fd_teacher", "FD to the teacher's samples"), ("fd", "FD to data")):
        match = next((v for v in teacher if v[key] <= shipped[key]), None)
        out += ["", f"Equal {what}: " + (f"the cheapest teacher arm at or below the generator's {shipped[key]:.1f} is "
                                         f"{match['arm']} at NFE {match['nfe_budget']} ({match[key]:.1f}, "
                                         f"{match['network_evals']} network evaluations per image)." if match else
                                         f"no teacher arm here is at or below the generator's {shipped[key]:.1f}.")]
    for bench in SID_OVERHEAD:   # the generator timed beside each equal-FD teacher arm
        if not (root / bench).is_file():
            continue
        b = _json(root, bench)
        speed = b["generator_speedup_over_first_solver"]
        out += ["", f"Measured side by side (`{b['command']}`, {b['device']}, batch {b['batch_size']}, median of "
                f"{b['repeats']}): the teacher's {b['solvers'][0]} at {b['nfe']} NFE takes {b['median_s']['pipeline']:.3f} s "
                "per batch; " + "; ".join(f"{_arm_name(k)} {b['median_s'][k]:.4f} s, {x:.1f}x the images per second"
                                         for k, x in speed.items()) + "."]
    return "\n".join(out)


# The teacher at 20 dpmpp_2m steps on the bench's 1,000 seeds, four ways (guidance 2 everywhere, at sigma <= 2 or
# <= 1 only, off): (label, bench JSON); in each the teacher's row is teacher:dpmpp_2m@20, and the shipped one-step
# generator's row, where measured, generator:openmoji-32-sid@1
TEACHER_ROW = "teacher:dpmpp_2m@20"
TEACHER_BENCHES = [("2, every step", "weights/openmoji-32/bench_fewstep_n1000_learned.json"),
                   ("2 at sigma <= 2 only", "weights/openmoji-32-sid/session35/interval2_teacher_n1000.json"),
                   ("2 at sigma <= 1 only", "weights/openmoji-32-sid/session35/interval_teacher_n1000.json"),
                   ("1 (off)", "weights/openmoji-32-sid/teacher_g1_n1000.json")]


def guidance_interval(root: Path) -> str:
    """README: the teacher at 20 dpmpp_2m steps on the bench's 1,000 seeds, guided at 2 everywhere, at sigma <= 2
    or <= 1 only (the guidance interval) and not at all (guidance 1): FD, class accuracy, within-class spread, cost."""
    out = ["| guidance | network evals / image | FD-OpenMoji [95%] | class accuracy | within-class spread | JSON |",
           "|---|---|---|---|---|---|"]
    for what, rel in TEACHER_BENCHES:
        v = _json(root, rel)["rows"][TEACHER_ROW]
        out.append(f"| {what} | {v['network_evals']} | {_ci(v, 'fd')} | {_pct(v['class_accuracy'])} | "
                   f"{v['spread']:.1f} | [{Path(rel).name}]({rel}) |")
    return "\n".join(out)


def _arm_name(key: str) -> str:
    """A bench row key's arm without its kind and NFE: generator:NAME@1 -> NAME."""
    return key.split(":", 1)[-1].rsplit("@", 1)[0]


def sid_teachers(root: Path, gen: str = "generator:openmoji-32-sid@1") -> str:
    """weights/openmoji-32-sid card: the shipped generator against the teacher sampled each of the four ways, on
    the same 1,000 seeds: the paired ratio of FD to data (generator / teacher) and the FD between their samples."""
    out = ["| teacher guided at | network evals / image | teacher's FD [95%] | class accuracy | spread | generator / "
           "teacher FD [paired 95%] | FD generator to teacher samples | JSON |", "|---|---|---|---|---|---|---|---|"]
    gens = []   # the generator's row in each bench (the same images: its FD etc. are the first's)
    for what, rel in TEACHER_BENCHES:
        d = _json(root, rel)
        v, g = d["rows"][TEACHER_ROW], d["rows"].get(gen)
        gens.append(g)
        pair = d.get("ratios", {}).get(f"{gen} / {TEACHER_ROW}")
        out.append(f"| {what} | {v['network_evals']} | {_ci(v, 'fd')} | {_pct(v['class_accuracy'])} | "
                   f"{v['spread']:.1f} | {_fd_ratio(pair)} | {_f(g.get('fd_teacher') if g else None, 1)} | "
                   f"[{Path(rel).name}]({os.path.relpath(rel, 'weights/openmoji-32-sid')}) |")   # from the card
    g = gens[0]
    return "\n".join(out + ["", f"The generator ({_arm_name(gen)}, 1 network evaluation): FD "
                            f"{_ci(g, 'fd')}, class accuracy {_pct(g['class_accuracy'])}, spread {g['spread']:.1f}."])


def sid_bench(root: Path, rel: str, gen: str = "generator:openmoji-32-sid@1") -> str:
    """weights/openmoji-32-sid card: one bench of the teacher and the generators on the same seeds: each row's FD,
    FD to the teacher's samples, class accuracy and spread, and the paired FD ratios over the teacher's row and
    over the shipped generator's."""
    d = _json(root, rel)
    c, rows, ratios = d["config"], d["rows"], d.get("ratios", {})
    order = sorted(rows, key=lambda k: (k != TEACHER_ROW, k != gen, k))
    out = [f"n = {c['num']} seeds ({c['seed']}..{c['seed'] + c['num'] - 1}, class = seed mod K), the teacher "
           f"{c['teacher']}, guidance {c['guidance']:g}" + (f" at sigma in [{c['guidance_sigma_range']}] only"
                                                           if c.get("guidance_sigma_range") else "") +
           f"; bootstrap 95% intervals; {d['device']}. Command: `{d['command']}`.", "",
           f"| arm | FD to data [95%] | FD to teacher samples [95%] | class accuracy | spread | FD / teacher's "
           f"[paired 95%] | FD / {_arm_name(gen)}'s [paired 95%] |", "|---|---|---|---|---|---|---|"]
    for k in order:
        v = rows[k]
        out.append(f"| {_arm_name(k) if k != TEACHER_ROW else k} | {_ci(v, 'fd')} | "
                   f"{'(itself)' if k == TEACHER_ROW else _ci(v, 'fd_teacher')} | {_pct(v['class_accuracy'])} | "
                   f"{_f(v.get('spread'), 1)} | {_fd_ratio(ratios.get(f'{k} / {TEACHER_ROW}'))} | "
                   f"{_fd_ratio(ratios.get(f'{k} / {gen}'))} |")
    return "\n".join(out)


def sid_classes(root: Path, rel: str = "weights/openmoji-32-sid/classes_n3000.json") -> str:
    """weights/openmoji-32-sid card: class accuracy class by class (training/sid_classes.py's JSON): the classes
    the later arms miss most against the first (the teacher they match, or an earlier generator), how often they
    are at or above it, and where they differ beyond chance."""
    d = _json(root, rel)
    base, gens = d["arms"][0], d["arms"][1:]
    acc = {a: dict(zip(d["classes"], d["accuracy"][a])) for a in d["arms"]}
    hardest = sorted((c for c in d["classes"] if acc[gens[0]][c] is not None), key=lambda c: acc[gens[0]][c])[:6]
    shown = list(dict.fromkeys([c for a in gens for c, *_ in d["against_first"][a]["worst"]] + hardest))
    shown.sort(key=lambda c: (acc[gens[0]][c] - acc[base][c], c))
    out = [f"| class | {base} | " + " | ".join(_arm_name(a) for a in gens) + " |", "|---" * (len(gens) + 2) + "|"]
    out += [f"| {c} | " + " | ".join(_pct(acc[a][c], 0) for a in d["arms"]) + " |" for c in shown]
    lo, hi = d["images_per_class"]
    out += ["", f"{lo}-{hi} images per class (the bench's seeds, class = seed mod {len(d['classes'])}); "
            f"the classes among each arm's {len(d['against_first'][gens[0]]['worst'])} largest shortfalls against "
            f"{base}, and {_arm_name(gens[0])}'s {len(hardest)} hardest. Command: `{d['command']}`.", ""]
    for a in gens:
        s = d["against_first"][a]
        listed = lambda k: f"{len(s[k])} ({', '.join(s[k])})" if s[k] else "0"  # noqa: E731
        out.append(f"- {_arm_name(a)}: at or above {base} on {s['at_or_above']} of {s['classes']} classes "
                   f"(per-class accuracies correlate {_f(s.get('correlation'), 2)}); "
                   f"significantly below (two-proportion z < -3) on {listed('below')}, above on {listed('above')}; "
                   f"not one image right in {listed('none_right')}.")
    return "\n".join(out)


def sid_alpha(root: Path) -> str:
    """weights/openmoji-32-sid: the alpha ablation at equal budget: each run's FD curve (alpha_ablation/
    alpha-A.metrics.jsonl) and its final EMA generator on the bench's 1,000 seeds (generator:sid-alpha-A rows of
    bench_fewstep_n1000_learned.json: intervals, FD to the teacher's samples, class accuracy)."""
    from .bench_samplers import generator_arm, row_key

    d = _json(root, "weights/openmoji-32/bench_fewstep_n1000_learned.json")
    teacher_key = next(k for k in d["rows"] if k.startswith("teacher:"))   # the base of a generator's paired ratio
    out = ["| alpha | generator images | FD during the run (images: FD) | FD to data [95%] | FD x teacher@20 [95%] | "
           "FD to teacher samples [95%] | class accuracy |", "|---|---|---|---|---|---|---|"]
    for path in sorted((root / "weights/openmoji-32-sid/alpha_ablation").glob("alpha-*.metrics.jsonl")):
        alpha = path.name[len("alpha-"):-len(".metrics.jsonl")]
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        curve = ", ".join(f"{r['images']:,}: {r['fd']:.1f}" for r in rows)
        key = row_key(generator_arm(f"runs/sid-alpha-{alpha}"), 1)
        v, pair = d["rows"].get(key), (d.get("ratios") or {}).get(f"{key} / {teacher_key}")
        r = _fd_ratio(pair)
        out.append(f"| {alpha} | {rows[-1]['images']:,} | {curve} | {_ci(v, 'fd') if v else '-'} | {r} | "
                   f"{_ci(v, 'fd_teacher') if v and 'fd_teacher' in v else '-'} | "
                   f"{_pct(v['class_accuracy']) if v else '-'} |")
    return "\n".join(out)


def upsample(root: Path) -> str:
    """README: the 32 px model at 64 px (weights/openmoji-32/bench_upsample.json): every arm measured so far, then
    each upsample-guidance arm against the issue's targets (FD at most half of naive's and below bicubic's by the
    paired intervals, at most 1.3x naive's wall time)."""
    from .bench_upsample import markdown_table

    d = _json(root, "weights/openmoji-32/bench_upsample.json")
    ratios, out = d.get("ratios", {}), [markdown_table(d).rstrip()]

    def verdict(key, limit):
        r = ratios.get(key)
        if r is None:
            return "not measured"
        lo, hi = r["ci95"]
        said = "met" if hi < limit else "missed" if lo > limit else "undecided"
        return f"{r['ratio']:.3f} [{lo:.3f}, {hi:.3f}], {said}"

    ug = [n for n, r in d["rows"].items() if r["kind"] == "ug" and r["adjust"] == ["power", "time"]]
    if ug:
        out += ["", "Targets, by paired 95% intervals (same seeds): FD / naive at most 0.5, FD / bicubic below 1, "
                "time / naive at most 1.3."]
    for name in ug:
        t = d["rows"][name].get("time_vs_naive")
        out.append(f"- {name}: FD / naive {verdict(f'{name} / naive', 0.5)}; FD / bicubic "
                   f"{verdict(f'{name} / bicubic', 1.0)}; time / naive "
                   + ("-" if t is None else f"{t:.2f}, {'met' if t <= 1.3 else 'missed'}"))
    return "\n".join(out)


# The AMED paper's NFE-5 results (CIFAR-10 FID, its Tables 2-3), quoted beside ours: (learned, best training-free)
PAPER_AMED = {"AMED-Solver vs DPM-Solver++(3M)": (7.59, 24.97), "AMED-Plugin on iPNDM vs iPNDM": (6.61, 13.59)}


def fewstep_summary(root: Path, n: int = 5) -> str:
    """README: issue 16's NFE-5 verdict. Per arm: ODE error on 128 seeds (x the best training-free arm; _ode_rows),
    FD to the teacher's own 50-NFE samples and to data at n = 1,000 with bootstrap intervals, class accuracy
    (bench_fewstep_n1000.json); the two targets checked from those numbers; the AMED paper's ratios beside."""
    from .bench_samplers import row_key

    ode_json, ode = _ode_rows(root)
    ode_of = lambda v: (ode.get(row_key(v["arm"], n)) or {}).get("ode_error")  # noqa: E731  (None: not measured)
    d = _json(root, "weights/openmoji-32/bench_fewstep_n1000.json")
    c, fd = d["config"], d["rows"]
    at_n = [v for v in fd.values() if v["nfe_budget"] == n and v.get("skip_tuning") is None
            and not v["arm"].startswith("generator:")]
    teacher = next(v for v in fd.values() if v["arm"].startswith("teacher:"))
    best_ode = _best_training_free(ode.values(), n, "ode_error")
    best_fd = _best_training_free(at_n, n, "fd_teacher")
    ten = _best_training_free(ode.values(), 2 * n, "ode_error")
    out = [f"NFE {n} (guidance {c['guidance']:g}: {2 * n} network evaluations per image). ODE error: "
           f"{ode_json['config']['ode_num']} seeds against a float32 "
           f"Heun solution, x the best training-free arm (**bold**). FD: n = {c['num']} seeds, bootstrap 95% "
           f"intervals, to the teacher's own samples ({c['teacher']}) and to the train set.", "",
           "| arm | ODE error (x best) | FD to the teacher's samples [95%] | FD to data [95%] | class accuracy |",
           "|---|---|---|---|---|"]
    for v in sorted(at_n, key=lambda v: (_learned(v), -(ode_of(v) or 0))):
        e = ode_of(v)
        err = "-" if e is None else (f"**{e:.3f}**" if e == best_ode["ode_error"] else f"{e:.3f}") + \
            f" ({e / best_ode['ode_error']:.2f})"
        out.append(f"| {v['arm']} | {err} | {_ci(v, 'fd_teacher', 2) if 'fd_teacher' in v else '-'} | "
                   f"{_ci(v, 'fd')} | {_pct(v['class_accuracy'])} |")
    out.append(f"| {teacher['arm']} at NFE {teacher['nfe']} | - | 0 | {_ci(teacher, 'fd')} | "
               f"{_pct(teacher['class_accuracy'])} |")
    out += ["", f"Targets at NFE {n} (from the rows above):"]
    for kind, family in FAMILIES.items():
        arms = [v for v in at_n if family(v) and ode_of(v) is not None]
        if not arms:
            continue
        a = min(arms, key=ode_of)
        e = ode_of(a)
        x = e / best_ode["ode_error"]
        ok1 = x <= 0.5 and ten is not None and e <= ten["ode_error"]
        lo_hi, best_ci = a.get("fd_teacher_ci95"), best_fd.get("fd_teacher_ci95")
        below = bool(lo_hi and best_ci and lo_hi[1] < best_ci[0])
        acc = a["class_accuracy"] >= best_fd["class_accuracy"]
        yes = lambda ok: "yes" if ok else "no"  # noqa: E731
        out.append(f"- {kind}, {a['arm']}: ODE error {x:.2f}x the best training-free arm's at NFE {n} (target at most "
                   f"0.5x) and {e:.3f} against the best training-free arm at NFE {2 * n} ({ten['arm']}, "
                   f"{ten['ode_error']:.3f}): **{'met' if ok1 else 'missed'}**. FD to the teacher's samples "
                   f"{_ci(a, 'fd_teacher', 2)} against the closest training-free arm's ({best_fd['arm']}) "
                   f"{_ci(best_fd, 'fd_teacher', 2)}: interval below theirs {yes(below)}; class accuracy "
                   f"{_pct(a['class_accuracy'])} vs {_pct(best_fd['class_accuracy'])}, no lower {yes(acc)}: "
                   f"**{'met' if below and acc else 'missed'}**.")
    w = _json(root, "weights/openmoji-32/bench_overhead_bns.json")
    out.append(f"- Wall time at NFE {w['nfe']} x {w['solvers'][0]} (`{w['command']}`, median of {w['repeats']}, "
               f"{w['device']}): " + ", ".join(f"{k} {r:.3f}" for k, r in w["ratio_over_first_solver"].items()) + ".")
    paper = "; ".join(f"{k} {a:g} vs {b:g} FID ({a / b:.2f}x)" for k, (a, b) in PAPER_AMED.items())
    return "\n".join(out + [f"- The AMED paper at NFE 5 on CIFAR-10: {paper}."])


def fewstep_fd_learned(root: Path) -> str:
    """weights/openmoji-32 card: the NFE-5 arms with the learned-grid AMED predictor, n = 1,000."""
    return fewstep_fd(root, "weights/openmoji-32/bench_fewstep_n1000_learned.json")


TABLES = {"fewstep-summary": fewstep_summary, "fewstep-fd": fewstep_fd, "fewstep-fd-learned": fewstep_fd_learned,
          "fewstep-ode": fewstep_ode, "amed-ode": amed_ode, "skip-picks": skip_picks, "samplers": samplers,
          "sid-vs-teacher": sid_vs_teacher, "sid-alpha": sid_alpha,
          "sid-curve": sid_curve, "guidance-interval": guidance_interval, "sid-teachers": sid_teachers,
          "sid-classes": sid_classes,
          "sid-n3000": lambda root: sid_bench(root, "weights/openmoji-32-sid/interval_teacher_n3000.json"),
          "sid-classes-n5000": lambda root: sid_classes(root, "weights/openmoji-32-sid/classes_n5000.json"),
          "sid-curve-40k": lambda root: sid_curve(root, "weights/openmoji-32-sid/session26/fd_curve.json"),
          "sid-collapse": sid_collapse, "sid-interval-runs": sid_interval_runs,
          "sid-alpha-k4": lambda root: sid_interval_runs(root, "session34"),
          "sid-warm-35": lambda root: sid_interval_runs(root, "session35"),
          "sid-warm-36": lambda root: sid_interval_runs(root, "session36"),
          "sid-warm-37": lambda root: sid_interval_runs(root, "session37"), "vq": vq,
          "mm-ablations": mm_ablations, "mm-history": mm_history, "measured": measured, "mm-disc": mm_disc,
          "mm-disc-why": mm_disc_why, "app-bench": app_bench, "app-bench-defaults": app_bench_defaults,
          "upsample": upsample}


# -- the command ---------------------------------------------------------------------------------------------

def render_file(text: str, root: Path) -> str:
    """text with every marked table replaced by its renderer's output; an unknown NAME is an error."""
    def sub(m):
        name = m.group("name")
        if name not in TABLES:
            raise ValueError(f"table={name!r} is not allowed: one of {', '.join(TABLES)}")
        return m.group(1) + TABLES[name](root).rstrip("\n") + "\n" + m.group(4)

    return MARKER.sub(sub, text)


def doc_files(root: Path) -> list[Path]:
    return [p for pattern in DOCS for p in sorted(root.glob(pattern))]


def stale_tables(root: Path = ROOT) -> dict[Path, str]:
    """{file: what `genkit docs tables` would write} for every file whose marked tables are out of date."""
    out = {}
    for path in doc_files(root):
        text = path.read_text()
        new = render_file(text, root)
        if new != text:
            out[path] = new
    return out


def add_parser(sub):
    p = sub.add_parser("docs", help="regenerate the measurement tables in README.md and the model cards",
                       description="Regenerate every `<!-- table:NAME -->` block in README.md, docs/*.md and the model "
                                   "cards (weights/*/README.md, HISTORY.md) from the committed JSON (see "
                                   "genkit/commands/docs.py to add a table).")
    p.add_argument("what", choices=["tables"], help="tables: every marked measurement table")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 and name the files whose tables "
                                                        "differ from what the JSON gives")
    p.set_defaults(func=run)


def run(args) -> int:
    stale = stale_tables(ROOT)
    names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
    if args.check:
        print(f"stale tables in: {names}" if stale else "all tables match their JSON")
        return 1 if stale else 0
    for path, text in stale.items():
        atomic_write_bytes(path, text.encode())
    print(f"rewrote: {names}" if stale else "all tables match their JSON")
    return 0
