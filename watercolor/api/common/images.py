"""What the API checks about an image before a backend sees it, and how results are named.

Limits come before work: the encoded size, then the pixel counts read from
the image's header (Pillow reads only the header here, it decodes nothing).
An image Pillow cannot even identify is still sent on: the backend decides,
and answers with the authoritative ``corrupt_image`` or ``unsupported_format``.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import unicodedata
import warnings
from pathlib import PurePosixPath
from urllib.parse import quote

from PIL import Image

from watercolor.config import Settings
from watercolor.errors import (
    BadRequest,
    EmptyImage,
    ImageTooLarge,
    OutputTooLarge,
    PayloadTooLarge,
    WatercolorError,
)
from watercolor.params import Params, output_size, scale_text

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif",
              "image/tiff": "tiff", "image/bmp": "bmp"}


def decode_base64(text: object, index: int) -> bytes:
    """One base64 image of a JSON batch (a ``data:`` URL prefix and URL-safe letters are fine)."""
    if not isinstance(text, str):
        raise BadRequest(f"images[{index}] must be a base64 string", code="invalid_base64")
    text = _WHITESPACE.sub("", _DATA_URL.sub("", text, count=1))
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"images[{index}] is not valid base64", code="invalid_base64") from None


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def peek_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header, or None when Pillow cannot tell."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                return img.size
        except Image.DecompressionBombError:
            raise ImageTooLarge("the image has far too many pixels") from None
        except Exception:  # noqa: BLE001 - any failure to identify means: let the backend judge
            return None


def check_image(data: bytes, params: Params, settings: Settings) -> None:
    """Refuse an image over the byte or pixel limits before it is sent anywhere."""
    if not data:
        raise EmptyImage()
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"the image is {len(data)} bytes; the limit is {settings.max_image_bytes} bytes")
    size = peek_size(data)
    if size is None:
        return
    width, height = size
    if width * height > settings.max_input_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} pixels; the limit is "
                            f"{settings.max_input_pixels} pixels")
    out_w, out_h = output_size(width, height, params.scale)
    if out_w * out_h > settings.max_output_pixels:
        raise OutputTooLarge(f"the result would be {out_w}x{out_h} pixels; the limit is "
                             f"{settings.max_output_pixels} pixels")


def checked(images: list[bytes | WatercolorError], params: Params,
            settings: Settings) -> list[bytes | WatercolorError]:
    """Each image, or the error that keeps it from being sent (earlier errors pass through)."""
    out: list[bytes | WatercolorError] = []
    for data in images:
        if not isinstance(data, WatercolorError):
            try:
                check_image(data, params, settings)
            except WatercolorError as exc:
                data = exc
        out.append(data)
    return out


def result_name(filename: str | None, index: int, scale: float, info: dict) -> str:
    """A result's file name: the input's stem, ``_x`` and the scale as written, the output's extension."""
    return f"{stem(filename, index)}_x{scale_text(scale)}.{extension(info)}"


def extension(info: dict, fallback: str = "png") -> str:
    """File extension for a result, from the MIME type or format the backend reported."""
    mime = str(info.get("mime") or "").lower()
    if mime in EXTENSIONS:
        return EXTENSIONS[mime]
    fmt = str(info.get("format") or "").lower()
    return {"jpeg": "jpg"}.get(fmt, fmt) or fallback


def stem(filename: str | None, index: int) -> str:
    """A safe base name for a result in a zip (``image-N`` when the upload had no usable name)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    base = re.sub(r"[^\w.+-]+", "_", name.rsplit(".", 1)[0] if "." in name else name).strip("._")
    return base[:100] or f"image-{index + 1}"


ERROR_SUFFIX = ".error.json"  # a failed image's entry in a zip of results: NAME.error.json


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name`` with -2, -3... before the extension when an earlier entry took it."""
    suffix = ERROR_SUFFIX if name.endswith(ERROR_SUFFIX) else "." + name.rpartition(".")[2]
    base = name.removesuffix(suffix)
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{base}-{n}{suffix}"
    used.add(candidate)
    return candidate


def content_disposition(kind: str, filename: str) -> str:
    """``kind; filename="..."``, with RFC 6266's ``filename*`` beside an ASCII stand-in when the
    name is not plain ASCII (HTTP headers are Latin-1 at most: anything else cannot be sent)."""
    if filename.isascii():
        return f'{kind}; filename="{filename}"'
    fallback = re.sub(r"[^\x20-\x7e]|[\"\\]", "_", unicodedata.normalize("NFKD", filename))
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
