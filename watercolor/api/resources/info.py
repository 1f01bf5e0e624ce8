"""Describing the service: the web page or a pointer at ``/``, models, liveness, readiness, metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from watercolor import __version__
from watercolor.api.common.context import context
from watercolor.api.common.errors import error_response
from watercolor.api.resources import web
from watercolor.errors import BackendUnavailable
from watercolor.models import describe_models

bp = Blueprint("info", __name__)


@bp.get("/")
def index() -> Response:
    if web.wants_page():
        return web.page()
    response = jsonify({
        "service": "watercolor",
        "version": __version__,
        "docs": "/openapi.json",
        "upscale": "POST /v1/upscale with an image body, or POST / with a JSON batch",
        "jobs": "POST /v1/jobs, then GET /v1/jobs/ID for progress and results",
        "web": "open / in a browser",
    })
    response.vary.add("Accept")
    return response


@bp.get("/v1/models")
def models() -> Response:
    return jsonify(describe_models(context().settings.default_model))


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    ctx = context()
    backends = ctx.backends.ping()
    # Open to probes; with WTC_API_KEYS set, only a key holder learns the backends' addresses.
    detail = {"backends": backends} if ctx.keys.authorised(request) else {}
    if any(entry["ok"] for entry in backends):
        return jsonify({"status": "ready", **detail})
    return error_response(BackendUnavailable("no processing backend answered a ping"),
                          status="not ready", **detail)


@bp.get("/metrics")
def metrics() -> Response:
    ctx = context()
    return Response(ctx.metrics.render(), content_type=ctx.metrics.content_type)
