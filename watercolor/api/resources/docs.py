"""``GET /openapi.json``: the OpenAPI 3 description of every route."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from watercolor.api.common.context import context
from watercolor.api.openapi import openapi_document

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(context().settings))
