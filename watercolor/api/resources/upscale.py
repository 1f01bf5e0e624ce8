"""``POST /v1/upscale``: image bytes in, image bytes out.

* A raw body (``Content-Type: image/*`` or ``application/octet-stream``) is one
  image; parameters come from the query string. The answer is the enlarged
  image with its own Content-Type, or that image's error.
* ``multipart/form-data`` carries one or more ``image`` file fields;
  parameters come from the query string and form fields (a name in both is
  refused). One image answers like a raw body. Several answer a zip of
  ``NAME.EXT`` files in input order: 200 when all succeeded; 207 when some
  failed, each failure stored as ``NAME.error.json`` (``{"error": {code,
  message}}``) in place of its image; and when all failed, the first image's
  error status with a JSON body listing every error. The ``X-Watercolor-Images``
  and ``X-Watercolor-Failed`` headers count the images and the failures.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

from flask import Blueprint, Response, g, request

from watercolor.api.common import images as imaging
from watercolor.api.common.backends import Outcome
from watercolor.api.common.context import context
from watercolor.api.common.errors import error_response
from watercolor.api.common.inputs import (
    form_params,
    is_image_body,
    media_type,
    params_from,
    query_params,
    uploaded_images,
)
from watercolor.errors import BadRequest, UnsupportedMediaType, WatercolorError
from watercolor.params import Params, scale_text

bp = Blueprint("upscale", __name__, url_prefix="/v1")

MULTI_STATUS = 207


@bp.post("/upscale")
def upscale() -> Response:
    mimetype = media_type()
    if is_image_body(mimetype):
        params = params_from(query_params())
        uploads: list[tuple[str | None, bytes]] = [(None, request.get_data(cache=False))]
    elif mimetype == "multipart/form-data":
        query, form = query_params(), form_params()
        both = sorted(set(query) & set(form))
        if both:
            raise BadRequest(f"parameter(s) {', '.join(both)} given in both the query and the form")
        uploads = uploaded_images()
        params = params_from({**query, **form})
    else:
        shown = mimetype or "no Content-Type"
        raise UnsupportedMediaType(
            f"send an image (Content-Type image/* or application/octet-stream) or "
            f"multipart/form-data with 'image' file fields, not {shown}")

    ctx = context()
    inputs = imaging.checked([data for _, data in uploads], params, ctx.settings)
    outcomes = ctx.backends.upscale_all(inputs, params, deadline=g.deadline,
                                        request_id=g.request_id or uuid.uuid4().hex[:12])
    if len(outcomes) == 1:
        return _image_response(outcomes[0], params, uploads[0][0])
    return _zip_response(outcomes, params, [name for name, _ in uploads])


def _image_response(outcome: Outcome, params: Params, filename: str | None) -> Response:
    if outcome.error is not None:
        return error_response(outcome.error)
    assert outcome.image is not None
    response = Response(outcome.image, mimetype=str(outcome.info.get("mime") or "image/png"))
    name = imaging.result_name(filename, 0, params.scale, outcome.info)
    response.headers["Content-Disposition"] = imaging.content_disposition("inline", name)
    for header, key in (("X-Watercolor-Width", "width"), ("X-Watercolor-Height", "height")):
        if key in outcome.info:
            response.headers[header] = str(outcome.info[key])
    response.headers["X-Watercolor-Model"] = params.model
    response.headers["X-Watercolor-Scale"] = scale_text(params.scale)
    return response


def _zip_response(outcomes: list[Outcome], params: Params, filenames: list[str | None]) -> Response:
    failed = [o for o in outcomes if o.error is not None]
    if len(failed) == len(outcomes):
        first = failed[0].error
        assert first is not None
        response = error_response(first, errors=[{"index": i, **_error(o).to_dict()}
                                                 for i, o in enumerate(outcomes)])
        response.headers["X-Watercolor-Images"] = response.headers["X-Watercolor-Failed"] = \
            str(len(outcomes))
        return response
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, (outcome, filename) in enumerate(zip(outcomes, filenames, strict=True)):
            if outcome.error is None:
                assert outcome.image is not None
                name = imaging.result_name(filename, index, params.scale, outcome.info)
                name = imaging.unique_name(name, used)
                archive.writestr(name, outcome.image)
            else:
                name = imaging.unique_name(f"{imaging.stem(filename, index)}{imaging.ERROR_SUFFIX}", used)
                archive.writestr(name, json.dumps({"error": outcome.error.to_dict()}, indent=2) + "\n")
    response = Response(buffer.getvalue(), mimetype="application/zip",
                        status=MULTI_STATUS if failed else 200)
    response.headers["Content-Disposition"] = 'attachment; filename="watercolor.zip"'
    response.headers["X-Watercolor-Images"] = str(len(outcomes))
    response.headers["X-Watercolor-Failed"] = str(len(failed))
    return response


def _error(outcome: Outcome) -> WatercolorError:
    assert outcome.error is not None
    return outcome.error
