"""The app in a real browser: Playwright driving Debian's Chromium headless (never a downloaded browser).

Load, pick a class, Generate, see previews then the final images; Stop mid-run keeps the finished batch; the
PNG-info round trip regenerates the identical bytes; a bad value shows a message and the app keeps serving.
Skipped when the `playwright` package or /usr/bin/chromium is missing (.ci/run installs both).
"""

import io
import shutil
import time
import zipfile

import pytest

from genkit.png_info import read_parameters
from genkit.ui import CSS, build_demo
from ui_helpers import free_port, gradio_env, tiny_mm, tiny_pipe  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser is Debian's chromium)")
pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="apt-get install chromium")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


@pytest.fixture(scope="module")
def page(tiny_pipe, tiny_mm):
    from playwright.sync_api import sync_playwright

    # 40 ms per network evaluation (150 ms per AR step of the transformer): slow enough that a browser sees the
    # previews and can press Stop mid-run
    hook = tiny_pipe.unet.register_forward_pre_hook(lambda *_: time.sleep(0.04))
    mm_hook = tiny_mm.model.transformer.register_forward_pre_hook(lambda *_: time.sleep(0.15))
    from genkit.scheduler import GenkitScheduler
    from helpers import CLASS_NAMES, tiny_unet
    from pipelines.one_step import OneStepPipeline

    sid = OneStepPipeline(tiny_unet(4), GenkitScheduler(image_size=8), class_names=CLASS_NAMES)
    sid.set_progress_bar_config(disable=True)
    demo = build_demo({"model": tiny_pipe, "model-sid": sid}, max_batch_size=4, mm=tiny_mm)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, css=CSS)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#generate")
        yield page
        browser.close()
    demo.close()
    hook.remove()
    mm_hook.remove()


# n finished images in the gallery and no preview among them
FINAL = ("document.querySelectorAll('#gallery .caption-label').length == {n} && "
         "![...document.querySelectorAll('#gallery .caption-label')].some(c => c.innerText.includes('step'))")


def set_value(page, elem_id, value):
    box = page.locator(f"#{elem_id} input").first
    box.fill(str(value))
    box.press("Enter" if elem_id in ("class", "sampler", "grid", "model") else "Tab")


def captions(page):
    return [c.inner_text() for c in page.locator("#gallery .caption-label").all()]


def image_bytes(page, index):
    src = page.locator("#gallery img").nth(index).get_attribute("src")
    return page.request.get(src).body()


def zip_names(page, want=None, timeout_s: float = 30.0):
    """The "Download all" zip's file names, once the follow-up after the run has made it. With want: read again
    until they equal it or timeout_s passes (the page is shared between tests, so the link of the run before can
    still be there for a moment after a stop)."""
    import time

    link = page.locator("#zip a[download='images.zip']")
    deadline = time.monotonic() + timeout_s
    while True:
        link.wait_for(timeout=180_000)   # a follow-up event after the run: slow when the CI's two cores are busy
        with zipfile.ZipFile(io.BytesIO(page.request.get(link.get_attribute("href")).body())) as z:
            names = z.namelist()
        if want is None or names == want or time.monotonic() > deadline:
            return names
        page.wait_for_timeout(250)


def test_generate_shows_previews_then_final_images(page):
    set_value(page, "class", "c")
    set_value(page, "seed", 3)
    set_value(page, "steps", 10)
    set_value(page, "batch_count", 2)
    page.click("#generate")
    page.wait_for_selector("#gallery .caption-label:has-text('· step')")          # a live x0 preview
    page.wait_for_selector("#info:has-text('step 20/20')")
    page.wait_for_function(FINAL.format(n=8))
    assert captions(page) == [f"seed {k}" for k in range(3, 11)]
    assert zip_names(page) == [f"{k}.png" for k in range(3, 11)]


def test_stop_mid_run_keeps_the_finished_batch(page):
    set_value(page, "seed", 100)
    set_value(page, "steps", 40)   # 1.6 s a batch (40 ms a step): Stop lands mid-run even under load; 10 raced
    set_value(page, "batch_count", 4)
    page.click("#generate")
    page.wait_for_selector("#gallery .caption-label:text-is('seed 100')")           # batch 1 finished
    page.click("#stop")
    page.wait_for_selector("#info:has-text('stopped')")
    done = [c for c in captions(page) if "step" not in c]
    assert 4 <= len(done) < 16 and len(done) % 4 == 0 and done[0] == "seed 100"
    want = [f"{c.split()[1]}.png" for c in done]
    assert zip_names(page, want) == want                                              # the finished batches


def test_png_info_round_trip_regenerates_identical_bytes(page, tmp_path):
    set_value(page, "seed", 21)
    set_value(page, "steps", 5)
    set_value(page, "batch_count", 2)
    page.click("#generate")
    page.wait_for_selector("#info:has-text('step 10/10')")
    page.wait_for_function(FINAL.format(n=8))
    original = image_bytes(page, 1)                        # what a download gives: with its parameters chunk
    assert "Seed: 22," in read_parameters(original)
    (tmp_path / "22.png").write_bytes(original)
    set_value(page, "seed", 0)
    set_value(page, "steps", 7)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#png_upload input[type=file]").set_input_files(str(tmp_path / "22.png"))
    # the form now holds the settings of image 22's batch (batched calls may round differently from one alone)
    page.wait_for_function("document.querySelector('#seed input').value == '21' && "
                           "document.querySelector('#steps input[type=number]').value == '5'")
    page.click("#generate")                                # the form is back in view: the Diffusion tab
    page.wait_for_function(FINAL.format(n=4))              # batch count 1 now: 4 images, not the 8 before
    assert captions(page)[1] == "seed 22"
    assert image_bytes(page, 1) == original


def test_bad_value_shows_a_message_and_the_app_keeps_serving(page):
    set_value(page, "seed", -5)
    page.click("#generate")
    page.wait_for_selector("text=seed=-5 is not allowed")
    set_value(page, "seed", 1)
    set_value(page, "batch_count", 1)
    page.click("#generate")
    page.wait_for_selector("#gallery .caption-label:text-is('seed 1')")


def test_text_and_image_tab_previews_then_stop_mid_draw(page):
    page.get_by_role("tab", name="Text and image").click()
    page.locator("#mm_num input[type=number]").fill("2")
    page.locator("#mm_num input[type=number]").press("Tab")
    page.click("#draw")
    page.wait_for_selector("#mm_gallery .caption-label:has-text('· step')")       # partial images, patch by patch
    page.click("#mm_stop")
    page.wait_for_selector("#mm_info:has-text('stopped')")
    shown = [c.inner_text() for c in page.locator("#mm_gallery .caption-label").all()]
    step = int(shown[0].split("step ")[1].split("/")[0])
    assert len(shown) == 2 and all("step" in c for c in shown) and step < 16       # stopped before the end
    page.click("#draw")                                                           # the next draw runs to the end
    page.wait_for_selector("#mm_info:has-text('wall time')")
    assert [c.inner_text() for c in page.locator("#mm_gallery .caption-label").all()] == \
        ["seed 0 · 1/2", "seed 0 · 2/2"]
    page.get_by_role("tab", name="Diffusion").click()


def test_model_menu_one_step_form_shows_what_applies(page):
    set_value(page, "model", "model-sid · 8x8 · one-step (SiD), 1 evaluation")      # the menu's labels
    page.wait_for_selector("#steps", state="hidden")                              # no steps, sampler, grid
    assert not page.locator("#sampler").is_visible() and not page.locator("#guidance").is_visible()
    set_value(page, "seed", 40)
    set_value(page, "batch_count", 1)
    page.click("#generate")
    page.wait_for_selector("#info:has-text('NFE per image: 1')")
    page.wait_for_function(FINAL.format(n=4))
    set_value(page, "model", "model · 8x8 · diffusion")                           # back to the teacher
    page.wait_for_selector("#steps", state="visible")
