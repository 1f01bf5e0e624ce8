"""Every Watercolor setting, declared once.

Each setting is a ``WTC_*`` environment variable with a type, a default and a
one-line description. :func:`load_settings` reads them all at start-up,
validates them, and raises :class:`ConfigError` naming the bad variable and
value. Nothing else in the code reads the environment: the resulting
:class:`Settings` object is passed down explicitly. The README's settings
table is checked against these declarations by a test.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A WTC_* variable has a value that cannot be used."""


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type
    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None
    choices: tuple[str, ...] | None = None

    @property
    def attr(self) -> str:
        return self.name.removeprefix("WTC_").lower()


def _at_least(lo: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lo else f"must be at least {lo:g}"


def _between(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be a TCP port (0-65535)"


def _models(*, several: bool) -> Callable[[str], str | None]:
    """Each name (comma-separated when ``several``) is a model of the catalogue."""

    def check(value: str) -> str | None:
        from watercolor.models import MODELS

        names = [n.strip() for n in value.split(",") if n.strip()] if several else [value]
        unknown = [n for n in names if n not in MODELS]
        if not unknown:
            return None
        what = f"names no such model: {', '.join(unknown)}" if several else "is no model name"
        return f"{what} (choose from: {', '.join(MODELS)})"

    return check


MIB = 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    # --- processing backend ---
    Setting("WTC_PROCESS_HOST", str, "0.0.0.0", "Address the processing backend listens on"),
    Setting("WTC_PROCESS_PORT", int, 32017, "TCP port the processing backend listens on", _port),
    Setting("WTC_DEVICE", str, "cpu", "Inference device: cpu, vulkan, or auto (Vulkan when a GPU is found)",
            choices=("auto", "cpu", "vulkan")),
    Setting("WTC_GPU_ID", int, 0, "Vulkan device index used when WTC_DEVICE selects the GPU", _at_least(0)),
    Setting("WTC_THREADS", int, 0, "CPU threads per inference (0: all cores)", _at_least(0)),
    Setting("WTC_SLOTS", int, 1, "Images a backend processes at once", _at_least(1)),
    Setting("WTC_QUEUE", int, 4, "Requests a backend holds waiting for a slot before answering busy",
            _at_least(0)),
    Setting("WTC_TILE_SIZE", int, 0,
            "Tile edge in input pixels (0: each model's default, sized for about 1.5 GB)",
            lambda v: None if v == 0 or v >= 16 else "must be 0 (per-model default) or at least 16"),
    Setting("WTC_IO_TIMEOUT", float, 30.0,
            "Seconds any single socket read or write may stall (backends, and HTTP clients of the API)",
            _at_least(0.1)),
    Setting("WTC_GRACE_PERIOD", float, 60.0,
            "Seconds a backend keeps finishing work in flight after SIGTERM", _at_least(0)),
    Setting("WTC_SHARED_SECRET", str, "", "Shared secret for HMAC-authenticated API-backend traffic "
            "(empty: no authentication)"),
    Setting("WTC_PRELOAD", str, "", "Comma-separated models a backend loads at start-up "
            "(empty: load on first use)", _models(several=True)),
    # --- limits (both sides) ---
    Setting("WTC_MAX_IMAGE_BYTES", int, 50 * MIB, "Largest encoded image accepted, in bytes",
            _at_least(1)),
    Setting("WTC_MAX_INPUT_PIXELS", int, 40_000_000, "Largest decoded input, in pixels (width x height)",
            _at_least(1)),
    Setting("WTC_MAX_OUTPUT_PIXELS", int, 160_000_000, "Largest output image, in pixels",
            _at_least(1)),
    Setting("WTC_MAX_SCALE", float, 8.0, "Largest scale factor a request may ask for",
            _between(1, 16)),
    # --- API ---
    Setting("WTC_API_HOST", str, "0.0.0.0", "Address the HTTP API listens on"),
    Setting("WTC_API_PORT", int, 5000, "TCP port of the HTTP API", _port),
    Setting("WTC_API_WORKERS", int, 16, "Threads of the API's WSGI server", _at_least(1)),
    Setting("WTC_PROCESS_SERVICE_HOST", str, "127.0.0.1",
            "Processing backend (or the Service in front of them) the API sends images to"),
    Setting("WTC_PROCESS_SERVICE_PORT", int, 32017, "Port of WTC_PROCESS_SERVICE_HOST", _port),
    Setting("WTC_PROCESS_BACKENDS", str, "",
            "Comma-separated HOST:PORT list the API spreads work over itself "
            "(overrides WTC_PROCESS_SERVICE_HOST/PORT; used by ./run.sh)"),
    Setting("WTC_API_PARALLEL", int, 8, "Images of one request sent to backends at once",
            _at_least(1)),
    Setting("WTC_API_DEADLINE", float, 900.0, "Seconds one HTTP request may take in all",
            _at_least(1)),
    Setting("WTC_API_RETRIES", int, 3,
            "Retries of an image after a refused connection or a backend lost mid-image",
            _at_least(0)),
    Setting("WTC_MAX_BODY_BYTES", int, 200 * MIB, "Largest HTTP request body, in bytes",
            _at_least(1)),
    Setting("WTC_MAX_BATCH", int, 64, "Most images in one request", _at_least(1)),
    Setting("WTC_API_KEYS", str, "", "Comma-separated API keys; when set, requests need one "
            "(Authorization: Bearer KEY or X-API-Key)"),
    Setting("WTC_DEFAULT_MODEL", str, "realesrgan-x4plus", "Model used when a request names none",
            _models(several=False)),
    # --- jobs ---
    Setting("WTC_DATA_DIR", str, "", "Directory for jobs and their results, one per API (empty: "
            "watercolor-UID-PORT in the system's temporary directory, PORT being WTC_API_PORT; "
            "./run.sh uses .data/api-PORT in the checkout)"),
    Setting("WTC_JOB_TTL", float, 3600.0, "Seconds a finished job's results are kept",
            _at_least(1)),
    Setting("WTC_MAX_JOBS", int, 100, "Most jobs kept at once", _at_least(1)),
    Setting("WTC_MAX_STORE_BYTES", int, 2048 * MIB, "Most bytes of job results kept on disk",
            _at_least(1)),
    # --- local stack and logging ---
    Setting("WTC_LOCAL_BACKENDS", int, 2, "Processing backends ./run.sh starts on localhost",
            _between(1, 64)),
    Setting("WTC_LOG_LEVEL", str, "INFO", "Log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _parse(setting: Setting, raw: str) -> Any:
    if setting.kind is str:
        value: Any = raw.strip()
        if setting.choices:
            value = value.upper() if setting.name == "WTC_LOG_LEVEL" else value.lower()
    elif setting.kind is int:
        value = int(raw.strip().replace("_", ""))
    elif setting.kind is float:
        value = float(raw.strip())
        if not math.isfinite(value):
            raise ValueError("not a finite number")
    else:  # pragma: no cover - declarations only use the kinds above
        raise TypeError(setting.kind)
    return value


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]

    def __getattr__(self, attr: str) -> Any:
        try:
            return self.values[attr]
        except KeyError:
            raise AttributeError(attr) from None

    def replace(self, **changes: Any) -> Settings:
        unknown = set(changes) - set(self.values)
        if unknown:
            raise AttributeError(f"unknown settings: {sorted(unknown)}")
        return Settings({**self.values, **changes})

    @property
    def backends(self) -> list[tuple[str, int]]:
        """The backend addresses the API uses, in order."""
        if self.process_backends:
            return [parse_hostport(item) for item in self.process_backends.split(",") if item.strip()]
        return [(self.process_service_host, self.process_service_port)]


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read, parse and validate every setting; keyword overrides win over the environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.attr in overrides:
            value = overrides.pop(setting.attr)
            values[setting.attr] = _checked(setting, value, repr(value))
        else:
            values[setting.attr] = _read(setting, environ)
    if overrides:
        raise ConfigError(f"unknown settings: {sorted(overrides)}")
    settings = Settings(values)
    if settings.process_backends:
        for item in settings.process_backends.split(","):
            try:
                parse_hostport(item)
            except ValueError as exc:
                raise ConfigError(f"WTC_PROCESS_BACKENDS={settings.process_backends!r}: {exc}") from None
    return settings


def load_setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One setting, read and checked as :func:`load_settings` does, for a command that needs no other."""
    return _read(_BY_NAME[name], os.environ if environ is None else environ)


def _read(setting: Setting, environ: Mapping[str, str]) -> Any:
    raw = environ.get(setting.name, "")
    if raw.strip() == "":
        return setting.default
    try:
        value = _parse(setting, raw)
    except ValueError:
        raise ConfigError(f"{setting.name}={raw!r} is not a valid {setting.kind.__name__}") from None
    return _checked(setting, value, repr(raw))


def _checked(setting: Setting, value: Any, shown: str) -> Any:
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{setting.name}={shown} must be one of: {', '.join(setting.choices)}")
    problem = setting.check(value) if setting.check else None
    if problem:
        raise ConfigError(f"{setting.name}={shown} {problem}")
    return value


def describe(name: str) -> Setting:
    return _BY_NAME[name]
