"""Each model restores a real photo that was shrunk with bicubic: PSNR floors per model.

The GAN models (Real-ESRGAN, Real-CUGAN) invent plausible detail and score
below bicubic on PSNR by design, so they get sanity floors (a few dB under
what they measure here; a broken normalisation, padding or residual costs
far more). waifu2x is PSNR-oriented and must clearly beat bicubic.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from watercolor.processing.engine import Engine

# Centre crops (192x192) of real photos with texture and edges.
CROPS = {
    "astronaut": (100, 150),
    "coffee": (100, 200),
}

# model, native scale, PSNR floor (dB). Measured on these crops (astronaut / coffee):
# waifu2x-photo 33.4 / 33.7 (bicubic 29.5 / 30.5), waifu2x-anime 32.8 / 32.7, cunet 33.5 / 33.2,
# realcugan x2 27.2 / 28.7, x3 25.0 / 26.8, x4 23.9 / 25.6, animevideov3 x2 28.4 / 28.4,
# x3 25.5 / 26.3, x4 23.3 / 24.7, x4plus 21.3 / 24.5, x4plus-anime 20.4 / 23.5, lanczos x2 30.0 / 30.9.
FLOORS = [
    ("waifu2x-photo", 2, 31.0),
    ("waifu2x-anime", 2, 30.5),
    ("waifu2x-cunet", 2, 31.0),
    ("realcugan", 2, 25.0),
    ("realcugan", 3, 23.0),
    ("realcugan", 4, 22.0),
    ("realesr-animevideov3", 2, 26.0),
    ("realesr-animevideov3", 3, 23.5),
    ("realesr-animevideov3", 4, 21.5),
    ("realesrgan-x4plus", 4, 19.5),
    ("realesrgan-x4plus-anime", 4, 18.5),
    ("lanczos", 2, 28.5),
]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(threads=2)


def original(name: str) -> np.ndarray:
    import skimage.data

    top, left = CROPS[name]
    return getattr(skimage.data, name)()[top:top + 192, left:left + 192]


def shrunk(img: np.ndarray, scale: int) -> Image.Image:
    side = img.shape[0] // scale
    return Image.fromarray(img).resize((side, side), Image.Resampling.BICUBIC)


def psnr(result: np.ndarray, reference: np.ndarray) -> float:
    mse = np.mean((result.astype(np.float64) - reference.astype(np.float64) / 255.0) ** 2)
    return float(10 * np.log10(1.0 / mse))


@pytest.mark.parametrize("photo", list(CROPS))
@pytest.mark.parametrize("model,scale,floor", FLOORS, ids=[f"{m}-x{s}" for m, s, _ in FLOORS])
def test_model_restores_a_shrunk_photo(engine, model, scale, floor, photo):
    img = original(photo)
    small = np.asarray(shrunk(img, scale), dtype=np.float32) / 255.0
    result = engine.upscale(small, model, scale)
    assert result.shape == img.shape
    assert psnr(result, img) >= floor


@pytest.mark.parametrize("photo", list(CROPS))
def test_waifu2x_photo_beats_bicubic_by_2_db(engine, photo):
    img = original(photo)
    small = shrunk(img, 2)
    bicubic = np.asarray(small.resize(img.shape[1::-1], Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    result = engine.upscale(np.asarray(small, dtype=np.float32) / 255.0, "waifu2x-photo", 2)
    assert psnr(result, img) >= psnr(bicubic, img) + 2.0
