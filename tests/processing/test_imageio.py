"""Image I/O on its own: format sniffing, limits, every decodable mode, orientation, ICC, encoders.

No engine here: images go bytes -> header -> decode -> float planes -> image -> bytes at the
same size, and come back compared with the original by PSNR.
"""

from __future__ import annotations

import importlib.resources
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image, ImageCms
from skimage.metrics import peak_signal_noise_ratio

from watercolor import errors
from watercolor.processing import imageio

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 40_000_000}
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- real photos, small ------------------------------------------------------------------------


def astronaut(size: tuple[int, int] = (48, 40)) -> Image.Image:
    """The face of skimage's astronaut photo: detail, skin and fabric."""
    return Image.fromarray(skimage.data.astronaut()).crop((150, 60, 150 + size[0], 60 + size[1]))


def chelsea() -> Image.Image:
    """A real 451x300 photo (landscape, so a rotation shows in its size), shrunk to 90x60."""
    return Image.fromarray(skimage.data.chelsea()).resize((90, 60), Image.Resampling.LANCZOS)


def page() -> Image.Image:
    """Scanned text in grayscale."""
    return Image.fromarray(skimage.data.page()).crop((40, 20, 104, 68))


def cutout() -> Image.Image:
    """skimage's logo with its white background made transparent (soft edges).

    The logo ships as RGBA with every pixel opaque; real cutouts have alpha.
    """
    rgba = skimage.data.logo()[100:400:5, 100:400:5].copy()  # 60x60
    whiteness = rgba[..., :3].min(axis=2).astype(np.float32)
    rgba[..., 3] = np.clip((255 - whiteness) * 4, 0, 255).astype(np.uint8)
    return Image.fromarray(rgba)


def ramp16(width: int = 256, height: int = 4) -> np.ndarray:
    """A horizontal ramp over the whole 16-bit range."""
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def skimage_file(name: str) -> bytes:
    return (importlib.resources.files("skimage.data") / name).read_bytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes that claim width x height RGB pixels (the pixel data is short)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def webp_declaring(width: int, height: int) -> bytes:
    """A WebP extended-format header claiming a width x height canvas, and nothing else."""
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def roundtrip(data: bytes, fmt: str = "PNG", quality: int = 95) -> Image.Image:
    """Bytes through every imageio stage at the same size, back to an opened image."""
    header = imageio.read_header(data, **LIMITS)
    pixels = imageio.to_pixels(imageio.decode(data, header))
    image = imageio.to_image(pixels.colour, pixels.alpha, grey=pixels.grey, deep=pixels.deep)
    out = Image.open(io.BytesIO(imageio.encode(image, fmt, quality=quality, icc=pixels.icc)))
    out.load()
    return out


def psnr(expected: np.ndarray, got: np.ndarray, data_range: float = 255) -> float:
    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    if np.array_equal(expected, got):
        return float("inf")
    return float(peak_signal_noise_ratio(expected, got, data_range=data_range))


# --- sniffing and limits -----------------------------------------------------------------------


@pytest.mark.parametrize("data, fmt", [
    (encode(astronaut(), "PNG"), "PNG"),
    (encode(astronaut(), "JPEG"), "JPEG"),
    (encode(astronaut(), "WEBP"), "WEBP"),
    (encode(astronaut(), "GIF"), "GIF"),
    (encode(astronaut(), "BMP"), "BMP"),
    (encode(astronaut(), "TIFF"), "TIFF"),
    (tiff(np.zeros((4, 4), np.uint8), bigtiff=True), "TIFF"),
], ids=["png", "jpeg", "webp", "gif", "bmp", "tiff", "bigtiff"])
def test_format_comes_from_the_bytes(data, fmt):
    assert imageio.sniff(data) == fmt
    assert imageio.read_header(data, **LIMITS).format == fmt


@pytest.mark.parametrize("data", [
    b"This is a text file, whatever its name says.\n" * 3,
    b"BMW is a car, not a bitmap",
    encode(astronaut(), "ICO"),
    encode(astronaut(), "TGA"),
    encode(astronaut(), "PPM"),
    encode(astronaut(), "JPEG2000"),
    b"\x00",
], ids=["text", "text-starting-BM", "ico", "tga", "ppm", "jpeg2000", "one-zero-byte"])
def test_other_bytes_are_an_unsupported_format(data):
    with pytest.raises(errors.UnsupportedFormat):
        imageio.read_header(data, **LIMITS)


JPEG_BYTES = encode(astronaut((200, 200)), "JPEG", quality=90)


@pytest.mark.parametrize("data, limits, error", [
    (b"", LIMITS, errors.EmptyImage),
    (b"x" * 101, {"max_bytes": 100, "max_pixels": 10**6}, errors.PayloadTooLarge),
    (b"", {"max_bytes": 0, "max_pixels": 10**6}, errors.EmptyImage),
    # 182 megapixels declared in a few hundred bytes whose pixel data is short: a decoder would
    # call it corrupt; refusing it as too large shows the pixels were never decoded.
    (png_declaring(13500, 13500), LIMITS, errors.ImageTooLarge),
    (png_declaring(101, 100), {"max_bytes": 10**6, "max_pixels": 10_000}, errors.ImageTooLarge),
    (webp_declaring(16383, 16383), LIMITS, errors.ImageTooLarge),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, LIMITS, errors.CorruptImage),
    (b"RIFF\x10\x00\x00\x00WEBPVP8Z" + bytes(12), LIMITS, errors.CorruptImage),
    (skimage_file("multipage_rgb.tif"), LIMITS, errors.CorruptImage),  # float64 planar: no reader
], ids=["empty", "over-byte-limit", "empty-beats-byte-limit", "png-13500x13500",
        "one-pixel-over-cap", "webp-canvas-over-cap", "png-magic-only", "webp-unknown-chunk",
        "tiff-variant-pillow-cannot-read"])
def test_header_checks(data, limits, error):
    with pytest.raises(error):
        imageio.read_header(data, **limits)


@pytest.fixture
def pillow_guard():
    """Restores Pillow's process-wide decompression-bomb limit after a test changes it."""
    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before


def test_the_13500_png_is_only_corrupt_to_a_decoder(pillow_guard):
    """The control for the case above: with the cap out of the way, decoding finds the lie."""
    data = png_declaring(13500, 13500)
    imageio.configure(10**9)
    header = imageio.read_header(data, max_bytes=10**6, max_pixels=10**9)
    assert (header.width, header.height) == (13500, 13500)
    with pytest.raises(errors.CorruptImage):
        imageio.decode(data, header)


def _flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("data", [
    JPEG_BYTES[: int(len(JPEG_BYTES) * 0.7)],
    encode(astronaut((200, 200)), "PNG")[:-3000],
    _flip_byte(encode(astronaut((200, 200)), "PNG", compress_level=1), 2000),
    encode(astronaut((200, 200)), "WEBP")[:-500],
    encode(astronaut((200, 200)), "GIF")[:-2000],
    encode(astronaut((200, 200)), "BMP")[:-2000],
    encode(astronaut((200, 200)), "TIFF")[:-2000],
], ids=["jpeg-cut-at-70%", "png-cut", "png-bad-crc", "webp-cut", "gif-cut", "bmp-cut", "tiff-cut"])
def test_truncated_or_corrupt_pixels_are_refused(data):
    with pytest.raises(errors.CorruptImage):  # from the header for WebP (libwebp demuxes it all)
        imageio.decode(data, imageio.read_header(data, **LIMITS))


@pytest.mark.parametrize("size, scale, fmt, cap, expected", [
    ((1, 1), 1.0, "PNG", 10**6, (1, 1)),
    ((2, 2), 4.0, "PNG", 10**6, (8, 8)),
    ((33, 17), 1.5, "PNG", 10**6, (50, 26)),  # 49.5 and 25.5 round up
    ((35, 21), 1.5, "PNG", 10**6, (53, 32)),  # 52.5 and 31.5 round up too (round() would give 52)
    ((1, 40), 3.0, "PNG", 10**6, (3, 120)),
    ((50, 10), 1.15, "PNG", 10**6, (58, 12)),  # 57.5 exactly, though 50 * 1.15 is 57.4999... in binary
    ((10, 30), 1.45, "PNG", 10**6, (15, 44)),  # 14.5 and 43.5: the same kind
    ((100, 100), 4.0, "PNG", 160_000, (400, 400)),
    ((100, 100), 4.0, "PNG", 159_999, errors.OutputTooLarge),
    ((2048, 10), 8.0, "WEBP", 10**9, errors.OutputTooLarge),  # 16384 wide
    ((10, 2047), 8.0, "WEBP", 10**9, (80, 16376)),
    ((8192, 1), 8.0, "JPEG", 10**9, errors.OutputTooLarge),  # 65536 wide
    ((8188, 1), 8.0, "JPEG", 10**9, errors.OutputTooLarge),  # 65504: libjpeg stops at 65500
    ((8187, 1), 8.0, "JPEG", 10**9, (65496, 8)),
    ((8192, 1), 8.0, "PNG", 10**9, (65536, 8)),
], ids=["1x1", "2x2-x4", "33x17-x1.5", "35x21-x1.5", "1x40-x3", "50x10-x1.15", "10x30-x1.45",
        "at-pixel-cap", "over-pixel-cap",
        "webp-16384", "webp-16376", "jpeg-65536", "jpeg-65504", "jpeg-65496", "png-65536"])
def test_output_size_and_caps(size, scale, fmt, cap, expected):
    if isinstance(expected, type):
        with pytest.raises(expected):
            imageio.check_output(*size, scale, fmt, max_pixels=cap)
    else:
        assert imageio.check_output(*size, scale, fmt, max_pixels=cap) == expected


def test_output_size_agrees_with_the_engine():
    from watercolor.processing.engine import output_size as engine_output_size

    for width in (1, 2, 17, 33, 40, 333):
        for height in (1, 3, 17, 40):
            for scale in (1.0, 1.1, 1.5, 2.0, 2.5, 3.0, 3.3, 4.0, 7.77, 8.0):
                assert imageio.output_size(width, height, scale) == \
                    engine_output_size(height, width, scale)[::-1]


@pytest.mark.parametrize("requested, input_format, expected", [
    ("png", "JPEG", "PNG"), ("jpeg", "PNG", "JPEG"), ("webp", "GIF", "WEBP"),
    ("same", "PNG", "PNG"), ("same", "JPEG", "JPEG"), ("same", "WEBP", "WEBP"),
    ("same", "GIF", "PNG"), ("same", "BMP", "PNG"), ("same", "TIFF", "PNG"),
])
def test_output_format(requested, input_format, expected):
    assert imageio.output_format(requested, input_format) == expected


# --- every mode Pillow produces, through the planes and back ------------------------------------


@dataclass(frozen=True)
class Case:
    data: Callable[[], bytes]
    mode: str  # what the output PNG must be
    reference: Callable[[], np.ndarray]  # what its pixels must look like
    min_psnr: float = 45.0
    data_range: float = 255


def _grey_palette() -> bytes:
    return encode(page().convert("P"), "PNG")


def _palette_with_transparency() -> bytes:
    image = cutout()
    palette_image = image.convert("RGB").quantize(64)
    alpha = np.asarray(image)[..., 3]
    indices = np.asarray(palette_image).copy()
    indices[alpha < 128] = 64  # one more palette entry, fully transparent
    out = Image.fromarray(indices, mode="P")
    out.putpalette(palette_image.getpalette()[: 64 * 3] + [0, 0, 0])
    return encode(out, "PNG", transparency=64)


def _palette_with_transparency_reference() -> np.ndarray:
    image = cutout()
    rgb = np.asarray(image.convert("RGB").quantize(64).convert("RGB"))
    alpha = np.where(np.asarray(image)[..., 3] < 128, 0, 255).astype(np.uint8)[..., None]
    return np.concatenate([np.where(alpha > 0, rgb, 0), alpha], axis=2)


def _with_visible_colour(rgba: np.ndarray) -> np.ndarray:
    """Zero the colour under alpha 0: it is not part of the picture and may change."""
    out = rgba.copy()
    out[out[..., -1] == 0] = 0
    return out


def _cmyk_reference() -> np.ndarray:
    return np.asarray(astronaut())


def _lab(image: Image.Image) -> Image.Image:
    return ImageCms.profileToProfile(image, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                     outputMode="LAB")


def _ycbcr_tiff() -> bytes:
    return encode(astronaut().convert("YCbCr"), "TIFF")


MODES: dict[str, Case] = {
    "rgb-png": Case(lambda: encode(astronaut(), "PNG"), "RGB", lambda: np.asarray(astronaut())),
    "rgba-png": Case(lambda: encode(cutout(), "PNG"), "RGBA",
                     lambda: _with_visible_colour(np.asarray(cutout()))),
    "l-png": Case(lambda: encode(page(), "PNG"), "L", lambda: np.asarray(page())),
    "la-png": Case(lambda: encode(cutout().convert("LA"), "PNG"), "LA",
                   lambda: _with_visible_colour(np.asarray(cutout().convert("LA")))),
    "1-png": Case(lambda: encode(page().convert("1"), "PNG"), "L",
                  lambda: np.asarray(page().convert("1").convert("L"))),
    "p-png": Case(lambda: encode(astronaut().quantize(64), "PNG"), "RGB",
                  lambda: np.asarray(astronaut().quantize(64).convert("RGB"))),
    "p-grey-palette": Case(_grey_palette, "L", lambda: np.asarray(page())),
    "p-transparency": Case(_palette_with_transparency, "RGBA", _palette_with_transparency_reference),
    "rgb-colour-key": Case(lambda: encode(astronaut(), "PNG", transparency=(255, 255, 255)), "RGBA",
                           lambda: np.dstack([np.asarray(astronaut()),
                                              np.where(np.all(np.asarray(astronaut()) == 255, 2), 0, 255)])),
    "l-colour-key": Case(lambda: encode(page(), "PNG", transparency=int(np.asarray(page())[0, 0])), "LA",
                         lambda: _with_visible_colour(np.dstack([
                             np.asarray(page()),
                             np.where(np.asarray(page()) == np.asarray(page())[0, 0], 0, 255)]))),
    "i16-png": Case(lambda: encode(Image.fromarray(ramp16()), "PNG"), "I;16", ramp16, 90, 65535),
    "i16-tiff": Case(lambda: tiff(ramp16()), "I;16", ramp16, 90, 65535),
    "i16-bigendian-tiff": Case(lambda: tiff(ramp16().astype(">u2")), "I;16", ramp16, 90, 65535),
    "i32-tiff": Case(lambda: tiff(ramp16().astype(np.int32)), "I;16", ramp16, 90, 65535),
    "i16-signed-tiff": Case(lambda: tiff((ramp16() >> 4).astype(np.int16)), "I;16",
                           lambda: ((ramp16() >> 4) * (65535 / 32767)).round(), 60, 65535),
    "f-tiff": Case(lambda: tiff(ramp16().astype(np.float32) / 65535), "I;16", ramp16, 90, 65535),
    "f-0-255-tiff": Case(lambda: tiff(np.asarray(page(), np.float32)), "I;16",
                         lambda: np.asarray(page()) * 257.0, 90, 65535),
    "cmyk-jpeg": Case(lambda: encode(astronaut().convert("CMYK"), "JPEG", quality=98), "RGB",
                      _cmyk_reference, 32),
    "cmyk-tiff": Case(lambda: encode(astronaut().convert("CMYK"), "TIFF"), "RGB", _cmyk_reference),
    "lab-tiff": Case(lambda: encode(_lab(astronaut()), "TIFF"), "RGB", lambda: np.asarray(astronaut()), 35),
    "ycbcr-tiff": Case(_ycbcr_tiff, "RGB", lambda: np.asarray(astronaut()), 35),
    "rgb16-tiff": Case(lambda: tiff(np.asarray(astronaut()).astype(np.uint16) * 257), "RGB",
                       lambda: np.asarray(astronaut())),
    "rgb-jpeg": Case(lambda: encode(astronaut(), "JPEG", quality=98), "RGB",
                     lambda: np.asarray(astronaut()), 35),
    "l-jpeg": Case(lambda: encode(page(), "JPEG", quality=98), "L", lambda: np.asarray(page()), 35),
    "rgb-webp": Case(lambda: encode(astronaut(), "WEBP", lossless=True), "RGB",
                     lambda: np.asarray(astronaut())),
    "rgba-webp": Case(lambda: encode(cutout(), "WEBP", lossless=True, exact=True), "RGBA",
                      lambda: _with_visible_colour(np.asarray(cutout()))),
    "gif": Case(lambda: encode(astronaut(), "GIF"), "RGB",
                lambda: np.asarray(Image.open(io.BytesIO(encode(astronaut(), "GIF"))).convert("RGB"))),
    "gif-animated-first-frame": Case(lambda: skimage_file("no_time_for_that_tiny.gif"), "RGB",
                                     lambda: np.asarray(Image.open(io.BytesIO(
                                         skimage_file("no_time_for_that_tiny.gif"))).convert("RGB"))),
    "bmp-rgb": Case(lambda: encode(astronaut(), "BMP"), "RGB", lambda: np.asarray(astronaut())),
    "bmp-palette": Case(lambda: encode(astronaut().quantize(16), "BMP"), "RGB",
                        lambda: np.asarray(astronaut().quantize(16).convert("RGB"))),
    "bmp-1bit": Case(lambda: encode(page().convert("1"), "BMP"), "L",
                     lambda: np.asarray(page().convert("1").convert("L"))),
    "tiff-multipage-first-page": Case(lambda: skimage_file("multipage.tif"), "L",
                                      lambda: np.asarray(Image.open(io.BytesIO(
                                          skimage_file("multipage.tif"))).convert("L"))),
}


@pytest.mark.parametrize("name", MODES)
def test_every_mode_round_trips(name):
    case = MODES[name]
    out = roundtrip(case.data())
    assert out.mode == case.mode
    got = np.asarray(out)
    if got.ndim == 3 and got.shape[2] in (2, 4):
        got = _with_visible_colour(got)
    expected = case.reference()
    assert got.shape == expected.shape
    assert psnr(expected, got, case.data_range) >= case.min_psnr


def test_a_16_bit_ramp_keeps_every_level():
    out = np.asarray(roundtrip(encode(Image.fromarray(ramp16(4096, 2)), "PNG")))
    assert out.dtype == np.uint16
    assert np.array_equal(out, ramp16(4096, 2))


def test_cmyk_goes_through_its_icc_profile():
    """A CMYK profile that maps every ink mix to middle grey: only colour management gives grey."""
    profile = _grey_cmyk_profile()
    data = encode(astronaut().convert("CMYK"), "JPEG", quality=95, icc_profile=profile)
    pixels = imageio.to_pixels(imageio.decode(data, imageio.read_header(data, **LIMITS)))
    assert pixels.icc is None  # converted to sRGB, written without a profile
    assert np.ptp(pixels.colour) < 0.02
    assert 0.4 < pixels.colour.mean() < 0.55  # L* 50 is sRGB 119/255


def _grey_cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK input profile (lut8 A2B0): full ink is black, all else L*=50 grey.

    Every pixel of a naively converted RGB image has K=0, so it only meets the grey corners.
    """
    def tag(signature: bytes, body: bytes) -> tuple[bytes, bytes]:
        return signature, body + bytes(-len(body) % 4)

    identity = bytes(range(256))
    lut = (b"mft1" + bytes(4) + bytes([4, 3, 2, 0])
           + b"".join(struct.pack(">i", v) for v in (65536, 0, 0, 0, 65536, 0, 0, 0, 65536))
           + identity * 4 + bytes([128, 128, 128]) * 15 + bytes([0, 128, 128]) + identity * 3)
    text = b"desc" + bytes(4) + struct.pack(">I", 5) + b"grey\x00" + bytes(4 + 4 + 2 + 1 + 67)
    white = b"XYZ " + bytes(4) + struct.pack(">iii", 63190, 65536, 54061)
    tags = [tag(b"desc", text), tag(b"wtpt", white), tag(b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, bodies = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(bodies), len(body))
        bodies += body
    header = bytearray(128)
    header[8:12] = bytes([2, 0x10, 0, 0])
    header[12:24] = b"scnrCMYKLab "
    header[36:40] = b"acsp"
    header[68:80] = struct.pack(">iii", 63190, 65536, 54061)
    profile = bytes(header) + table + bodies
    return struct.pack(">I", len(profile)) + profile[4:]


# --- orientation, ICC, alpha on JPEG -------------------------------------------------------------


@pytest.mark.parametrize("orientation, stored", [
    (1, lambda im: im),
    (3, lambda im: im.transpose(Image.Transpose.ROTATE_180)),
    (6, lambda im: im.transpose(Image.Transpose.ROTATE_90)),  # shown after turning 90 degrees clockwise
    (8, lambda im: im.transpose(Image.Transpose.ROTATE_270)),
], ids=["1", "3", "6", "8"])
def test_exif_orientation_is_applied_and_not_carried(orientation, stored):
    upright = chelsea()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored(upright), "JPEG", quality=95, exif=exif)
    out = roundtrip(data, "JPEG")
    assert out.size == upright.size
    assert psnr(np.asarray(upright), np.asarray(out)) > 30
    assert out.getexif().get(0x0112) is None


@pytest.mark.parametrize("fmt, options", [
    ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}),
], ids=["png-exif", "webp-exif", "tiff-exif"])
def test_exif_orientation_in_other_formats(fmt, options):
    upright = chelsea()
    exif = Image.Exif()
    exif[0x0112] = 6
    out = roundtrip(encode(upright.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif, **options))
    assert out.size == upright.size
    assert np.array_equal(np.asarray(out), np.asarray(upright))


@pytest.mark.parametrize("source, fmt", [("PNG", "PNG"), ("JPEG", "JPEG"), ("PNG", "WEBP"), ("TIFF", "PNG")])
def test_icc_profile_is_carried(source, fmt):
    data = encode(astronaut(), source, icc_profile=SRGB_ICC)
    assert roundtrip(data, fmt).info.get("icc_profile") == SRGB_ICC


def test_an_rgb_profile_is_not_attached_to_grey_output():
    data = encode(page(), "PNG", icc_profile=SRGB_ICC)
    out = roundtrip(data, "PNG")
    assert out.mode == "L"
    assert "icc_profile" not in out.info


def test_jpeg_output_composites_transparency_on_white():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (0, 0, 255, 255)  # opaque blue on the left, transparent black on the right
    out = np.asarray(roundtrip(encode(Image.fromarray(rgba), "PNG"), "JPEG"))
    assert out.shape == (20, 30, 3)
    assert psnr(np.full((20, 10, 3), 255), out[:, 20:]) > 35
    assert psnr(np.broadcast_to([0, 0, 255], (20, 10, 3)), out[:, :10]) > 35


@pytest.mark.parametrize("mode, fmt, expected", [
    ("L", "JPEG", "L"), ("L", "WEBP", "RGB"), ("LA", "WEBP", "RGBA"), ("LA", "JPEG", "L"),
    ("I;16", "JPEG", "L"), ("I;16", "WEBP", "RGB"), ("RGBA", "JPEG", "RGB"), ("RGBA", "WEBP", "RGBA"),
])
def test_modes_adapt_to_the_output_format(mode, fmt, expected):
    image = Image.new(mode, (16, 8))
    out = Image.open(io.BytesIO(imageio.encode(image, fmt, quality=90, icc=None)))
    assert (out.format, out.mode) == (fmt, expected)


@pytest.mark.parametrize("quality", [10, 95])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_quality_setting_is_used(fmt, quality):
    image = astronaut((128, 128))
    low = imageio.encode(image, fmt, quality=10, icc=None)
    this = imageio.encode(image, fmt, quality=quality, icc=None)
    decoded = np.asarray(Image.open(io.BytesIO(this)).convert("RGB"))
    assert psnr(np.asarray(image), decoded) > (30 if quality == 95 else 20)
    assert (len(this) > 2 * len(low)) == (quality == 95)


def test_pillow_guard_follows_the_input_cap(pillow_guard):
    """Pillow refuses above twice its limit while opening: it must not undercut a raised cap."""
    data = png_declaring(13500, 13500)
    Image.MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's default, whatever ran before
    with pytest.raises(errors.ImageTooLarge):  # Pillow's default stops at 179 megapixels
        imageio.read_header(data, max_bytes=10**6, max_pixels=200_000_000)
    imageio.configure(200_000_000)
    assert imageio.read_header(data, max_bytes=10**6, max_pixels=200_000_000).pixels == 13500**2


def test_a_small_cap_elsewhere_in_the_process_does_not_lower_pillows_guard(pillow_guard):
    """Pillow's guard is process-wide: a pipeline with a tiny cap must not break another's decode."""
    imageio.configure(4_000_000)
    imageio.configure(1 << 16)
    buf = io.BytesIO()
    Image.new("RGB", (512, 512)).save(buf, "PNG")
    data = buf.getvalue()
    header = imageio.read_header(data, max_bytes=10**7, max_pixels=4_000_000)
    assert imageio.decode(data, header) is not None
