"""What one API app holds: its settings, metrics, backends and keys, built once by the factory."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from watercolor.api.common.auth import ApiKeys
from watercolor.api.common.backends import Backends
from watercolor.api.common.metrics import Metrics
from watercolor.api.jobs import Jobs
from watercolor.config import Settings

EXTENSION = "watercolor"


@dataclass
class ApiContext:
    settings: Settings
    metrics: Metrics
    backends: Backends
    keys: ApiKeys
    jobs: Jobs

    @classmethod
    def build(cls, settings: Settings) -> ApiContext:
        metrics = Metrics()
        backends = Backends(settings, metrics)
        return cls(settings, metrics, backends, ApiKeys(settings.api_keys),
                   Jobs(settings, backends, metrics.registry))


def context() -> ApiContext:
    """The context of the app handling the current request."""
    return current_app.extensions[EXTENSION]
