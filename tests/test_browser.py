"""The app in a real browser: Debian's Chromium, headless, driven by Playwright.

It clicks through what a visitor does with the real MobileNetV2 default: upload a photo,
explain, read the prediction, switch the class twice, restyle, compare with Grad-CAM, run
AD/IC and ROAD, and hit a bad file. Set ``TTAME_SCREENSHOT=docs/app.png`` to refresh the
README's screenshot (taken once the curves are drawn).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.loadgen import free_port
from ttame.app import build_app, serve

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
CHELSEA = ROOT / "examples" / "chelsea.jpg"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (bash scripts/setup.sh --dev)",
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]


@pytest.fixture(scope="module")
def url():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        demo = build_app()
        port = free_port()
        serve(demo, "127.0.0.1", port, block=False, quiet=True)
        yield f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.wait_for_selector("#explain")
        yield page
        browser.close()


def overlay_source(page) -> str:
    return page.locator("#overlay img").get_attribute("src") or ""


def test_explain_switch_class_and_restyle(page, tmp_path):
    from playwright.sync_api import expect

    page.locator("#photo input[type=file]").set_input_files(str(CHELSEA))
    page.wait_for_selector("#photo img")
    page.click("#explain")
    page.wait_for_selector("#overlay img")
    expect(page.locator("#prediction h3")).to_have_text("Egyptian cat")
    size = page.evaluate(
        "() => { const i = document.querySelector('#overlay img');"
        " return [i.naturalWidth, i.naturalHeight]; }"
    )
    assert size == [451, 300]  # the original photo, not the 224 px crop
    first = overlay_source(page)

    search = page.locator("#target input")
    search.click()
    search.fill("")
    search.press_sequentially("tiger ca", delay=20)
    page.locator("ul[role=listbox] li").filter(has_text="tiger cat").first.click()
    expect(page.locator("#prediction h3")).to_have_text("tiger cat")
    assert overlay_source(page) != first

    page.locator("#top5 label").filter(has_text="tabby").click()
    expect(page.locator("#prediction h3")).to_have_text("tabby")
    expect(page.locator("#target input")).to_have_value("tabby · 281")

    before = overlay_source(page)
    colours = page.locator("#colormap input")
    colours.click()
    page.locator("ul[role=listbox] li").filter(has_text="gray").first.click()
    expect(page.locator("#overlay img")).not_to_have_attribute("src", before)

    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)


def test_compare_and_run_the_curves(page, tmp_path):
    from playwright.sync_api import expect

    page.locator("#photo input[type=file]").set_input_files(str(CHELSEA))
    page.wait_for_selector("#photo img")
    page.click("#explain")
    page.wait_for_selector("#overlay img")
    page.click("#compare")
    page.wait_for_selector("#compare-baseline img")
    expect(page.locator("#timings")).to_contain_text("Grad-CAM")

    page.click("#adic")
    expect(page.locator("#scores")).to_contain_text("AD / IC for Egyptian cat")
    expect(page.locator("#steps img")).to_have_count(3)
    page.click("#road")
    expect(page.locator("#scores")).to_contain_text("ROAD for Egyptian cat")
    expect(page.locator("#steps img")).to_have_count(14)
    expect(page.locator("#curves img")).to_be_visible()
    page.screenshot(path=str(tmp_path / "curves.png"), full_page=True)
    if os.environ.get("TTAME_SCREENSHOT"):
        page.screenshot(path=str(ROOT / os.environ["TTAME_SCREENSHOT"]), full_page=True)


def test_a_bad_file_shows_a_message(page, tmp_path):
    from playwright.sync_api import expect

    fake = tmp_path / "notes.jpg"
    fake.write_text("hello, I am not a picture")
    page.locator("#photo input[type=file]").set_input_files(str(fake))
    page.click("#explain")
    message = page.get_by_role("status").get_by_text("'notes.jpg' is not an image we can read")
    expect(message).to_be_visible()
    assert "0x" not in message.inner_text()
