"""The web page in headless Chromium against a real API and backend: upload, watch, compare, download."""

from __future__ import annotations

import io
import zipfile

from apitools import FAST_MODEL
from PIL import Image

#: The progress values the overall bar takes, recorded by the page itself as they are set.
RECORD_PROGRESS = """() => {
  window.seenProgress = [];
  const bar = document.querySelector('#overall');
  new MutationObserver(() => window.seenProgress.push(Number(bar.value)))
    .observe(bar, {attributes: true, attributeFilter: ['value']});
}"""

#: Every form control with no accessible name: no <label>, aria-label or aria-labelledby.
UNLABELLED = """() => [...document.querySelectorAll('input, select, button, progress, a.button')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
  .map(el => el.outerHTML.slice(0, 120))"""

RESULT_SHOWN = """() => { const img = document.querySelector('.compare img.after');
  return Boolean(img && img.complete && img.naturalWidth > 0); }"""


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def choose(page, path, *, scale: str, tile_size: str | None = None, model: str = FAST_MODEL) -> None:
    page.wait_for_function("() => document.querySelector('#model').options.length > 0")
    page.set_input_files("#files", str(path))
    page.select_option("#model", model)
    page.fill("#scale", scale)
    if tile_size:
        page.click("details.advanced summary")
        page.fill("#tile_size", tile_size)


def test_a_photo_is_upscaled_watched_compared_and_downloaded(stack, page, tmp_path, artifacts):
    source = _photo("astronaut").crop((96, 0, 352, 256))  # 256 px: 64 tiles of 32 px
    path = tmp_path / "astronaut.png"
    source.save(path)

    page.goto(stack.url + "/")
    assert page.title().startswith("Watercolor")
    choose(page, path, scale="2", tile_size="32")
    assert "anime" in page.inner_text("#model-about")  # each model is described
    assert page.inner_text("#chosen").count("astronaut.png") == 1
    page.evaluate(RECORD_PROGRESS)
    page.click("#start")

    page.wait_for_function("() => document.querySelector('#job').dataset.state === 'done'")
    seen = page.evaluate("() => window.seenProgress")
    assert seen[-1] == 100 and seen == sorted(seen), seen
    assert page.eval_on_selector(".card progress", "bar => bar.value") == 100
    assert "1 of 1 done" in page.inner_text("#overall-text")

    page.wait_for_function(RESULT_SHOWN)
    page.locator(".compare .slider").fill("35")
    split = page.eval_on_selector(".compare", "box => box.style.getPropertyValue('--split')")
    assert split == "35%"

    with page.expect_download() as download:
        page.click(".card a.download")
    assert download.value.suggested_filename == "astronaut_x2.png"
    result = Image.open(download.value.path())
    assert result.size == (512, 512)

    with page.expect_download() as download:
        page.click("#zip")
    with zipfile.ZipFile(download.value.path()) as archive:
        assert archive.namelist() == ["astronaut_x2.png"]
        assert Image.open(io.BytesIO(archive.read("astronaut_x2.png"))).size == (512, 512)

    assert page.evaluate(UNLABELLED) == []
    page.screenshot(path=str(artifacts / "web-desktop.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.wait_for_timeout(200)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.locator(".compare").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "web-phone.png"), full_page=True)


def test_a_running_job_can_be_cancelled_from_the_page(stack, page, tmp_path):
    path = tmp_path / "big.png"
    _photo("astronaut").save(path)  # 512 px: 256 tiles, seconds of work
    page.goto(stack.url + "/")
    choose(page, path, scale="2", tile_size="32")
    page.click("#start")
    page.wait_for_function("() => /of 256 tiles/.test(document.querySelector('#results').textContent)")
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#job').dataset.state === 'cancelled'")
    assert page.inner_text(".card-state").lower() == "cancelled"
    assert "cancelled" in page.inner_text(".card-error")
    assert page.is_hidden("#zip")
