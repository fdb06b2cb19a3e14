"""The browser UI in a real browser: `cellpaint ui` serves the page, drive Debian's headless Chromium
with Playwright, paint a stroke, restore in direct mode (tiny random model), and upload a bad file.

Select with `-m browser`. Skips when /usr/bin/chromium, playwright, streamlit or
streamlit-drawable-canvas is missing (apt-get install chromium; pip install -r requirements-ui.txt).
CELLPAINT_SCREENSHOT=path saves a screenshot of the page with its result (docs/ui.png);
CELLPAINT_UI_TEST_WEIGHTS=weights.safetensors runs the app on other weights than the tiny ones.
"""
from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import synthetic_cell
from tests.ui.server import Ui

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 90_000  # first page load imports torch in the server; a 2-core CI machine is slow


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    for mod, pkg in (("playwright", "playwright"), ("streamlit", "streamlit"),
                     ("streamlit_drawable_canvas", "streamlit-drawable-canvas")):
        if importlib.util.find_spec(mod) is None:
            return f"{pkg} is not installed (pip install -r requirements-ui.txt)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


@pytest.fixture(scope="module")
def app(tiny_weights, tmp_path_factory):
    """The page under `cellpaint ui` (loopback, a free port), on the tiny random model."""
    weights = os.environ.get("CELLPAINT_UI_TEST_WEIGHTS") or str(tiny_weights)
    ui = Ui(tmp_path_factory.mktemp("streamlit") / "streamlit.log", timeout=60,
            env={"CELLPAINT_WEIGHTS": weights, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"})
    try:
        yield ui.url
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, app):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(app)
    pg.get_by_text("cellpaint: paint a mask, restore the cell").wait_for()
    yield pg
    ctx.close()


def _write_png(path: Path, arr) -> Path:
    from shared.imaging.images import png_bytes

    path.write_bytes(png_bytes(arr))
    return path


def _upload(page, path: Path) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))


def _canvas(page):
    """The drawing surface (fabric's upper canvas): inline in the page with streamlit-drawable-canvas
    0.13 (components v2), inside a component iframe with older versions."""
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        for frame in page.frames:
            loc = frame.locator("canvas.upper-canvas")
            if loc.count():
                return loc.first
        page.wait_for_timeout(250)
    raise AssertionError("no drawing canvas on the page")


def _no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()
    assert "Traceback" not in page.content()


def test_paint_and_restore_direct(page, tmp_path):
    from playwright.sync_api import expect

    img = _write_png(tmp_path / "cell.png", synthetic_cell(np.random.default_rng(3), 120, 124))
    _upload(page, img)
    page.get_by_text("Paint the mask").wait_for()
    expect(page.get_by_text("64×64 pixels inside the masked region", exact=False)).to_be_visible()
    expect(page.get_by_text("white = restore", exact=False).first).to_be_visible()

    steps = page.get_by_label("Steps", exact=True)
    steps.fill("3")
    steps.press("Enter")
    expect(steps).to_have_value("3")
    samples = page.get_by_label("Samples", exact=True)
    samples.fill("2")
    samples.press("Enter")
    expect(samples).to_have_value("2")

    canvas = _canvas(page)
    canvas.wait_for(state="visible")
    page.wait_for_timeout(500)  # let the background image load
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.45
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 16):
        page.mouse.move(x0 + i * box["width"] * 0.025, y0 + i * box["height"] * 0.01, steps=2)
    page.mouse.up()
    # the drawing goes back to Python: the page reports a non-empty mask
    expect(page.get_by_text(re.compile(r"Mask: [1-9]\d* px to restore"))).to_be_visible()

    page.get_by_role("button", name="Restore").click()
    expect(page.get_by_role("heading", name="Result")).to_be_visible(timeout=TIMEOUT_MS)  # restoring on a busy 2-core machine
    result = page.locator('[data-testid="stImage"]').filter(has_text=re.compile(r"^Result$"))
    expect(result).to_have_count(1)
    expect(result.locator("img")).to_be_visible()
    assert result.locator("img").evaluate("i => i.naturalWidth") == 124
    expect(page.get_by_role("button", name="Download result (PNG)")).to_be_visible()
    expect(page.get_by_role("button", name="Download mask (PNG)")).to_be_visible()
    expect(page.locator('[data-testid="stImage"]').filter(has_text="Uncertainty").locator("img")).to_be_visible()
    _no_traceback(page)

    shot = os.environ.get("CELLPAINT_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        # Streamlit scrolls inside its own container, so a tall viewport shows the whole page
        page.set_viewport_size({"width": 1400, "height": 1450})
        page.wait_for_timeout(1000)
        page.screenshot(path=shot)


def test_bad_upload_is_a_message(page, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG, whatever its name says")
    _upload(page, bad)
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="broken.png")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("not a PNG, JPEG or TIFF file")
    assert page.locator("canvas.upper-canvas").count() == 0
    _no_traceback(page)
