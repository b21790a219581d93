"""The app in a real browser: Playwright driving Debian's Chromium headless (never a downloaded browser).

Load, pick a class, Generate, see previews then the final images; Stop mid-run keeps the finished batch; the
PNG-info round trip regenerates the identical bytes; a bad value shows a message and the app keeps serving.
Skipped when the `playwright` package or /usr/bin/chromium is missing (.ci/run installs both).
"""

import shutil
import time

import pytest

from genkit.png_info import read_parameters
from genkit.ui import CSS, build_demo
from ui_helpers import free_port, gradio_env, tiny_pipe  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser is Debian's chromium)")
pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="apt-get install chromium")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


@pytest.fixture(scope="module")
def page(tiny_pipe):
    from playwright.sync_api import sync_playwright

    # 40 ms per network evaluation: slow enough that a browser sees the previews and can press Stop mid-run
    hook = tiny_pipe.unet.register_forward_pre_hook(lambda *_: time.sleep(0.04))
    demo = build_demo(tiny_pipe, max_batch_size=4)
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


# n finished images in the gallery and no preview among them
FINAL = ("document.querySelectorAll('#gallery .caption-label').length == {n} && "
         "![...document.querySelectorAll('#gallery .caption-label')].some(c => c.innerText.includes('step'))")


def set_value(page, elem_id, value):
    box = page.locator(f"#{elem_id} input").first
    box.fill(str(value))
    box.press("Enter" if elem_id in ("class", "sampler", "grid") else "Tab")


def captions(page):
    return [c.inner_text() for c in page.locator("#gallery .caption-label").all()]


def image_bytes(page, index):
    src = page.locator("#gallery img").nth(index).get_attribute("src")
    return page.request.get(src).body()


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


def test_stop_mid_run_keeps_the_finished_batch(page):
    set_value(page, "seed", 100)
    set_value(page, "steps", 10)
    set_value(page, "batch_count", 4)
    page.click("#generate")
    page.wait_for_selector("#gallery .caption-label:text-is('seed 100')")           # batch 1 finished
    page.click("#stop")
    page.wait_for_selector("#info:has-text('stopped')")
    done = [c for c in captions(page) if "step" not in c]
    assert 4 <= len(done) < 16 and len(done) % 4 == 0 and done[0] == "seed 100"


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
