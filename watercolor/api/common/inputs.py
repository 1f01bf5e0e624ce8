"""Reading what a client sent: the media type, a JSON body, uploaded files, parameters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import request

from watercolor.api.common.context import context
from watercolor.errors import BadRequest, InvalidParameter, UnsupportedMediaType
from watercolor.params import Params, parse_params

#: Form and query fields that are not parameters.
NOT_PARAMETERS = {"image"}


def media_type() -> str:
    """The request's media type, lower case, without parameters ("" when absent)."""
    return (request.mimetype or "").lower()


def is_image_body(mimetype: str) -> bool:
    return mimetype.startswith("image/") or mimetype == "application/octet-stream"


def params_from(raw: Mapping[str, Any], options: Any = None) -> Params:
    """Validate request parameters; a JSON null means "the default"."""
    settings = context().settings
    given = {k: v for k, v in raw.items() if v is not None and k not in NOT_PARAMETERS}
    for key, value in given.items():
        _strict(key, value)
    return parse_params(given, default_model=settings.default_model, max_scale=settings.max_scale,
                        options=options)


def _strict(key: str, value: Any) -> None:
    """What the shared parser would quietly read as "the default" is refused here, in public."""
    if isinstance(value, str) and not value.strip():
        raise InvalidParameter(f"{key} must not be empty")
    if key in ("model", "format") and not isinstance(value, str):
        raise InvalidParameter(f"{key} must be a string, not {value!r}")
    if key == "tile_size" and (isinstance(value, bool) or value in (0, "0")):
        raise InvalidParameter(f"tile_size must be between 16 and 4096, not {value!r}")


def query_params() -> dict[str, str]:
    """Query string parameters; a name given twice is refused rather than silently picked."""
    return _single_values(request.args, "query parameter")


def form_params() -> dict[str, str]:
    return _single_values(request.form, "form field")


def _single_values(multidict: Any, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in multidict:
        values = multidict.getlist(key)
        if len(values) > 1:
            raise BadRequest(f"{what} {key!r} is given more than once")
        out[key] = values[0]
    return out


def json_body() -> dict[str, Any]:
    """The body as a JSON object; 415 when it is declared as something else, 400 when malformed."""
    mimetype = media_type()
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"send JSON (Content-Type: application/json), not {mimetype}")
    data = request.get_data(cache=False)
    if not data:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        body = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError):
        # Not UTF-8, nested deeper than the parser recurses, or an integer of more digits
        # than Python converts: the parser's own words would only confuse.
        raise BadRequest("malformed JSON: not UTF-8, nested too deeply, or a number too long") from None
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object")
    return body


def check_batch_size(count: int) -> None:
    limit = context().settings.max_batch
    if count > limit:
        raise InvalidParameter(f"{count} images in one request; the limit is {limit}",
                               code="too_many_images")


def uploaded_images() -> list[tuple[str | None, bytes]]:
    """The ``image`` file fields of a multipart request, in order, as (filename, bytes)."""
    others = sorted(set(request.files) - {"image"})
    if others:
        raise BadRequest(f"unexpected file field(s) {', '.join(others)}; send images as 'image'")
    if "image" in request.form:
        raise BadRequest("the 'image' field must be a file part (a filename in its "
                         "Content-Disposition)")
    files = request.files.getlist("image")
    if not files:
        raise BadRequest("no 'image' file field in the multipart body")
    check_batch_size(len(files))
    return [(f.filename, f.read()) for f in files]
