"""Prometheus metrics of one API app, in a registry of its own.

A registry per app (rather than prometheus_client's global one) lets tests
build many apps in one process and read each one's numbers. The API runs as
one process, so these numbers are the whole service's view.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("wtc_api_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("wtc_api_request_seconds", "Time to answer an HTTP request",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("wtc_api_requests_in_flight", "HTTP requests being answered",
                               registry=r)
        self.images_in_flight = Gauge("wtc_api_images_in_flight",
                                      "Images sent to a backend and not yet answered", registry=r)
        self.images = Counter("wtc_api_images", "Images finished, by model and outcome "
                              "(ok or the error code)", ["model", "outcome"], registry=r)
        self.backend_images = Counter("wtc_api_backend_images",
                                      "Final answers (result or error) received from each backend",
                                      ["backend", "outcome"], registry=r)
        self.retries = Counter("wtc_api_backend_retries",
                               "Images sent again after a busy answer or a failed attempt",
                               ["reason"], registry=r)
        self.busy = Counter("wtc_api_backend_busy", "Busy answers received from each backend",
                            ["backend"], registry=r)
        self.failures = Counter("wtc_api_backend_failures",
                                "Attempts that failed at a backend (refused, lost, stalled, broken)",
                                ["backend", "reason"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent); handy for tests and logs."""
        got = self.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got
