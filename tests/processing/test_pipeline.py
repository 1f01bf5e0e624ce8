"""The whole pipeline on real images through the real engine.

Lanczos where the model does not matter (fast); realesr-animevideov3 and waifu2x-photo (the
fastest networks) where it does: alpha, grey and tiny sizes through a network.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms
from test_imageio import (
    JPEG_BYTES,
    MODES,
    SRGB_ICC,
    astronaut,
    chelsea,
    cutout,
    encode,
    page,
    png_declaring,
    psnr,
    ramp16,
    tiff,
)

from watercolor import errors
from watercolor.config import load_settings
from watercolor.params import Params, output_size
from watercolor.processing import pipeline as pipeline_module
from watercolor.processing.engine import Engine
from watercolor.processing.pipeline import Output, Pipeline

FAST_MODELS = ["realesr-animevideov3", "waifu2x-photo"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(threads=2)


@pytest.fixture
def make_pipeline(engine):
    """Pipelines with settings overrides; restores Pillow's process-wide pixel guard afterwards."""
    before = Image.MAX_IMAGE_PIXELS

    def make(**overrides) -> Pipeline:
        return Pipeline(load_settings({}, threads=2, **overrides), engine)

    yield make
    Image.MAX_IMAGE_PIXELS = before


@pytest.fixture
def pipeline(make_pipeline) -> Pipeline:
    return make_pipeline()


def opened(output: Output) -> Image.Image:
    image = Image.open(io.BytesIO(output.data))
    image.load()
    assert image.format.lower() == output.format
    assert image.size == (output.width, output.height)
    assert Image.MIME[image.format] == output.mime
    return image


def enlarged(reference: np.ndarray, size: tuple[int, int], top: float = 255) -> np.ndarray:
    """Pillow's Lanczos on every channel as float, colour premultiplied when there is alpha."""
    planes = np.asarray(reference, np.float64)
    planes = planes[:, :, None] if planes.ndim == 2 else planes
    planes = premultiplied(planes)
    out = [np.asarray(Image.fromarray(planes[:, :, c].astype(np.float32), "F").resize(
        size, Image.Resampling.LANCZOS)) for c in range(planes.shape[2])]
    return np.clip(np.squeeze(np.stack(out, axis=2)), 0, top)


def shrunk(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks: a faithful enlargement shrinks back to its input."""
    height, width = image.shape[0] // factor, image.shape[1] // factor
    planes = np.asarray(image, np.float64).reshape(height, factor, width, factor, -1)
    return np.squeeze(planes.mean(axis=(1, 3)))


def premultiplied(planes: np.ndarray) -> np.ndarray:
    """Colour times alpha (0..1) where the last of 2 or 4 channels is alpha: what a viewer shows."""
    planes = np.asarray(planes, np.float64)
    if planes.ndim == 3 and planes.shape[2] in (2, 4):
        planes = planes.copy()
        planes[:, :, :-1] *= planes[:, :, -1:] / 255.0
    return planes


# --- every mode, every format -------------------------------------------------------------------


@pytest.mark.parametrize("name", MODES)
def test_every_mode_comes_back_in_its_own_mode_enlarged(pipeline, name):
    case = MODES[name]
    reference = case.reference()
    output = pipeline.run(case.data(), Params("lanczos", 2.0))
    image = opened(output)
    height, width = reference.shape[:2]
    assert (output.width, output.height) == (2 * width, 2 * height)
    assert (output.input_width, output.input_height) == (width, height)
    assert image.mode == case.mode
    expected = enlarged(reference, image.size, case.data_range)
    assert psnr(expected, premultiplied(np.asarray(image)), case.data_range) > min(case.min_psnr, 30)


def test_a_16_bit_ramp_does_not_clip(pipeline):
    for data in (encode(Image.fromarray(ramp16(256, 4)), "PNG"), tiff(ramp16(256, 4))):
        image = opened(pipeline.run(data, Params("lanczos", 2.0)))
        values = np.asarray(image)
        assert (image.format, image.mode, values.dtype) == ("PNG", "I;16", np.uint16)
        assert np.mean(values == 65535) < 0.01 and np.mean(values == 0) < 0.01
        assert len(np.unique(values)) > 400  # far more levels than 8 bits hold
        middle = values[:, 200:312].astype(np.float64)  # around 32768 in the source
        assert abs(middle.mean() - 32767.5) < 200
        assert np.all(np.diff(values[:, 8:-8].astype(np.int64), axis=1) >= 0)  # still a ramp


@pytest.mark.parametrize("requested, source, expected", [
    ("same", "JPEG", "jpeg"), ("same", "WEBP", "webp"), ("same", "PNG", "png"), ("same", "GIF", "png"),
    ("same", "BMP", "png"), ("same", "TIFF", "png"), ("png", "JPEG", "png"), ("jpeg", "PNG", "jpeg"),
    ("webp", "JPEG", "webp"),
])
def test_output_format(pipeline, requested, source, expected):
    output = pipeline.run(encode(astronaut(), source), Params("lanczos", 1.5, format=requested))
    assert output.format == expected
    assert psnr(enlarged(np.asarray(astronaut()), (72, 60)), np.asarray(opened(output).convert("RGB"))) > 25


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_icc_profile_reaches_the_output(pipeline, fmt):
    data = encode(astronaut(), "JPEG", icc_profile=SRGB_ICC)
    image = opened(pipeline.run(data, Params("lanczos", 2.0, format=fmt)))
    assert image.info.get("icc_profile") == SRGB_ICC
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"])))


@pytest.mark.parametrize("orientation, stored", [
    (6, Image.Transpose.ROTATE_90),
    (8, Image.Transpose.ROTATE_270),
], ids=["6", "8"])
def test_exif_rotated_jpeg_comes_out_upright(pipeline, orientation, stored):
    upright = chelsea()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(upright.transpose(stored), "JPEG", quality=95, exif=exif)
    output = pipeline.run(data, Params("lanczos", 2.0, format="jpeg"))
    image = opened(output)
    assert (output.input_width, output.input_height) == upright.size
    assert image.size == (180, 120)
    assert psnr(enlarged(np.asarray(upright), image.size), np.asarray(image)) > 28
    assert image.getexif().get(0x0112) is None


# --- alpha --------------------------------------------------------------------------------------


def red_disc(size: int = 48) -> Image.Image:
    """An opaque red disc with an anti-aliased rim on transparent *black*: the fringe trap."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    radius = np.hypot(yy - size / 2, xx - size / 2)
    alpha = np.clip(size / 3 - radius + 0.5, 0, 1)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[alpha > 0, 0] = 255
    rgba[..., 3] = np.round(alpha * 255)
    return Image.fromarray(rgba)


@pytest.mark.parametrize("model, scale", [("lanczos", 4.0), ("waifu2x-photo", 2.0),
                                          ("realesr-animevideov3", 2.0)])
def test_alpha_edges_have_no_dark_fringe(pipeline, engine, model, scale):
    output = pipeline.run(encode(red_disc(), "PNG"), Params(model, scale))
    rgba = np.asarray(opened(output)).astype(np.int64)
    rim = rgba[..., 3] > 8  # every pixel one can see, including the faint edge
    assert rim.sum() > 1000
    assert rgba[rim, 0].min() >= 235, "edge pixels must stay red"
    assert rgba[rim, 1:3].max() <= 20
    coverage = rgba[..., 3].sum() / scale**2 / np.asarray(red_disc())[..., 3].astype(np.int64).sum()
    assert abs(coverage - 1) < 0.02  # the disc keeps its area

    # The control: the same colour without bleeding does go dark at the rim.
    naive = engine.upscale(np.asarray(red_disc().convert("RGB"), np.float32) / 255, model, scale)
    assert (naive[rim, 0] * 255).min() < 200


def test_alpha_goes_through_the_model_and_counts_in_progress(pipeline, engine):
    image = cutout()
    calls: list[tuple[int, int]] = []
    output = pipeline.run(encode(image, "PNG"), Params("waifu2x-photo", 2.0, tile_size=32),
                          progress=lambda done, total: calls.append((done, total)))
    got = np.asarray(opened(output))
    assert got.shape == (120, 120, 4)
    per_pass = engine.tile_count(60, 60, "waifu2x-photo", 2.0, tile_size=32)
    assert per_pass > 1
    total = 2 * per_pass
    assert calls == [(n, total) for n in range(total + 1)]
    source = np.asarray(image)
    assert psnr(source[..., 3], shrunk(got[..., 3], 2)) > 28  # the alpha itself
    assert psnr(premultiplied(source), shrunk(premultiplied(got), 2)) > 29  # what one sees


def test_opaque_alpha_skips_the_second_pass(pipeline):
    """skimage's logo is RGBA with every pixel opaque: one pass, RGBA out, still opaque."""
    import skimage.data

    logo = Image.fromarray(skimage.data.logo()).resize((50, 50), Image.Resampling.LANCZOS)
    calls: list[tuple[int, int]] = []
    output = pipeline.run(encode(logo, "PNG"), Params("waifu2x-photo", 2.0),
                          progress=lambda done, total: calls.append((done, total)))
    got = np.asarray(opened(output))
    assert got.shape == (100, 100, 4) and np.all(got[..., 3] == 255)
    assert calls[-1] == (1, 1)
    assert psnr(enlarged(np.asarray(logo), (100, 100)), got.astype(np.float64)) > 24


def test_grey_through_a_model_stays_grey(pipeline):
    output = pipeline.run(encode(page(), "PNG"), Params("waifu2x-photo", 2.0))
    image = opened(output)
    assert image.mode == "L"
    assert psnr(enlarged(np.asarray(page()), image.size), np.asarray(image)) > 24


def test_bleed_fills_holes_from_the_nearest_visible_colour():
    colour = np.zeros((9, 12, 3), np.float32)
    alpha = np.zeros((9, 12), np.float32)
    colour[1:3, 1:3], alpha[1:3, 1:3] = (1, 0, 0), 1.0  # red, top left
    colour[6:8, 9:11], alpha[6:8, 9:11] = (0, 0, 1), 0.5  # half-transparent blue, bottom right
    pipeline_module.bleed(colour, alpha)
    assert np.allclose(colour[0, 0], (1, 0, 0)) and np.allclose(colour[3, 3], (1, 0, 0))
    assert np.allclose(colour[8, 11], (0, 0, 1)) and np.allclose(colour[5, 8], (0, 0, 1))
    assert np.allclose(colour[1:3, 1:3], (1, 0, 0)) and np.allclose(colour[6:8, 9:11], (0, 0, 1))
    assert np.all(colour.sum(axis=2) > 0.99)  # no hole left black


# --- sizes ----------------------------------------------------------------------------------------


SIZES = [(1, 1), (2, 2), (33, 17), (1, 40)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("model, scale", [("lanczos", 1.5), ("lanczos", 3.0)]
                         + [(m, 2.0) for m in FAST_MODELS])
def test_tiny_and_odd_sizes_come_out_exact(pipeline, model, scale, size):
    image = astronaut().resize(size, Image.Resampling.BOX)
    output = pipeline.run(encode(image, "PNG"), Params(model, scale))
    expected = output_size(*size, scale)
    assert (output.width, output.height) == expected
    assert opened(output).size == expected


# --- refusals -----------------------------------------------------------------------------------


def _wide_png(width: int) -> bytes:
    return encode(Image.new("RGB", (width, 1), (200, 100, 50)), "PNG")


@pytest.mark.parametrize("fmt, largest", [("jpeg", 65500), ("webp", 16383)])
def test_each_format_writes_its_largest_side_and_refuses_one_more(make_pipeline, fmt, largest):
    """The limits are what the encoders really take (libjpeg stops at 65500, not 65535)."""
    pipeline = make_pipeline()
    out = pipeline.run(_wide_png(largest), Params("lanczos", 1.0, format=fmt), progress=None)
    assert (out.width, out.height) == (largest, 1)
    with pytest.raises(errors.OutputTooLarge):
        pipeline.run(_wide_png(largest + 1), Params("lanczos", 1.0, format=fmt), progress=None)


@pytest.mark.parametrize("data, params, settings, error", [
    (b"", Params("lanczos", 2.0), {}, errors.EmptyImage),
    (b"not an image, whatever its name says\n", Params("lanczos", 2.0), {}, errors.UnsupportedFormat),
    (JPEG_BYTES[: int(len(JPEG_BYTES) * 0.7)], Params("lanczos", 2.0), {}, errors.CorruptImage),
    (png_declaring(13500, 13500), Params("lanczos", 2.0), {}, errors.ImageTooLarge),
    (encode(astronaut(), "PNG"), Params("lanczos", 8.0), {"max_output_pixels": 100_000},
     errors.OutputTooLarge),
    (_wide_png(2048), Params("lanczos", 8.0, format="webp"), {}, errors.OutputTooLarge),
    (_wide_png(2048), Params("lanczos", 8.0, format="png"), {}, None),  # the control
    (encode(astronaut(), "PNG"), Params("lanczos", 2.0), {"max_image_bytes": 1000},
     errors.PayloadTooLarge),
    (encode(astronaut(), "PNG"), Params("no-such-model", 2.0), {}, errors.UnknownModel),
    (encode(astronaut(), "PNG"), Params("waifu2x-photo", 2.0, options={"denoise": 9}), {},
     errors.InvalidParameter),
    # Order: every check that needs no pixels comes before decoding.
    (JPEG_BYTES[: int(len(JPEG_BYTES) * 0.7)], Params("no-such-model", 2.0), {}, errors.UnknownModel),
    (JPEG_BYTES[: int(len(JPEG_BYTES) * 0.7)], Params("lanczos", 8.0), {"max_output_pixels": 100_000},
     errors.OutputTooLarge),
    (png_declaring(13500, 13500), Params("no-such-model", 2.0), {}, errors.ImageTooLarge),
    (b"", Params("no-such-model", 2.0), {}, errors.EmptyImage),
    (b"x" * 2000, Params("lanczos", 2.0), {"max_image_bytes": 1000}, errors.PayloadTooLarge),
    # 50x50 out fits 3000 pixels, but 2x then 3x builds 60x60 on the way.
    (encode(astronaut().resize((10, 10)), "PNG"), Params("realesr-animevideov3", 5.0),
     {"max_output_pixels": 3000}, errors.OutputTooLarge),
], ids=["zero-bytes", "text-file", "jpeg-cut-at-70%", "png-13500x13500", "over-output-cap",
        "webp-over-16383", "png-16384-is-fine", "over-byte-limit", "unknown-model", "bad-option",
        "model-before-decoding", "output-cap-before-decoding", "input-cap-before-model",
        "empty-before-model", "byte-limit-before-format", "intermediate-over-output-cap"])
def test_bad_requests_are_refused_before_work(make_pipeline, data, params, settings, error):
    calls: list[tuple[int, int]] = []

    def run() -> Output:
        return make_pipeline(**settings).run(data, params, progress=lambda d, t: calls.append((d, t)))

    if error is None:
        assert run().width == 16384
        return
    with pytest.raises(error):
        run()
    assert calls == []


def test_an_exception_from_progress_stops_the_work(pipeline):
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 2:
            raise errors.Cancelled("client went away")

    with pytest.raises(errors.Cancelled):
        pipeline.run(encode(astronaut((64, 64)), "PNG"), Params("waifu2x-photo", 2.0, tile_size=16),
                     progress=progress)
    assert [done for done, _ in calls] == [0, 1, 2]
    assert calls[0][1] > 2
