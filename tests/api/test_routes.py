"""Describing the service: the route map, the OpenAPI document, models and probes."""

from __future__ import annotations

import re

import pytest
from apitools import free_port

from watercolor.api import create_app
from watercolor.config import load_settings
from watercolor.models import MODELS


@pytest.fixture
def offline_app():
    return create_app(load_settings({}, process_backends=f"127.0.0.1:{free_port()}", api_retries=0))


def test_openapi_describes_every_route_and_method(offline_app):
    document = offline_app.test_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    served = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
              for rule in offline_app.url_map.iter_rules()
              if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert described == served
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            assert op["operationId"]


def test_openapi_document_resolves_its_references(offline_app):
    document = offline_app.test_client().get("/openapi.json").get_json()
    schemas = document["components"]["schemas"]

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                assert node["$ref"].removeprefix("#/components/schemas/") in schemas, node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def test_openapi_lists_security_only_when_keys_are_required():
    keyed = create_app(load_settings({}, api_keys="k")).test_client()
    document = keyed.get("/openapi.json").get_json()
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    assert "401" in document["paths"]["/v1/upscale"]["post"]["responses"]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_models_lists_the_catalogue_with_the_configured_default():
    app = create_app(load_settings({}, default_model="lanczos"))
    body = app.test_client().get("/v1/models").get_json()
    assert body["default"] == "lanczos"
    assert [m["name"] for m in body["models"]] == list(MODELS)
    waifu = next(m for m in body["models"] if m["name"] == "waifu2x-photo")
    assert waifu["native_scales"] == [2] and "denoise" in waifu["options"] and waifu["best_for"]


def test_healthz_index_and_request_ids(offline_app):
    client = offline_app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    index = client.get("/")
    assert index.status_code == 200 and index.get_json()["docs"] == "/openapi.json"
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    assert len(client.get("/healthz", headers={"X-Request-Id": "bad id;"}).headers["X-Request-Id"]) == 12


def test_metrics_are_prometheus_text_per_app(offline_app):
    client = offline_app.test_client()
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for name in ("wtc_api_requests_total", "wtc_api_request_seconds_bucket", "wtc_api_requests_in_flight",
                 "wtc_api_images_in_flight"):
        assert name in text
    assert 'wtc_api_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    # a second app has numbers of its own
    other = create_app(load_settings({})).test_client().get("/metrics").get_data(as_text=True)
    assert 'route="/healthz"' not in other


def test_metrics_count_a_wrong_method_under_the_route_whose_path_matched(offline_app):
    client = offline_app.test_client()
    assert client.get("/v1/upscale").status_code == 405
    assert client.delete("/v1/upscale").status_code == 405
    assert client.get("/v1/jobs/0123/cancel").status_code == 405
    assert client.get("/no/such/page").status_code == 404
    text = client.get("/metrics").get_data(as_text=True)
    for method, route, status in [("GET", "/v1/upscale", 405), ("DELETE", "/v1/upscale", 405),
                                  ("GET", "/v1/jobs/<job_id>/cancel", 405), ("GET", "unmatched", 404)]:
        assert f'wtc_api_requests_total{{method="{method}",route="{route}",status="{status}"}} 1.0' in text


def test_metrics_labels_stay_bounded_whatever_method_a_client_invents(offline_app):
    client = offline_app.test_client()
    for word in ("XAAA", "XAAB", "BREW", "PROPFIND"):
        assert client.open("/healthz", method=word).status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert 'wtc_api_requests_total{method="other",route="/healthz",status="405"} 4.0' in text
    assert "XAAA" not in text and "BREW" not in text
