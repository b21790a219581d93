"""Screenshots of each tab of the app with the shipped models, into docs/ (the README shows docs/app-diffusion.png).

    python docs/screenshots.py            # needs Debian's chromium and `pip install playwright`; ~2 min on a CPU

The app is served in this process on a free port; Chromium runs headless with no network access of its own.
"""

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(out: Path = ROOT / "docs") -> None:
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
            # Diffusion: 8 images of one class, seed 0
            page.locator("#seed input").fill("0")
            page.locator("#batch_size input[type=number]").fill("8")
            page.locator("#batch_size input[type=number]").press("Tab")
            page.click("#generate")
            page.wait_for_selector("#info:has-text('NFE per image')")
            page.wait_for_selector("#zip a, #zip .file-preview")
            page.screenshot(path=str(out / "app-diffusion.png"), full_page=True)
            # Text and image: draw, then caption the first image
            page.get_by_role("tab", name="Text and image").click()
            page.click("#draw")
            page.wait_for_selector("#mm_info:has-text('wall time')")
            page.click("#send_to_caption")
            page.wait_for_function("document.querySelector('#caption_out textarea').value.length > 0")
            page.screenshot(path=str(out / "app-text-and-image.png"), full_page=True)
            # Tokenizer: the first example
            page.get_by_role("tab", name="Tokenizer").click()
            page.locator("#tok_input").locator("xpath=ancestor::div[contains(@class,'column')]") \
                .locator(".gallery-item, button.gallery").first.click()
            page.click("#tokenize")
            page.wait_for_selector("#tok_info:has-text('codes')")
            page.screenshot(path=str(out / "app-tokenizer.png"), full_page=True)
            # PNG info: one of the Diffusion tab's PNGs
            first = next((Path(os.environ.get("GRADIO_TEMP_DIR", "/tmp")) / "genkit-images").rglob("0.png"))
            page.get_by_role("tab", name="PNG info").click()
            page.locator("#png_upload input[type=file]").set_input_files(str(first))
            page.wait_for_timeout(1500)
            page.get_by_role("tab", name="PNG info").click()
            page.wait_for_function("document.querySelector('#png_parameters textarea').value.includes('Seed')")
            page.screenshot(path=str(out / "app-png-info.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('app-*.png')))} to {out}")


if __name__ == "__main__":
    main()
