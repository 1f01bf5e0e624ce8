"""The hostile-input corpus, generated on the fly (no binary blobs are committed).

Every :class:`Case` is one upload with the parameters to send it with and what
is acceptable back: ``"ok"`` (a result, whose size is then checked exactly)
and/or specific error codes. Families, each a generator over the six input
formats (PNG, JPEG, WebP, GIF, BMP, TIFF):

* ``truncated`` - a real photo's file cut at many points;
* ``flipped`` - bytes flipped at seeded random places (headers most of all);
* ``pixel_bomb`` - a few hundred bytes declaring gigapixels, in every format;
* ``frame_bomb`` - thousands of frames or pages (GIF, APNG, TIFF, WebP), some
  of the later ones declaring huge sizes;
* ``metadata`` - text and ICC chunks, oversized or compressed bombs, EXIF junk;
* ``lying_name`` - bytes of one kind sent under the name and type of another;
* ``mode`` - every image mode Pillow produces, in every format that stores it;
* ``aspect`` - 1x10000, 10000x1 and the tiniest images;
* ``output_cap`` - results over the pixel cap or a format's largest side.

The corpus is sized by ``long``: the fast version samples fewer cut points and
mutants; the long one is several times larger. Both are deterministic.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms

#: Limits the corpus is written against (the backends under test use exactly these).
LIMITS = {"max_image_bytes": 24 * 1024 * 1024, "max_input_pixels": 4_000_000,
          "max_output_pixels": 16_000_000}
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
#: Error codes an image itself may earn: a specific 4xx each.
IMAGE_ERRORS = frozenset({"corrupt_image", "unsupported_format", "image_too_large", "output_too_large",
                          "empty_image", "payload_too_large"})
MALFORMED = IMAGE_ERRORS | {"ok"}
FAST_PARAMS = {"model": "lanczos", "scale": 2}


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    data: bytes
    expect: frozenset[str]
    params: dict = field(default_factory=lambda: dict(FAST_PARAMS))
    #: (width, height) the input must be read as when the answer is "ok" (None: as declared).
    size: tuple[int, int] | None = None
    #: What the upload says it is (for the HTTP routes): filename and Content-Type.
    filename: str = "image"
    content_type: str = "application/octet-stream"
    #: For a result: the source pixels (RGB/RGBA/L) a Lanczos enlargement should resemble.
    reference: Image.Image | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.name}"


# --- sources ---------------------------------------------------------------------------------------


def photo(size: tuple[int, int] = (24, 16)) -> Image.Image:
    """A crop of a real photo (skimage's astronaut), resized to ``size``."""
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).crop((150, 60, 198, 92)).resize(size)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def sample_file(fmt: str, size: tuple[int, int] = (24, 16)) -> bytes:
    image = photo(size)
    if fmt == "GIF":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    return encode(image, fmt)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_with_chunks(image: Image.Image, extra: list[bytes]) -> bytes:
    """``image`` as PNG with ``extra`` chunks placed right after IHDR."""
    data = encode(image, "PNG")
    ihdr_end = 8 + 25
    return data[:ihdr_end] + b"".join(extra) + data[ihdr_end:]


# --- truncated and flipped ---------------------------------------------------------------------------


def _cut_points(length: int, count: int, rng: random.Random) -> list[int]:
    """Every cut in the headers (first 64 bytes, a few per format), plus spread ones, plus random."""
    head = [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 26, 30, 33, 40, 48, 64]
    spread = [length * k // 10 for k in range(1, 10)] + [length - 1, length - 2, length - 12]
    extra = rng.sample(range(1, length), min(count, length - 1))
    return sorted({c for c in head + spread + extra if 0 < c < length})


def truncated(long: bool) -> Iterator[Case]:
    rng = random.Random(1)
    for fmt in FORMATS:
        data = sample_file(fmt)
        for cut in _cut_points(len(data), 40 if long else 4, rng):
            yield Case("truncated", f"{fmt.lower()}-{cut}of{len(data)}", data[:cut], MALFORMED)


def flipped(long: bool) -> Iterator[Case]:
    rng = random.Random(2)
    for fmt in FORMATS:
        data = sample_file(fmt)
        mutants = 60 if long else 8
        for n in range(mutants):
            mutant = bytearray(data)
            # Half the mutants hit the first 64 bytes (headers, sizes), the rest anywhere.
            for _ in range(rng.choice((1, 1, 2, 4))):
                at = rng.randrange(min(64, len(data))) if n % 2 == 0 else rng.randrange(len(data))
                mutant[at] ^= rng.choice((0xFF, 0x80, 0x01, rng.randrange(1, 256)))
            yield Case("flipped", f"{fmt.lower()}-{n}", bytes(mutant), MALFORMED)


# --- pixel bombs -----------------------------------------------------------------------------------

BOMB = frozenset({"image_too_large"})


def _jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(sample_file("JPEG"))
    at = 2
    while at < len(data):  # walk the markers to the frame header (SOF0/SOF2)
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length
    raise AssertionError("no SOF marker")


def _gif_declaring(width: int, height: int, frame: tuple[int, int] | None = None) -> bytes:
    data = bytearray(sample_file("GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    at = data.index(b"\x2c")  # the first image descriptor
    fw, fh = frame or (width, height)
    data[at + 5:at + 9] = struct.pack("<HH", fw, fh)
    return bytes(data)


def _bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(sample_file("BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def tiff_page(width: int, height: int, pixels: bytes, offset: int, next_ifd: int = 0) -> tuple[bytes, bytes]:
    """One little-endian grey 8-bit TIFF page: (IFD bytes, pixel bytes) for an IFD at ``offset``."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height),
               (279, 4, 1, len(pixels))]
    ifd_size = 2 + 12 * len(entries) + 4
    strip_at = offset + ifd_size
    out = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = strip_at if tag == 273 else value
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", next_ifd), pixels


def tiff_pages(pages: list[tuple[int, int]]) -> bytes:
    """A TIFF of grey pages of the given sizes; each holds at most 64 bytes of real pixels."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for index, (width, height) in enumerate(pages):
        pixels = bytes(range(min(width * height, 64)))
        offset = len(out)
        ifd_len = 2 + 12 * 9 + 4
        next_ifd = offset + ifd_len + len(pixels) if index + 1 < len(pages) else 0
        ifd, strip = tiff_page(width, height, pixels, offset, next_ifd)
        out += ifd + strip
    return bytes(out)


def _webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + struct.pack("<I", bits) + bytes(16)
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _webp_vp8x(width: int, height: int) -> bytes:
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    rest = encode(photo(), "WEBP")[12:]  # a real image chunk after the (lying) canvas
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x + rest
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_vp8(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(), "WEBP", lossless=False))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", width, height)
    return bytes(data)


def pixel_bombs(long: bool) -> Iterator[Case]:
    png = lambda w, h: PNG_MAGIC + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + png_chunk(b"IEND", b"")  # noqa: E731
    bombs = {
        "png-100000x100000": png(100_000, 100_000),
        "png-2^31-1-square": png(2**31 - 1, 2**31 - 1),
        "png-3000x3000": png(3000, 3000),  # 9 MP: just over the corpus' 4 MP cap
        "jpeg-65500x65500": _jpeg_declaring(65500, 65500),
        "jpeg-2100x2100": _jpeg_declaring(2100, 2100),
        "gif-65535x65535": _gif_declaring(65535, 65535),
        "bmp-50000x50000": _bmp_declaring(50000, 50000),
        "bmp-50000x-50000-top-down": _bmp_declaring(50000, -50000),
        "bmp-2^31-1-wide": _bmp_declaring(2**31 - 1, 1 << 8),
        "tiff-100000x100000": tiff_pages([(100_000, 100_000)]),
        "tiff-2^32-1-square": tiff_pages([(2**32 - 1, 2**32 - 1)]),
        "webp-vp8l-16384x16384": _webp_vp8l(16384, 16384),
        "webp-vp8x-canvas-2^24": _webp_vp8x(2**24, 2**24),
        "webp-vp8-16383x16383": _webp_vp8(16383, 16383),
    }
    # Sizes that are not bombs but lies a decoder must catch: "too large" or "corrupt" are both right.
    lies = {"bmp-2^31-1-wide", "tiff-2^32-1-square", "png-2^31-1-square", "webp-vp8-16383x16383"}
    for name, data in bombs.items():
        expect = BOMB | {"corrupt_image"} if name in lies else BOMB
        yield Case("pixel_bomb", name, data, expect)
    # A GIF's frames are drawn on its logical screen: a huge first frame is clipped to a small screen.
    yield Case("pixel_bomb", "gif-screen-small-frame-huge", _gif_declaring(24, 16, frame=(65535, 65535)),
               frozenset({"ok", "corrupt_image"}), size=(24, 16))


# --- frame bombs -----------------------------------------------------------------------------------


def frame_bombs(long: bool) -> Iterator[Case]:
    frames = 4000 if long else 1500
    small = photo((8, 6))
    gif_frames = [small.rotate(i % 360).convert("P") for i in range(frames)]
    yield Case("frame_bomb", f"gif-{frames}-frames",
               encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:]),
               frozenset({"ok"}), size=(8, 6))
    yield Case("frame_bomb", f"apng-{frames}-frames",
               encode(small, "PNG", save_all=True, append_images=[small.rotate(i) for i in range(frames)]),
               frozenset({"ok"}), size=(8, 6))
    yield Case("frame_bomb", f"webp-{frames // 3}-frames",
               encode(small, "WEBP", save_all=True, lossless=True,
                      append_images=[small.rotate(i) for i in range(frames // 3)]),
               frozenset({"ok"}), size=(8, 6))
    yield Case("frame_bomb", f"tiff-{frames}-pages", tiff_pages([(8, 6)] * frames), frozenset({"ok"}),
               size=(8, 6))
    # A small first page then pages that declare gigapixels: only the first is ever read.
    yield Case("frame_bomb", "tiff-then-huge-pages",
               tiff_pages([(8, 6)] + [(100_000, 100_000)] * 50), frozenset({"ok"}), size=(8, 6))
    gif = bytearray(encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:40]))
    last = gif.rindex(b"\x2c")  # the last image descriptor: make it huge
    gif[last + 5:last + 9] = struct.pack("<HH", 65535, 65535)
    yield Case("frame_bomb", "gif-last-frame-huge", bytes(gif), frozenset({"ok"}), size=(8, 6))


# --- metadata --------------------------------------------------------------------------------------


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _padded_icc(size: int) -> bytes:
    """A valid sRGB profile padded with zeros to ``size`` bytes (profile size field updated)."""
    icc = bytearray(_srgb_icc())
    icc += bytes(size - len(icc))
    icc[0:4] = struct.pack(">I", size)
    return bytes(icc)


def _jpeg_with_segments(segments: list[bytes]) -> bytes:
    data = sample_file("JPEG")
    return data[:2] + b"".join(segments) + data[2:]


def _app(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _jpeg_icc(icc: bytes) -> bytes:
    chunk = 65519
    parts = [icc[i:i + chunk] for i in range(0, len(icc), chunk)]
    return _jpeg_with_segments([_app(0xE2, b"ICC_PROFILE\0" + bytes([n + 1, len(parts)]) + part)
                                for n, part in enumerate(parts)])


def _webp_with_chunk(kind: bytes, body: bytes) -> bytes:
    """An extended WebP (VP8X) carrying an extra chunk, e.g. ICCP or EXIF."""
    image = encode(photo(), "WEBP", lossless=True)[12:]
    flags = {b"ICCP": 0x20, b"EXIF": 0x08, b"XMP ": 0x04}.get(kind, 0)
    w, h = photo().size
    vp8x = bytes([flags, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    pad = b"\0" if len(body) % 2 else b""
    chunks = b"VP8X" + struct.pack("<I", 10) + vp8x + kind + struct.pack("<I", len(body)) + body + pad + image
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _exif(orientation_value: bytes, count: int = 1, kind: int = 3) -> bytes:
    ifd = struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, kind, count) + orientation_value.ljust(4, b"\0")
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


@functools.cache
def _deflated_zeros(size: int) -> bytes:
    """A few KB of zlib stream that inflates to ``size`` zero bytes."""
    return zlib.compress(bytes(size), 9)


def metadata(long: bool) -> Iterator[Case]:
    image = photo()
    ok = frozenset({"ok"})
    # Text: large but plain, and compressed bombs (a few KB that inflate to many MB).
    big_text = b"Comment\0" + b"A" * (3 * 1024 * 1024)
    ztxt_bomb = b"Comment\0\0" + _deflated_zeros(64 * 1024 * 1024)
    itxt_bomb = b"Comment\0\1\0\0\0" + _deflated_zeros(64 * 1024 * 1024)
    # A compressed chunk that inflates to 64 MB is an attack, not metadata: refusing it is right.
    refused = frozenset({"corrupt_image"})
    many_text = [png_chunk(b"tEXt", b"k%d\0" % i + b"v" * 1000) for i in range(3000)]
    iccp_bomb = b"icc\0\0" + _deflated_zeros(64 * 1024 * 1024)
    iccp_big = b"icc\0\0" + zlib.compress(_padded_icc(3 * 1024 * 1024), 9)
    yield Case("metadata", "png-3mb-text", png_with_chunks(image, [png_chunk(b"tEXt", big_text)]), ok)
    for kind, bomb in ((b"zTXt", ztxt_bomb), (b"iTXt", itxt_bomb), (b"iCCP", iccp_bomb)):
        name = f"png-{kind.decode().lower()}-bomb-64mb"
        yield Case("metadata", name, png_with_chunks(image, [png_chunk(kind, bomb)]), refused)
    yield Case("metadata", "png-3000-text-chunks", png_with_chunks(image, many_text), ok)
    yield Case("metadata", "png-iccp-3mb", png_with_chunks(image, [png_chunk(b"iCCP", iccp_big)]), ok)
    yield Case("metadata", "png-iccp-garbage",
               png_with_chunks(image, [png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"garbage" * 99))]), ok)
    # ICC profiles of every size up to what JPEG can carry, sent on to every output format.
    for size_name, icc in (("4mb", _padded_icc(4 * 1024 * 1024)), ("garbage", b"not a profile" * 100)):
        for out in ("png", "jpeg", "webp"):
            params = {**FAST_PARAMS, "format": out}
            yield Case("metadata", f"jpeg-icc-{size_name}-to-{out}", _jpeg_icc(icc), ok, params)
            yield Case("metadata", f"webp-icc-{size_name}-to-{out}", _webp_with_chunk(b"ICCP", icc), ok,
                       params)
    yield Case("metadata", "webp-icc-20mb-to-jpeg", _webp_with_chunk(b"ICCP", _padded_icc(20 * 1024 * 1024)),
               ok, {**FAST_PARAMS, "format": "jpeg"})
    yield Case("metadata", "tiff-icc-4mb-to-jpeg", encode(image, "TIFF", icc_profile=_padded_icc(4 << 20)),
               ok, {**FAST_PARAMS, "format": "jpeg"})
    # EXIF: orientation values out of range, of the wrong type, and a 64 KB segment of junk.
    for name, exif in {"orientation-9": _exif(struct.pack("<H", 9)),
                       "orientation-0": _exif(struct.pack("<H", 0)),
                       "orientation-as-text": _exif(b"8\0", count=2, kind=2),
                       "orientation-count-huge": _exif(struct.pack("<H", 6), count=2**30),
                       "junk-64kb": b"Exif\0\0" + bytes(random.Random(3).randbytes(65000))}.items():
        yield Case("metadata", f"jpeg-exif-{name}", _jpeg_with_segments([_app(0xE1, exif)]), ok,
                   size=None)
        yield Case("metadata", f"webp-exif-{name}", _webp_with_chunk(b"EXIF", exif[6:]), ok)
    yield Case("metadata", "jpeg-100-comment-segments",
               _jpeg_with_segments([_app(0xFE, b"c" * 65000)] * 100), ok)
    tiff_tags = encode(image, "TIFF", tiffinfo={270: "d" * (2 * 1024 * 1024), 305: "s" * 100_000})
    yield Case("metadata", "tiff-2mb-description", tiff_tags, ok)


# --- lying names -----------------------------------------------------------------------------------


def lying_names(long: bool) -> Iterator[Case]:
    image = photo()
    unsupported = frozenset({"unsupported_format"})
    ok = frozenset({"ok"})
    for fmt in FORMATS:
        data = sample_file(fmt)
        lie = "gif" if fmt != "GIF" else "png"
        yield Case("lying_name", f"{fmt.lower()}-named-{lie}", data, ok,
                   filename=f"holiday.{lie}", content_type=f"image/{lie}")
    others = {
        "text-named-jpg": (b"This is a text file, not a picture.\n" * 40, "photo.jpg", "image/jpeg"),
        "html-named-png": (b"<!doctype html><script>alert(1)</script>" * 10, "x.png", "image/png"),
        "svg-as-svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>',
                       "logo.svg", "image/svg+xml"),
        "pdf-named-png": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" * 20, "scan.png", "image/png"),
        "zip-named-jpg": (_zip_bytes(), "photo.jpg", "image/jpeg"),
        "ico-named-png": (encode(image, "ICO"), "icon.png", "image/png"),
        "ppm-named-png": (encode(image, "PPM"), "a.png", "image/png"),
        "tga-named-bmp": (encode(image, "TGA"), "a.bmp", "image/bmp"),
        "psd-magic-named-tiff": (b"8BPS\0\1" + bytes(100), "a.tif", "image/tiff"),
        "elf-named-webp": (b"\x7fELF" + bytes(200), "a.webp", "image/webp"),
        "one-byte": (b"\x89", "a.png", "image/png"),
        "riff-wave-not-webp": (b"RIFF\x24\0\0\0WAVEfmt " + bytes(40), "a.webp", "image/webp"),
        "bm-text": (b"BM is not a bitmap " * 5, "a.bmp", "image/bmp"),
    }
    for name, (data, filename, ctype) in others.items():
        yield Case("lying_name", name, data, unsupported, filename=filename, content_type=ctype)
    yield Case("lying_name", "path-traversal-filename", sample_file("PNG"), ok,
               filename="../../../etc/passwd.png", content_type="image/png")


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", sample_file("JPEG"))
    return buffer.getvalue()


# --- every mode ------------------------------------------------------------------------------------


def mode_image(mode: str, size: tuple[int, int] = (24, 16)) -> Image.Image:
    """The photo in ``mode``, made the way real files carry that mode."""
    rgb = photo(size)
    arr = np.asarray(rgb.convert("L"), dtype=np.float64)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return Image.fromarray((arr * 257).astype(np.uint16)).convert(mode) if mode != "I;16" \
            else Image.fromarray((arr * 257).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((arr * 257).astype(np.int32))
    if mode == "F":
        return Image.fromarray((arr / 255).astype(np.float32))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = Image.linear_gradient("L").resize(size)
        base = rgb.convert("RGBA")
        base.putalpha(alpha)
        if mode == "PA":
            pa = rgb.convert("P", palette=Image.Palette.ADAPTIVE).convert("PA")
            pa.putalpha(alpha)
            return pa
        return base.convert(mode)
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return rgb.convert(mode)


#: Modes Pillow makes in memory that no file format stores (premultiplied alpha, HSV).
UNSTORABLE_MODES = ("HSV", "La", "RGBa")


def modes(long: bool) -> Iterator[Case]:
    size = (24, 16)
    for mode in sorted(Image.MODES):
        image = mode_image(mode, size)
        stored = 0
        for fmt in FORMATS:
            try:
                data = encode(image, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # this format cannot store this mode
            stored += 1
            reference = _reference(Image.open(io.BytesIO(data)))
            yield Case("mode", f"{mode}-as-{fmt.lower()}", data, frozenset({"ok"}), size=size,
                       reference=reference)
        assert stored or mode in UNSTORABLE_MODES, f"no format stores mode {mode}"


def _reference(image: Image.Image) -> Image.Image | None:
    """What the decoded file looks like in 8-bit RGB(A), for modes where that is well defined."""
    image.load()
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return None
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or image.has_transparency_data:
        return image.convert("RGBA")
    return image.convert("RGB")


# --- aspect ratios and tiny images --------------------------------------------------------------


def aspects(long: bool) -> Iterator[Case]:
    ok = frozenset({"ok"})
    shapes = [(1, 10000), (10000, 1), (1, 1), (1, 2), (2, 1), (3, 3)]
    if long:
        shapes += [(2, 5000), (5000, 2), (1, 3999), (4000, 1000)]
    for width, height in shapes:
        line = photo((max(1, min(width, 48)), max(1, min(height, 32)))).resize((width, height))
        for fmt in FORMATS:
            image = line.convert("P", palette=Image.Palette.ADAPTIVE) if fmt == "GIF" else line
            data = encode(image, fmt)
            too_wide = fmt == "WEBP" and max(width, height) * 2 > 16383  # "same" format: WebP's side limit
            expect = frozenset({"output_too_large"}) if too_wide else ok
            yield Case("aspect", f"{width}x{height}-{fmt.lower()}", data, expect, size=(width, height),
                       params={"model": "lanczos", "scale": 2, "format": "same"})
    fast_models = [("realesr-animevideov3", 2), ("waifu2x-photo", 2), ("realcugan", 2)]
    for model, scale in fast_models if long else fast_models[:1]:
        for width, height in ((1, 2000), (2000, 1), (1, 1)) if long else ((1, 600), (600, 1), (1, 1)):
            data = encode(photo((min(width, 48), min(height, 32))).resize((width, height)), "PNG")
            yield Case("aspect", f"{width}x{height}-{model}", data, ok, size=(width, height),
                       params={"model": model, "scale": scale})


# --- output caps -------------------------------------------------------------------------------------


def output_caps(long: bool) -> Iterator[Case]:
    over = frozenset({"output_too_large"})
    ok = frozenset({"ok"})
    wide = lambda w, h, fmt="PNG": encode(photo((min(w, 48), min(h, 32))).resize((w, h)), fmt)  # noqa: E731
    yield Case("output_cap", "png-1000x1000-x8-over-pixel-cap", wide(1000, 1000), over,
               {"model": "lanczos", "scale": 8})
    if long:  # 16 megapixels of Lanczos: seconds of CPU
        yield Case("output_cap", "png-500x500-x8-at-pixel-cap", wide(500, 500), ok,
                   {"model": "lanczos", "scale": 8}, size=(500, 500))
    yield Case("output_cap", "webp-out-side-16384", wide(2048, 1), over,
               {"model": "lanczos", "scale": 8, "format": "webp"})
    yield Case("output_cap", "webp-out-side-16383", wide(16383, 1), ok,
               {"model": "lanczos", "scale": 1, "format": "webp"}, size=(16383, 1))
    yield Case("output_cap", "jpeg-out-side-72000", wide(9000, 1), over,
               {"model": "lanczos", "scale": 8, "format": "jpeg"})
    yield Case("output_cap", "same-webp-1x10000-x2", wide(1, 10000, "WEBP"), over,
               {"model": "lanczos", "scale": 2, "format": "same"})
    yield Case("output_cap", "model-x4-over-pixel-cap", wide(1100, 1000), over,
               {"model": "realesrgan-x4plus", "scale": 4})


# --- the whole corpus -------------------------------------------------------------------------------

FAMILIES = {
    "truncated": truncated, "flipped": flipped, "pixel_bomb": pixel_bombs, "frame_bomb": frame_bombs,
    "metadata": metadata, "lying_name": lying_names, "mode": modes, "aspect": aspects,
    "output_cap": output_caps,
}


def corpus(long: bool = False, kinds: tuple[str, ...] | None = None) -> list[Case]:
    cases: list[Case] = []
    for kind, family in FAMILIES.items():
        if kinds is None or kind in kinds:
            cases.extend(family(long))
    return cases


# --- judging a result -------------------------------------------------------------------------------

#: Least PSNR (dB) of a Lanczos result against Pillow's own Lanczos enlargement of the same pixels.
MIN_PSNR = 30.0
#: Bilevel (mode 1) edges are all hard: two Lanczos implementations ring and clip them differently.
MIN_PSNR_BILEVEL = 25.0


def judge_result(case: Case, result: bytes, input_size: tuple[int, int] | None = None) -> str | None:
    """None if ``result`` is a correct answer to ``case``; else what is wrong with it."""
    guard = Image.MAX_IMAGE_PIXELS  # the pipeline set it to the input cap; a result may be larger
    Image.MAX_IMAGE_PIXELS = None
    try:
        out = Image.open(io.BytesIO(result))
        out.load()
    except Exception as exc:  # noqa: BLE001 - any failure to read the result is the finding
        return f"the result does not decode: {exc!r}"
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    size = case.size or input_size
    scale = float(case.params.get("scale", 2))
    if size is not None:
        expected = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        if out.size != expected:
            return f"result is {out.size[0]}x{out.size[1]}, expected {expected[0]}x{expected[1]}"
    if case.reference is not None and case.params.get("model") == "lanczos":
        reference = case.reference.resize(out.size, Image.Resampling.LANCZOS)
        got = _on_white(out)
        want = _on_white(reference)
        mse = float(np.mean((got - want) ** 2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
        if psnr < (MIN_PSNR_BILEVEL if case.name.startswith("1-") else MIN_PSNR):
            return f"result differs from a Lanczos enlargement of the input: PSNR {psnr:.1f} dB"
    return None


def _on_white(image: Image.Image) -> np.ndarray:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, "white")
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.float64)
