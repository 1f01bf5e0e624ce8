"""Request parameters, parsed and validated the same way by the API and the backend."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from watercolor.errors import InvalidParameter
from watercolor.models import get_model

#: Output formats and the Pillow format names behind them; "same" keeps the input's format.
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "same": None}
FORMAT_ALIASES = {"jpg": "jpeg"}
MIN_SCALE = 1.0
DEFAULT_QUALITY = 92
RESERVED = {"scale", "model", "format", "quality", "tile_size", "id", "images"}


@dataclass(frozen=True)
class Params:
    model: str
    scale: float
    format: str = "png"
    quality: int = DEFAULT_QUALITY
    options: dict[str, Any] = field(default_factory=dict)
    tile_size: int | None = None

    def to_header(self) -> dict[str, Any]:
        header: dict[str, Any] = {"model": self.model, "scale": self.scale, "format": self.format,
                                  "quality": self.quality}
        if self.options:
            header["options"] = dict(self.options)
        if self.tile_size:
            header["tile_size"] = self.tile_size
        return header


def parse_scale(value: Any, max_scale: float) -> float:
    if isinstance(value, bool):
        raise InvalidParameter(f"scale must be a number, not {value!r}")
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"scale must be a number, not {value!r}") from None
    if not math.isfinite(scale) or not MIN_SCALE <= scale <= max_scale:
        raise InvalidParameter(
            f"scale must be between {MIN_SCALE:g} and {max_scale:g}, not {value!r}")
    return scale


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The exact size of a result, the one rule the API's limits, the engine and the encoder share:
    each side times the scale, a half rounded up (33 px at 1.5x is 50, 35 px is 53), at least 1.

    Not Python's ``round()``, which rounds a half to the even neighbour (52.5 would become 52).
    """
    return _scaled(width, scale), _scaled(height, scale)


def scale_text(scale: float) -> str:
    """The scale as the user wrote it, for names and headers: 2.0 is "2", 1.2345678 stays whole."""
    return format(Decimal(repr(float(scale))).normalize(), "f")


def _scaled(length: int, scale: float) -> int:
    # In decimal, on the scale as written: in binary floating point 50 x 1.15 is 57.4999...,
    # which would round down although the user asked for exactly 57.5.
    exact = Decimal(length) * Decimal(repr(float(scale)))
    return max(1, int(exact.to_integral_value(rounding=ROUND_HALF_UP)))


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise InvalidParameter(f"{name} must be an integer, not {value!r}")
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float (JSON 1e999)
        raise InvalidParameter(f"{name} must be an integer, not {value!r}") from None
    if not lo <= number <= hi:
        raise InvalidParameter(f"{name} must be between {lo} and {hi}, not {number}")
    return number


#: The scale of a model without native scales (a resampler) when a request names none.
DEFAULT_ANY_SCALE = 2


def parse_params(raw: Mapping[str, Any], *, default_model: str, max_scale: float,
                 options: Mapping[str, Any] | None = None) -> Params:
    """Validate a mapping of request parameters (query string, form, JSON or wire header).

    Model options come from ``options`` (a mapping) or, failing that, from any
    key of ``raw`` that is not a reserved parameter name.
    """
    model_name = raw.get("model") or default_model
    spec = get_model(model_name)
    given_scale = raw.get("scale")

    fmt = str(raw.get("format") or "png").strip().lower()
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in OUTPUT_FORMATS:
        raise InvalidParameter(
            f"format must be one of {', '.join(OUTPUT_FORMATS)}, not {raw.get('format')!r}")

    quality = DEFAULT_QUALITY
    if raw.get("quality") not in (None, ""):
        quality = _int("quality", raw["quality"], 1, 100)

    tile_size = None
    if raw.get("tile_size") not in (None, "", 0, "0"):
        tile_size = _int("tile_size", raw["tile_size"], 16, 4096)

    if options is None:
        options = {k: v for k, v in raw.items() if k not in RESERVED}
    elif not isinstance(options, Mapping):
        raise InvalidParameter("options must be an object")
    resolved = spec.resolve_options(dict(options))
    if given_scale is None:  # the largest native scale shipped with these options
        natives = spec.native_scales(resolved)
        given_scale = natives[-1] if natives else DEFAULT_ANY_SCALE
    scale = parse_scale(given_scale, max_scale)
    return Params(spec.name, scale, fmt, quality, resolved, tile_size)
