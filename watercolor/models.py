"""The model catalogue: public names, native scales, options and who they are for.

Public names are a promise to users and never follow the package file names.
This module is pure data (no ncnn import) so the API can describe and validate
models without loading any; :mod:`watercolor.processing.engine` turns a spec
and its options into network files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from watercolor.errors import InvalidParameter, UnknownModel


@dataclass(frozen=True)
class Option:
    name: str
    choices: tuple[Any, ...]
    default: Any
    description: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "realesrgan" | "waifu2x" | "realcugan" | "lanczos"
    scales: tuple[int, ...]  # native scales; empty for resamplers (any scale)
    best_for: str
    cpu_speed: str  # measured input throughput on 2 CPU threads, for the README and /v1/models
    options: tuple[Option, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "native_scales": list(self.scales),
            "any_scale": True,
            "best_for": self.best_for,
            "cpu_speed": self.cpu_speed,
            "options": {
                o.name: {"choices": list(o.choices), "default": o.default,
                         "description": o.description}
                for o in self.options
            },
        }

    def native_scales(self, options: dict[str, Any]) -> tuple[int, ...]:
        """Native scales shipped with these (resolved) options, ascending.

        A 1 means a same-size network (waifu2x cunet's denoise-only models).
        """
        if self.family == "realcugan" and options.get("denoise") in (1, 2):
            return (2,)
        if self.name == "waifu2x-cunet" and options.get("denoise", -1) >= 0:
            return (1, 2)
        return self.scales

    def resolve_options(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults and validate every option; unknown names and values are refused."""
        given = dict(given or {})
        out: dict[str, Any] = {}
        for opt in self.options:
            value = given.pop(opt.name, opt.default)
            if isinstance(value, str) and opt.choices and not isinstance(opt.choices[0], str):
                value = _coerce(value, type(opt.choices[0]))
            # The choice itself, not an equal value of another type: 1.0 == 1 but names no model file.
            match = next((c for c in opt.choices
                          if c == value and isinstance(value, bool) == isinstance(c, bool)), None)
            if match is None:
                shown = ", ".join(str(c).lower() for c in opt.choices)
                raise InvalidParameter(f"{self.name}: option {opt.name}={value!r} must be one of {shown}")
            out[opt.name] = match
        if given:
            raise InvalidParameter(f"{self.name} has no option(s) {', '.join(sorted(given))}")
        return out


def _coerce(text: str, kind: type) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        return text
    try:
        return kind(text)
    except ValueError:
        return text


_DENOISE_W2X = Option("denoise", (-1, 0, 1, 2, 3), 0,
                      "noise reduction level: -1 none, 0 (light) to 3 (strong)")

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("realesrgan-x4plus", "realesrgan", (4,),
                  "real photos: sharp, detailed 4x enlargements (slowest)", "~1.2 kpx/s"),
        ModelSpec("realesrgan-x4plus-anime", "realesrgan", (4,),
                  "anime and illustrations: clean lines at 4x", "~4.6 kpx/s"),
        ModelSpec("realesr-animevideov3", "realesrgan", (2, 3, 4),
                  "anime, cartoons and video frames: fast 2x/3x/4x", "~145 kpx/s"),
        ModelSpec("waifu2x-photo", "waifu2x", (2,),
                  "photos: faithful 2x with optional denoise (best PSNR)", "~145 kpx/s",
                  (_DENOISE_W2X,)),
        ModelSpec("waifu2x-anime", "waifu2x", (2,),
                  "anime-style art: faithful 2x with optional denoise", "~165 kpx/s",
                  (_DENOISE_W2X,)),
        ModelSpec("waifu2x-cunet", "waifu2x", (2,),
                  "illustrations and photos: high-quality 2x with optional denoise", "~70 kpx/s",
                  (_DENOISE_W2X,)),
        ModelSpec("realcugan", "realcugan", (2, 3, 4),
                  "anime and illustrations: crisp 2x/3x/4x with denoise or conservative mode",
                  "~60-80 kpx/s",
                  (Option("denoise", (-1, 0, 1, 2, 3), 0,
                          "-1 conservative, 0 none, 1-3 stronger noise reduction "
                          "(1 and 2 only at 2x; 3x and 4x offer -1, 0 and 3)"),)),
        ModelSpec("lanczos", "lanczos", (),
                  "anything, instantly: classic high-quality Lanczos resampling, any scale",
                  "~1.2 Mpx/s at 4x"),
    )
}

DEFAULT_MODEL = "realesrgan-x4plus"


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        known = ", ".join(MODELS)
        raise UnknownModel(f"unknown model {name!r}; choose one of: {known}") from None


def describe_models(default: str = DEFAULT_MODEL) -> dict[str, Any]:
    return {"default": default, "models": [spec.to_dict() for spec in MODELS.values()]}
