"""``POST /``: the original client shape, a JSON batch of base64 images.

Request: ``{"id": ..., "images": ["<base64>", ...]}`` plus optional ``scale``,
``model``, ``format``, ``quality`` and the model's options (top-level keys or
an ``options`` object). Answer: ``{"id": ..., "images": ["<base64>", ...]}``,
the same id and one image per input, in input order.

A partly failed batch answers 200: a failed image's place in ``images`` holds
``null`` and an ``errors`` list gives ``{"index", "code", "message"}`` for each
failure (the key is absent when every image succeeded, so a successful answer
has exactly the original shape). When every image failed the answer is the
first image's error status and ``{"error": ...}`` body, with ``id``,
``images`` (all null) and ``errors`` beside it.
"""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, Response, g, jsonify

from watercolor.api.common import images as imaging
from watercolor.api.common.backends import Outcome
from watercolor.api.common.context import context
from watercolor.api.common.errors import error_response
from watercolor.api.common.inputs import check_batch_size, json_body, params_from
from watercolor.errors import BadRequest, WatercolorError

bp = Blueprint("legacy", __name__)
log = logging.getLogger("watercolor.api")

RESERVED_KEYS = {"id", "images", "options"}
PARAMETER_NAMES = {"scale", "model", "format", "quality", "tile_size"}


@bp.post("/")
def upscale_batch() -> Response:
    body = json_body()
    if "images" not in body:
        raise BadRequest("the JSON body needs an 'images' list of base64 strings")
    raw_images = body["images"]
    if not isinstance(raw_images, list):
        raise BadRequest("'images' must be a list of base64 strings")
    check_batch_size(len(raw_images))
    params = params_from({k: v for k, v in body.items() if k not in RESERVED_KEYS},
                         options=_options(body))

    inputs: list[bytes | WatercolorError] = []
    for index, item in enumerate(raw_images):
        try:
            inputs.append(imaging.decode_base64(item, index))
        except WatercolorError as exc:
            inputs.append(exc)
    ctx = context()
    inputs = imaging.checked(inputs, params, ctx.settings)
    outcomes = ctx.backends.upscale_all(inputs, params, deadline=g.deadline,
                                        request_id=g.request_id or uuid.uuid4().hex[:12])
    return _answer(body.get("id"), outcomes)


def _options(body: dict) -> object:
    """Model options from the ``options`` object and top-level keys together (None: neither)."""
    options = body.get("options")
    if not isinstance(options, dict):
        return options  # None lets top-level keys speak; anything else is refused as invalid
    extra = {k: v for k, v in body.items()
             if k not in RESERVED_KEYS and k not in PARAMETER_NAMES and v is not None}
    return {**extra, **options}


def _answer(request_id: object, outcomes: list[Outcome]) -> Response:
    images = [imaging.encode_base64(o.image) if o.ok and o.image is not None else None
              for o in outcomes]
    errors = [{"index": i, **o.error.to_dict()} for i, o in enumerate(outcomes) if o.error is not None]
    if errors:
        log.info("batch %s: %d of %d images failed", request_id, len(errors), len(outcomes))
    if errors and len(errors) == len(outcomes):
        first = outcomes[0].error
        assert first is not None
        return error_response(first, id=request_id, images=images, errors=errors)
    body: dict[str, object] = {"id": request_id, "images": images}
    if errors:
        body["errors"] = errors
    return jsonify(body)
