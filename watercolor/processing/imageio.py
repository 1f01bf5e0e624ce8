"""Image I/O: sniff, read a header, decode, convert to float planes and back, encode.

Pure functions on bytes, Pillow images and numpy arrays; limits are passed in,
nothing here reads settings. The pipeline (:mod:`watercolor.processing.pipeline`)
calls them in order and owns the story; this module owns the format knowledge.

Decisions worth knowing:

- The format comes from the bytes (magic numbers), never from a name. Inputs:
  PNG (and APNG: first frame), JPEG, WebP (first frame), GIF (first frame),
  BMP, TIFF (first page). Anything else is ``UnsupportedFormat``.
- Sizes are checked from the header before any pixel is decoded. For WebP the
  canvas size is read from the RIFF header here, because Pillow's WebP opener
  already asks libwebp for a canvas.
- Pillow's own guard (``Image.MAX_IMAGE_PIXELS``) is raised to the input cap
  by :func:`configure` (never lowered); it then only fires for images we
  refuse anyway.
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched: a truncated image is
  ``CorruptImage``, not a half-grey picture.
- EXIF orientation is applied to the pixels; EXIF itself is not written out
  (its orientation, sizes and GPS position would be stale or unwanted). The ICC
  profile is carried when its colour space matches the output's (an RGB
  profile on RGB output, a grey one on grey output) and is at most 1 MB;
  CMYK and Lab inputs are converted to sRGB (through their profile when they
  carry one) and written without a profile, which means sRGB.
- Samples become float32 in 0..1: 8-bit by 255, 16-bit by 65535, TIFF integers
  of up to 16 bits by their declared depth, other 32-bit integers (mode I) as
  16-bit unless their values go beyond it; float images (mode F) declare no
  range and are taken as 0..1, or as 0..255 or 0..65535 when their values go
  beyond that. Negative values and NaN become 0.
- Grey inputs are 1-bit, L, LA, 16-bit and 32-bit grey, F, and palettes whose
  every entry is a grey; they come out grey. Pillow reads 16-bit colour (RGB
  PNG/TIFF) and 16-bit grey with alpha as 8-bit, so those come out 8-bit.
- Output: PNG keeps grey (16-bit grey when the input had more than 8 bits), grey
  with alpha, RGB and RGBA. JPEG has no alpha: transparent images are composited
  on white. WebP has no grey: grey is written as RGB (and a grey ICC profile
  is then dropped). ``same`` means the input's format for PNG, JPEG and WebP,
  PNG for GIF, BMP and TIFF.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from watercolor import errors, params
from watercolor.params import OUTPUT_FORMATS

log = logging.getLogger(__name__)

#: Formats Watercolor reads (Pillow's names).
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
#: Formats Watercolor writes, with their MIME types and largest width or height.
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_DIMENSION = {"PNG": 2**31 - 1, "JPEG": 65500, "WEBP": 16383}  # libjpeg refuses 65501-65535

# Encoder settings, measured on real photos enlarged to 1 megapixel (astronaut 1024x1024,
# coffee 1200x800), best of 5, one core, Pillow 13 wheels (zlib-ng 2.3, libwebp 1.6,
# libjpeg-turbo 3.2); times vary +-50 % on the shared machine, the ratios hold:
#   PNG level  1: 120-190 ms 1.42 MB | 2: 120-290 ms 1.40 MB | 3: 140-330 ms 1.37 MB
#              4: 200-410 ms 1.27 MB | 6 (Pillow's default): 550-1210 ms 1.26 MB | 9: 1.8-2.6 s 1.25 MB
#   WebP q92 method 0: 70 ms 0.15 MB 41.7 dB | 2: 80-130 ms 0.14 MB 41.6 dB | 4: 150-220 ms 0.14 MB 42.0 dB
#            6: 450-940 ms 0.14 MB 41.9 dB
#   JPEG q92: 5-8 ms 0.20 MB; optimize=True 14-20 ms for 1-2 % fewer bytes; 4:4:4 +35 % bytes.
#   PNG level 1 with zlib's Z_RLE strategy (thread CPU time, best of 5, per output megapixel):
#   photos enlarged by bicubic, Lanczos, waifu2x, x4plus: 90-103 ms and 0.86-1.41 MB against
#   level 4's 164-213 ms and 0.91-1.42 MB; RGBA, L and I;16 outputs also as small or smaller.
#: zlib level and strategy for PNG: Z_RLE at level 1 is level 4's size at about half its time.
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = zlib.Z_RLE
#: libwebp's default method: 0.3 dB better than method 2 at the same size; 5 and 6 buy nothing.
WEBP_METHOD = 4
# JPEG keeps libjpeg's 4:2:0 and no optimize pass (2-3x the encode time for 1-2 % fewer bytes).

#: Largest ICC profile carried to an output: what Pillow's own PNG reader accepts by default
#: (real RGB and grey profiles are a few KB; bigger ones are printer profiles, converted away).
#: Larger profiles are dropped, so every result stays readable and cheap to write (Pillow's JPEG
#: writer spends seconds on a 20 MB profile and wraps its segment count past 255).
MAX_CARRIED_ICC_BYTES = 1024 * 1024
#: Most bytes one compressed PNG text or ICC chunk may inflate to, and all of them together: a
#: profile of any size JPEG can carry (255 segments) is read from PNG too; bigger is an attack.
MAX_PNG_METADATA_BYTES = 16 * 1024 * 1024

_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# --- configuration -------------------------------------------------------------------------------


def configure(max_input_pixels: int) -> None:
    """Make Pillow's decompression-bomb guard agree with Watercolor's input cap.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and refuses above twice that while
    opening. With the same number as our cap, both only concern images that
    :func:`read_header` refuses anyway, and a raised cap is not undercut by
    Pillow's default of about 89 megapixels. PNG metadata gets the same
    treatment: an ICC profile JPEG or WebP may carry is read from PNG too
    (Pillow's default refuses more than 1 MB, calling the image corrupt),
    while a chunk that inflates further is still refused.
    """
    # Only ever raised: Pillow's guard is process-wide, and our own header check already
    # enforces each pipeline's cap, so a pipeline with a small cap (tests, tools) must not
    # make Pillow refuse what another pipeline in the same process accepts.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_input_pixels:
        Image.MAX_IMAGE_PIXELS = max_input_pixels
    PngImagePlugin.MAX_TEXT_CHUNK = MAX_PNG_METADATA_BYTES
    PngImagePlugin.MAX_TEXT_MEMORY = MAX_PNG_METADATA_BYTES


# --- header --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What the first bytes of an image say, before any pixel is decoded."""

    format: str  # one of INPUT_FORMATS
    width: int  # as stored; EXIF orientation may swap width and height on decoding
    height: int
    mode: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff(data: bytes) -> str:
    """The image format named by the magic number at the start of ``data``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if data[:4] in _TIFF_MAGIC:
        return "TIFF"
    raise errors.UnsupportedFormat(
        "not an image format Watercolor reads (PNG, JPEG, WebP, GIF, BMP, TIFF)")


def read_header(data: bytes, *, max_bytes: int, max_pixels: int) -> Header:
    """Check the byte count, the format and the declared pixel count; decode nothing.

    Raises PayloadTooLarge, EmptyImage, UnsupportedFormat, CorruptImage or
    ImageTooLarge, in that order of checking.
    """
    if len(data) > max_bytes:
        raise errors.PayloadTooLarge(f"the image is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise errors.EmptyImage()
    fmt = sniff(data)
    if fmt == "WEBP":
        _check_input_pixels(*_webp_canvas_size(data), max_pixels)
    with _decoding(fmt, max_pixels), Image.open(io.BytesIO(data), formats=[fmt]) as image:
        header = Header(fmt, image.width, image.height, image.mode)
    _check_input_pixels(header.width, header.height, max_pixels)
    return header


def _check_input_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise errors.CorruptImage(f"the image declares a size of {width}x{height}")
    if width * height > max_pixels:
        raise errors.ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")


def _webp_canvas_size(data: bytes) -> tuple[int, int]:
    """Width and height from a WebP file's first chunk (VP8X, VP8L or VP8)."""
    chunk = data[12:16]
    body = data[20:]
    if chunk == b"VP8X" and len(body) >= 10:
        return 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
    if chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        return int.from_bytes(body[6:8], "little") & 0x3FFF, int.from_bytes(body[8:10], "little") & 0x3FFF
    raise errors.CorruptImage("the WEBP header is corrupt or truncated")


@contextmanager
def _decoding(fmt: str, max_pixels: int) -> Iterator[None]:
    """Turn whatever a decoder raises on hostile bytes into our errors.

    Pillow's plugins raise many exception types on malformed data (OSError,
    SyntaxError, ValueError, struct.error, EOFError, IndexError, ...): at this
    trust boundary every one of them means the bytes are bad, not the server.
    """
    try:
        yield
    except errors.WatercolorError:
        raise
    except Image.DecompressionBombError as exc:
        raise errors.ImageTooLarge(f"the image has more than {max_pixels} pixels") from exc
    except MemoryError:
        raise
    except Image.UnidentifiedImageError as exc:  # the magic matched, but no reader accepted the rest
        raise errors.CorruptImage(
            f"cannot read this {fmt} file: it is corrupt or a variant Watercolor does not support") from exc
    except Exception as exc:
        log.debug("decoding %s failed: %r", fmt, exc)
        raise errors.CorruptImage(f"the {fmt} data is corrupt or truncated") from exc


# --- output size ---------------------------------------------------------------------------------


def output_format(requested: str, input_format: str) -> str:
    """Pillow's name of the format to write: ``"same"`` keeps PNG, JPEG and WebP, else PNG."""
    if requested == "same":
        return input_format if input_format in MIME_TYPES else "PNG"
    try:
        fmt = OUTPUT_FORMATS[requested]
    except KeyError:
        raise errors.InvalidParameter(f"unknown output format {requested!r}") from None
    assert fmt is not None
    return fmt


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Exact result size (width, height), by the rule in :func:`watercolor.params.output_size`."""
    return params.output_size(width, height, scale)


def check_output(width: int, height: int, scale: float, fmt: str, *, max_pixels: int) -> tuple[int, int]:
    """The output size, or OutputTooLarge when the result could not be made or written.

    Orientation does not matter: both limits are symmetric in width and height.
    """
    out_w, out_h = output_size(width, height, scale)
    if out_w * out_h > max_pixels:
        raise errors.OutputTooLarge(
            f"the result would be {out_w}x{out_h} = {out_w * out_h} pixels; the limit is {max_pixels}")
    largest = MAX_DIMENSION[fmt]
    if max(out_w, out_h) > largest:
        raise errors.OutputTooLarge(
            f"the result would be {out_w}x{out_h} pixels; {fmt} allows at most {largest} per side")
    return out_w, out_h


# --- decode --------------------------------------------------------------------------------------


def decode(data: bytes, header: Header) -> Image.Image:
    """Decode the first frame or page, upright (EXIF orientation applied)."""
    with _decoding(header.format, header.pixels):
        image = Image.open(io.BytesIO(data), formats=[header.format])
        image.load()
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # broken EXIF is not a reason to refuse good pixels
        log.warning("ignoring unreadable EXIF orientation: %r", exc)
    return image


# --- pixels: Pillow image <-> float planes -------------------------------------------------------


@dataclass
class Pixels:
    """An image as the models want it, plus what is needed to give it back its shape.

    ``colour`` is float32 H x W x 3, C-contiguous, 0..1 (grey images repeat the
    grey in all three channels); ``alpha`` is float32 H x W in 0..1 or None.
    """

    colour: np.ndarray
    alpha: np.ndarray | None
    grey: bool  # write grey (L, LA or 16-bit) rather than RGB
    deep: bool  # more than 8 bits per sample: write 16-bit grey where the format allows
    icc: bytes | None  # profile to carry to the output

    @property
    def height(self) -> int:
        return self.colour.shape[0]

    @property
    def width(self) -> int:
        return self.colour.shape[1]


_GREY_MODES = ("1", "L", "LA", "La")
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_pixels(image: Image.Image) -> Pixels:
    """Convert any mode Pillow produces to float planes (see :class:`Pixels`)."""
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    if mode in _DEEP_MODES:
        grey = _deep_grey(image)
        alpha = _key_alpha(np.asarray(image), image.info.get("transparency"))
        return Pixels(_repeat3(grey), alpha, grey=True, deep=True, icc=icc)
    if mode in _GREY_MODES or (mode == "P" and _grey_palette(image)):
        return _grey8(image, icc)
    if mode in ("CMYK", "LAB"):
        return Pixels(_unit(np.asarray(_to_srgb(image, icc))), None, grey=False, deep=False, icc=None)
    if mode == "RGB":
        arr = np.asarray(image)
        return Pixels(_unit(arr), _key_alpha(arr, image.info.get("transparency")),
                      grey=False, deep=False, icc=icc)
    if mode in ("RGBA", "RGBa", "PA") or image.has_transparency_data:
        arr = np.asarray(image.convert("RGBA"))
        return Pixels(_unit(arr[..., :3]), _unit(arr[..., 3]), grey=False, deep=False, icc=icc)
    # P without transparency, RGBX, YCbCr, HSV and anything newer Pillow may add.
    return Pixels(_unit(np.asarray(image.convert("RGB"))), None, grey=False, deep=False, icc=icc)


def _unit(arr: np.ndarray, full_scale: float = 255.0) -> np.ndarray:
    out = np.array(arr, dtype=np.float32, order="C")
    out *= np.float32(1.0 / full_scale)
    return out


def _repeat3(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _grey8(image: Image.Image, icc: bytes | None) -> Pixels:
    if image.mode == "La":
        image = image.convert("LA")  # un-premultiplies
    if image.has_transparency_data:  # LA, or a colour key or palette transparency
        arr = np.asarray(image.convert("LA"))
        return Pixels(_repeat3(_unit(arr[..., 0])), _unit(arr[..., 1]), grey=True, deep=False, icc=icc)
    arr = np.asarray(image.convert("L"))
    return Pixels(_repeat3(_unit(arr)), None, grey=True, deep=False, icc=icc)


def _grey_palette(image: Image.Image) -> bool:
    palette = image.getpalette("RGB") or []
    return bool(palette) and palette[0::3] == palette[1::3] == palette[2::3]


def _deep_grey(image: Image.Image) -> np.ndarray:
    """Grey with more than 8 bits, normalised to 0..1 by its declared or evident range."""
    arr = np.asarray(image)
    if image.mode.startswith("I;16"):
        return _unit(arr, 65535.0)
    if image.mode == "I":
        # Pillow's 32-bit integer mode mostly carries 16-bit data; a TIFF may declare fewer bits.
        bits = _tiff_bits(image)
        if bits is not None and bits <= 16:
            full_scale = float(2**bits - 1)
        else:
            full_scale = 65535.0 if arr.size == 0 or int(arr.max()) <= 65535 else float(2**31 - 1)
        return np.clip(_unit(arr, full_scale), 0.0, 1.0)
    # Mode F declares no range: 0..1 is the usual one for float images, 0..255 Pillow's own.
    grey = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(grey.max()) if grey.size else 0.0
    full_scale = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    return np.clip(_unit(grey, full_scale), 0.0, 1.0)


def _tiff_bits(image: Image.Image) -> int | None:
    """Significant bits of an integer TIFF sample (BitsPerSample, less one when signed)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or 258 not in tags:
        return None
    bits = tags[258]
    bits = int(bits[0] if isinstance(bits, tuple) else bits)
    signed = tags.get(339, 1) in (2, (2,))
    return bits - 1 if signed else bits


def _key_alpha(arr: np.ndarray, key: object) -> np.ndarray | None:
    """Alpha from a PNG colour key (tRNS on grey or RGB): 0 where the pixel equals the key."""
    if key is None or isinstance(key, bytes):
        return None
    if arr.ndim == 3:
        if not isinstance(key, tuple) or len(key) != arr.shape[2]:
            return None
        visible = np.any(arr != np.asarray(key, dtype=arr.dtype), axis=2)
    else:
        visible = arr != key
    return visible.astype(np.float32)


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """CMYK or Lab to sRGB, through the embedded profile when there is a usable one."""
    srgb = ImageCms.createProfile("sRGB")
    try:
        if image.mode == "LAB":
            source = ImageCms.createProfile("LAB")
        elif icc and icc_colour_space(icc) == "CMYK":
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        else:
            return image.convert("RGB")
        return ImageCms.profileToProfile(image, source, srgb, outputMode="RGB",
                                         renderingIntent=ImageCms.Intent.PERCEPTUAL)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.warning("colour management failed (%r); converting %s naively", exc, image.mode)
        return image.convert("RGB")


def icc_colour_space(icc: bytes) -> str | None:
    """The data colour space an ICC profile declares ("RGB", "GRAY", "CMYK", ...)."""
    if len(icc) < 128 or icc[36:40] != b"acsp":
        return None
    return icc[16:20].decode("latin-1").strip()


def to_image(colour: np.ndarray, alpha: np.ndarray | None, *, grey: bool, deep: bool) -> Image.Image:
    """Float planes back to a Pillow image: L, I;16, LA, RGB or RGBA.

    ``colour`` is consumed (clipped and scaled in place) to keep peak memory down.
    """
    if grey:
        colour = colour.mean(axis=2, dtype=np.float32)
    if deep and grey and alpha is None:
        return Image.fromarray(_quantise(colour, 65535, np.uint16))
    planes = _quantise(colour, 255, np.uint8)
    if alpha is None:
        return Image.fromarray(planes)
    alpha8 = _quantise(alpha.copy(), 255, np.uint8)
    if grey:
        return Image.fromarray(np.stack([planes, alpha8], axis=2), mode="LA")
    return Image.fromarray(np.concatenate([planes, alpha8[:, :, None]], axis=2), mode="RGBA")


def _quantise(values: np.ndarray, top: int, dtype: type) -> np.ndarray:
    np.clip(values, 0.0, 1.0, out=values)
    values *= np.float32(top)
    values += np.float32(0.5)
    return values.astype(dtype)


# --- encode --------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, *, quality: int, icc: bytes | None) -> bytes:
    """Write ``image`` (L, I;16, LA, RGB or RGBA) as PNG, JPEG or WebP."""
    image = _for_format(image, fmt)
    options: dict[str, object]
    if fmt == "PNG":
        options = {"compress_level": PNG_COMPRESS_LEVEL, "compress_type": PNG_COMPRESS_TYPE}
    elif fmt == "JPEG":
        options = {"quality": quality}
    elif fmt == "WEBP":
        options = {"quality": quality, "method": WEBP_METHOD}
    else:
        raise errors.InvalidParameter(f"Watercolor does not write {fmt}")
    if icc and len(icc) > MAX_CARRIED_ICC_BYTES:
        log.warning("not carrying an ICC profile of %d bytes (the limit is %d)", len(icc),
                    MAX_CARRIED_ICC_BYTES)
    elif icc and icc_colour_space(icc) == ("GRAY" if image.mode in ("L", "LA", "I;16") else "RGB"):
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _for_format(image: Image.Image, fmt: str) -> Image.Image:
    """Adapt the mode to what the format can hold (see the module notes)."""
    mode = image.mode
    if fmt == "JPEG":
        if mode in ("LA", "RGBA"):
            return _on_white(image)
        if mode == "I;16":
            return _to_8bit(image)
    elif fmt == "WEBP":
        if mode == "I;16":
            return _to_8bit(image).convert("RGB")
        if mode in ("L", "LA"):
            return image.convert("RGBA" if mode == "LA" else "RGB")
    return image


def _on_white(image: Image.Image) -> Image.Image:
    flat_mode = image.mode[:-1]  # "LA" -> "L", "RGBA" -> "RGB"
    background = Image.new(flat_mode, image.size, "white")
    background.paste(image.convert(flat_mode), mask=image.getchannel("A"))
    return background


def _to_8bit(image: Image.Image) -> Image.Image:
    wide = np.asarray(image).astype(np.uint32)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
