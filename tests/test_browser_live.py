"""The Live tab and the top-5 maps in a real browser (Chromium, driven by Playwright).

The live test writes the example photos as a Y4M clip (planar 4:2:0), Chromium plays it as
its fake webcam, and the page, with the real MobileNetV2 default, must show a stream of
overlays: the overlay's picture and the frames-per-second line change again and again, and the
classes of the photos come and go. The same frame gives the same picture, which Gradio serves
as the same file, so the test counts changes of the picture, not distinct pictures. The top-5
test ticks the box
in the Explain tab and sees five captioned maps, recoloured with the main map.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_browser import CHROMIUM, FLAGS, ROOT, url  # noqa: F401 - the server fixture

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
SIZE = (320, 240)
FRAMES_PER_PHOTO = 5


def write_y4m(path: Path, photos: list[Path], size: tuple[int, int] = SIZE) -> Path:
    """The photos as a Y4M clip at 10 fps, each held for a few frames (planar I420)."""
    import cv2

    width, height = size
    with path.open("wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for photo in photos:
            rgb = np.asarray(Image.open(photo).convert("RGB").resize(size))
            planes = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()
            for _ in range(FRAMES_PER_PHOTO):
                file.write(b"FRAME\n" + planes)
    return path


def test_the_webcam_is_explained_frame_by_frame(url, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    photos = sorted((ROOT / "examples").glob("*.jpg"))
    camera = write_y4m(tmp_path / "webcam.y4m", photos)
    flags = [
        *FLAGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_role("tab", name="Live").click()
        page.get_by_text("Click to Access Webcam").click()
        page.locator("#webcam button[aria-label='capture photo']").click()
        expect(page.locator("#live-info")).to_contain_text("fps", timeout=60_000)
        sources, lines = [""], set()  # identical overlays are one file: count the changes
        deadline = time.monotonic() + 60
        while (len(sources) < 6 or len(lines) < 5) and time.monotonic() < deadline:
            source = page.locator("#live-overlay img").get_attribute("src")
            if source != sources[-1]:
                sources.append(source)
            lines.add(page.locator("#live-info").inner_text())
            time.sleep(0.1)
        assert len(set(sources)) >= 4 and len(sources) >= 6 and len(lines) >= 5, (sources, lines)
        assert any("Egyptian cat" in line or "tabby" in line for line in lines), lines
        size = page.evaluate(
            "() => { const i = document.querySelector('#live-overlay img');"
            " return [i.naturalWidth, i.naturalHeight]; }"
        )
        assert size == list(SIZE)  # the frame's own size
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        browser.close()


def test_the_top5_maps_side_by_side(url, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.locator("#photo input[type=file]").set_input_files(str(ROOT / "examples/chelsea.jpg"))
        page.wait_for_selector("#photo img")
        expect(page.locator("#top5-gallery")).to_be_hidden()
        page.locator("#top5-maps input").check()
        expect(page.locator("#top5-gallery img")).to_have_count(5)
        expect(page.locator("#top5-gallery")).to_contain_text("Egyptian cat — ")
        first = page.locator("#top5-gallery img").first.get_attribute("src")
        colours = page.locator("#colormap input")
        colours.click()
        page.locator("ul[role=listbox] li").filter(has_text="gray").first.click()
        expect(page.locator("#top5-gallery img").first).not_to_have_attribute("src", first or "")
        page.locator("#top5-maps input").uncheck()
        expect(page.locator("#top5-gallery")).to_be_hidden()
        browser.close()
