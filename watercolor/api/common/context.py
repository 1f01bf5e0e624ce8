"""What one API app holds: its settings, metrics, backends and keys, built once by the factory."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from watercolor.api.common.auth import ApiKeys
from watercolor.api.common.backends import Backends
from watercolor.api.common.metrics import Metrics
from watercolor.config import Settings

EXTENSION = "watercolor"


@dataclass
class ApiContext:
    settings: Settings
    metrics: Metrics
    backends: Backends
    keys: ApiKeys

    @classmethod
    def build(cls, settings: Settings) -> ApiContext:
        metrics = Metrics()
        return cls(settings, metrics, Backends(settings, metrics), ApiKeys(settings.api_keys))


def context() -> ApiContext:
    """The context of the app handling the current request."""
    return current_app.extensions[EXTENSION]
