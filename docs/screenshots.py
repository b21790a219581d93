"""Screenshots of each tab of the app with the shipped models, into docs/ (the README shows docs/app-diffusion.png).

    python docs/screenshots.py                      # all four; needs Debian's chromium and `pip install playwright`
    python docs/screenshots.py tokenizer png-info   # only these

The app is served in this process on a free port; Chromium runs headless with no network access of its own.
"""

import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


TABS = ("diffusion", "text-and-image", "tokenizer", "png-info")


def main(tabs=TABS, out: Path = ROOT / "docs") -> None:
    from playwright.sync_api import sync_playwright

    from genkit.loading import load_mm_pipeline, load_pipeline, load_tokenizer
    from genkit.ui import CSS, build_demo

    w = ROOT / "weights"
    pipe = load_pipeline(str(w / "openmoji-32"))
    examples = sorted(str(p) for p in (w / "openmoji-vq" / "examples").glob("*.png"))
    demo = build_demo(pipe, 16, load_tokenizer(str(w / "openmoji-vq")), examples,
                      load_mm_pipeline(str(w / "openmoji-mm"), "cpu"), model_name="openmoji-32")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, css=CSS)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(300_000)
            page.goto(url)
            # Diffusion: 8 images of one class, seed 0 (also the PNG for the PNG info tab)
            page.locator("#seed input").fill("0")
            page.locator("#batch_size input[type=number]").fill("8" if "diffusion" in tabs else "1")
            page.locator("#batch_size input[type=number]").press("Tab")
            page.click("#generate")
            page.wait_for_selector("#info:has-text('NFE per image')")
            page.wait_for_selector("#zip a, #zip .file-preview")
            if "diffusion" in tabs:
                page.screenshot(path=str(out / "app-diffusion.png"), full_page=True)
            first = page.locator("#gallery img").first.get_attribute("src")
            example_png = Path(tempfile.mkdtemp()) / "0.png"
            example_png.write_bytes(page.request.get(first).body())
            # Text and image: draw, then caption the first image
            if "text-and-image" in tabs:
                page.get_by_role("tab", name="Text and image").click()
                page.click("#draw")
                page.wait_for_selector("#mm_info:has-text('wall time')")
                page.click("#send_to_caption")
                page.wait_for_function("document.querySelector('#caption_out textarea').value.length > 0")
                page.screenshot(path=str(out / "app-text-and-image.png"), full_page=True)
            # Tokenizer: the first example image
            if "tokenizer" in tabs:
                page.get_by_role("tab", name="Tokenizer").click()
                page.locator("#tok_input input[type=file]").set_input_files(examples[0])
                page.wait_for_timeout(1000)
                page.click("#tokenize")
                page.wait_for_selector("#tok_info:has-text('codes')")
                page.screenshot(path=str(out / "app-tokenizer.png"), full_page=True)
            # PNG info: the Diffusion tab's first PNG (the upload fills the form and switches tabs: come back)
            if "png-info" in tabs:
                page.get_by_role("tab", name="PNG info").click()
                page.locator("#png_upload input[type=file]").set_input_files(str(example_png))
                page.wait_for_function("document.querySelector('#seed input').value == '0'")
                page.get_by_role("tab", name="PNG info").click()
                page.wait_for_function("document.querySelector('#png_parameters textarea').value.includes('Seed')")
                page.screenshot(path=str(out / "app-png-info.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('app-*.png')))} to {out}")


if __name__ == "__main__":
    chosen = tuple(sys.argv[1:]) or TABS
    unknown = set(chosen) - set(TABS)
    if unknown:
        sys.exit(f"screenshots.py: error: tab={sorted(unknown)[0]!r} is not allowed: one of {', '.join(TABS)}")
    main(chosen)
