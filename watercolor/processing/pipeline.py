"""The processing pipeline: encoded image bytes in, enlarged encoded image bytes out.

Theory of operation
-------------------
One request is a :class:`Job` handed through an ordered list of small steps,
every one with the same signature ``step(job) -> None``; each reads what the
steps before it left on the job and leaves its own result:

1. ``read_header`` - byte limit, empty input, format from the magic number,
   width and height from the header. No pixel is decoded.
2. ``check_limits`` - input pixels against ``WTC_MAX_INPUT_PIXELS``; the exact
   output size against ``WTC_MAX_OUTPUT_PIXELS`` and the output format's
   largest side; then the engine validates model, scale and options, and the
   largest image its chain of native passes builds (which may overshoot the
   output before the final resample) answers to ``WTC_MAX_OUTPUT_PIXELS`` too. A request
   that cannot succeed is refused here, before any memory is committed.
3. ``decode`` - the first frame or page, upright (EXIF orientation applied).
4. ``prepare`` - float32 RGB planes plus an alpha plane and flags (grey,
   16-bit, ICC profile). Fully transparent pixels get the colour of their
   visible neighbours ("bleeding"), so the model never sees the arbitrary
   (usually black) colour stored under alpha 0 and no dark fringe appears
   where the enlarged alpha edge meets the enlarged colour.
5. ``upscale`` - the colour through the engine (tiled); then the alpha
   channel, as a grey image, through the same model. The model keeps alpha
   edges as crisp as the colour edges it sits on (a resampler would blur a
   4x edge over several pixels) - the choice of Real-ESRGAN's own reference
   code. It doubles the work for images with real transparency, so an alpha
   plane that is constant (an opaque RGBA screenshot) skips that pass.
   Progress counts the tiles of both passes.
6. ``finish`` - back to the input's kind: grey stays grey (16-bit when the
   input had more than 8 bits), alpha is re-attached.
7. ``encode`` - PNG, JPEG or WebP (``same`` keeps PNG, JPEG and WebP inputs,
   anything else becomes PNG), carrying the ICC profile.

Every step drops what later steps no longer need. ``progress(done, total)``
is called once with ``done=0`` before the first tile (so a caller learns the
total, and may cancel, before any model work) and then after every tile of
both passes. An exception from it (the server's way to cancel) stops the work
between tiles and propagates unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from watercolor import errors
from watercolor.config import Settings
from watercolor.params import Params
from watercolor.processing import imageio
from watercolor.processing.engine import Engine

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Output:
    data: bytes
    mime: str
    format: str  # "png", "jpeg" or "webp"
    width: int
    height: int
    input_width: int  # upright, after EXIF orientation
    input_height: int


@dataclass
class Job:
    """Everything one request's steps share; each step fills in its own fields."""

    data: bytes
    params: Params
    settings: Settings
    engine: Engine
    progress: Progress | None
    header: imageio.Header | None = None
    out_format: str = ""
    in_size: tuple[int, int] = (0, 0)  # (width, height) upright, known once decoded
    image: Image.Image | None = None
    pixels: imageio.Pixels | None = None
    icc: bytes | None = None
    result: Image.Image | None = None
    output: Output | None = None


Step = Callable[[Job], None]


def read_header(job: Job) -> None:
    job.header = imageio.read_header(job.data, max_bytes=job.settings.max_image_bytes,
                                     max_pixels=job.settings.max_input_pixels)


def check_limits(job: Job) -> None:
    header, params = _need(job.header), job.params
    job.out_format = imageio.output_format(params.format, header.format)
    limit = job.settings.max_output_pixels
    imageio.check_output(header.width, header.height, params.scale, job.out_format, max_pixels=limit)
    job.engine.validate(params.model, params.scale, params.options)
    # A chain of native passes may overshoot the output before the final resample; that
    # intermediate image is held whole, so it answers to the same cap.
    height, width = job.engine.largest_image(header.height, header.width, params.model, params.scale,
                                             options=params.options)
    if height * width > limit:
        raise errors.OutputTooLarge(
            f"{params.model} reaches {params.scale:g}x through a {width}x{height} = {height * width} pixel "
            f"image; the limit is {limit} (a native scale of the model needs no larger image)")


def decode(job: Job) -> None:
    job.image = imageio.decode(job.data, _need(job.header))
    job.in_size = job.image.size


def prepare(job: Job) -> None:
    pixels = imageio.to_pixels(_need(job.image))
    job.image = None
    if pixels.alpha is not None:
        bleed(pixels.colour, pixels.alpha)
    job.pixels = pixels


def upscale(job: Job) -> None:
    pixels, params = _need(job.pixels), job.params
    alpha = pixels.alpha
    alpha_by_model = alpha is not None and float(alpha.min()) != float(alpha.max())
    tiles = job.engine.tile_count(pixels.height, pixels.width, params.model, params.scale,
                                  options=params.options, tile_size=params.tile_size)
    total = tiles * 2 if alpha_by_model else tiles
    if job.progress is not None:
        job.progress(0, total)

    pixels.colour = _enlarge(job, pixels.colour, _shifted(job.progress, 0, total))
    if alpha is not None and alpha_by_model:
        grey = _enlarge(job, np.repeat(alpha[:, :, None], 3, axis=2), _shifted(job.progress, tiles, total))
        pixels.alpha = np.clip(grey.mean(axis=2, dtype=np.float32), 0.0, 1.0)
    elif alpha is not None:
        pixels.alpha = np.full(pixels.colour.shape[:2], alpha.flat[0], dtype=np.float32)


def finish(job: Job) -> None:
    pixels = _need(job.pixels)
    job.pixels = None
    job.result = imageio.to_image(pixels.colour, pixels.alpha, grey=pixels.grey, deep=pixels.deep)
    job.icc = pixels.icc


def encode(job: Job) -> None:
    result = _need(job.result)
    expected = imageio.output_size(*job.in_size, job.params.scale)
    if result.size != expected:
        raise errors.InternalError(f"the engine made {result.size}, not the promised {expected}")
    data = imageio.encode(result, job.out_format, quality=job.params.quality, icc=job.icc)
    job.result = None
    job.output = Output(data=data, mime=imageio.MIME_TYPES[job.out_format], format=job.out_format.lower(),
                        width=result.width, height=result.height,
                        input_width=job.in_size[0], input_height=job.in_size[1])


STEPS: tuple[Step, ...] = (read_header, check_limits, decode, prepare, upscale, finish, encode)


class Pipeline:
    """Runs :data:`STEPS` for one image at a time per call; safe to call from many threads."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        imageio.configure(settings.max_input_pixels)

    def run(self, data: bytes, params: Params, *, progress: Progress | None = None) -> Output:
        job = Job(data=data, params=params, settings=self.settings, engine=self.engine, progress=progress)
        for step in STEPS:
            step(job)
        assert job.output is not None
        return job.output


# --- helpers -------------------------------------------------------------------------------------


def bleed(colour: np.ndarray, alpha: np.ndarray) -> None:
    """Give fully transparent pixels the colour of the nearest visible ones, in place.

    First the rings of holes around visible pixels take the alpha-weighted mean
    of their visible neighbours (two rings: the pixels a model's edge output
    leans on most). Then a push-pull fill does the rest: alpha-weighted colour
    sums over 2x2 blocks, level by level down to where every block sees
    something; each remaining hole takes its block's colour one level coarser.
    Linear in the pixel count; full-size temporaries are one channel or one
    band of rows at a time.
    """
    holes = alpha <= 0
    if not holes.any() or holes.all():
        return
    weight = alpha.astype(np.float32, copy=True)
    for _ in range(_RINGS):
        _grow(colour, weight, holes)
    if holes.any():
        sums = np.stack([_block_sums(colour[:, :, c] * weight) for c in range(3)], axis=2)
        _fill_holes(colour, holes, _push_pull(sums, _block_sums(weight)))


_RINGS = 2
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def _grow(colour: np.ndarray, weight: np.ndarray, holes: np.ndarray) -> None:
    """Fill the holes that touch a filled pixel with the weighted mean of their filled neighbours."""
    height, width = holes.shape
    filled = np.pad(~holes, 1)
    touching = np.zeros_like(holes)
    for dy, dx in _NEIGHBOURS:
        touching |= filled[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
    ys, xs = np.nonzero(holes & touching)
    if not len(ys):
        return
    sums = np.zeros((len(ys), 3), np.float32)
    weights = np.zeros(len(ys), np.float32)
    for dy, dx in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        ny, nx = np.clip(ny, 0, height - 1), np.clip(nx, 0, width - 1)
        w = np.where(inside & ~holes[ny, nx], weight[ny, nx], 0.0).astype(np.float32)
        sums += colour[ny, nx] * w[:, None]
        weights += w
    colour[ys, xs] = sums / weights[:, None]
    weight[ys, xs] = weights / len(_NEIGHBOURS)
    holes[ys, xs] = False


def _push_pull(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Colour everywhere, from alpha-weighted colour sums and the sums of their weights."""
    empty = weights <= 0
    colour = np.divide(sums, weights[:, :, None], out=np.zeros_like(sums), where=~empty[:, :, None])
    if empty.any():
        _fill_holes(colour, empty, _push_pull(_block_sums(sums), _block_sums(weights)))
    return colour


_BAND = 256  # rows filled at once (even), so the enlarged coarse colour is never a full-size copy


def _fill_holes(colour: np.ndarray, holes: np.ndarray, coarse: np.ndarray) -> None:
    """Where ``holes``, copy the colour of the 2x2 block's pixel in the half-size ``coarse``."""
    height, width = holes.shape
    for top in range(0, height, _BAND):
        band = holes[top:top + _BAND]
        if band.any():
            enlarged = coarse[top // 2:(top + _BAND) // 2].repeat(2, axis=0).repeat(2, axis=1)
            np.copyto(colour[top:top + _BAND], enlarged[:band.shape[0], :width], where=band[:, :, None])


def _enlarge(job: Job, rgb: np.ndarray, progress: Progress | None) -> np.ndarray:
    params = job.params
    return job.engine.upscale(rgb, params.model, params.scale, options=params.options,
                              tile_size=params.tile_size, progress=progress)


def _shifted(progress: Progress | None, offset: int, total: int) -> Progress | None:
    """A pass's progress as part of the whole job's: tiles before this pass count as done."""
    if progress is None:
        return None
    return lambda done, _pass_total: progress(offset + done, total)


def _block_sums(array: np.ndarray) -> np.ndarray:
    """Sums over 2x2 blocks of the first two axes (an odd last row or column padded with 0)."""
    height, width = array.shape[:2]
    if height % 2 or width % 2:
        array = np.pad(array, [(0, height % 2), (0, width % 2)] + [(0, 0)] * (array.ndim - 2))
    return array[0::2, 0::2] + array[1::2, 0::2] + array[0::2, 1::2] + array[1::2, 1::2]


T = TypeVar("T")


def _need(value: T | None) -> T:
    """A field an earlier step must have filled in."""
    if value is None:
        raise errors.InternalError("pipeline steps ran out of order")
    return value
