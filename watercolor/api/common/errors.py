"""Every error the API answers with, mapped to HTTP in this one place.

The body is always ``{"error": {"code": ..., "message": ...}}``. Watercolor's
own errors carry their status and public message; Werkzeug's (404, 405, 413
raised by Flask itself) are given a code from :data:`HTTP_CODES`; anything
else is a bug: it is logged with its traceback and answered with a generic
500 that says nothing about the cause. A 503 always carries ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from watercolor.errors import WatercolorError

log = logging.getLogger("watercolor.api")

#: Machine-readable codes for the HTTP errors Flask and Werkzeug raise themselves.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "request_header_fields_too_large",
    501: "not_implemented",
}

#: Public messages for what the HTTP server refuses before the app sees a request
#: (its own texts quote parser internals).
HTTP_MESSAGES = {
    400: "the request is not valid HTTP",
    408: "the request did not arrive in time",
    414: "the request line (URL) is too long",
    431: "the request headers are too large",
    501: "the request's Transfer-Encoding is not supported",
}


def http_error_body(status: int) -> bytes:
    """The JSON body for an error the HTTP server answers itself (never a 5xx but 501)."""
    code = HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    message = HTTP_MESSAGES.get(status) or ("internal error" if status >= 500 else "bad request")
    return json.dumps({"error": {"code": code, "message": message}}).encode()


#: Seconds a client is told to wait after a 503 whose error names no better value.
DEFAULT_RETRY_AFTER = 5


def retry_after(error: WatercolorError) -> int:
    """Whole seconds to put in Retry-After (at least 1)."""
    seconds = getattr(error, "retry_after", None) or DEFAULT_RETRY_AFTER
    return max(1, math.ceil(seconds))


def error_response(error: WatercolorError, **extra: Any) -> Response:
    """The JSON response for ``error``; ``extra`` adds top-level keys (e.g. per-image errors)."""
    body: dict[str, Any] = {"error": error.to_dict(), **extra}
    response = jsonify(body)
    response.status_code = error.status if 400 <= error.status <= 599 else 500
    if response.status_code == 503:
        response.headers["Retry-After"] = str(retry_after(error))
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        return _unexpected(exc)
    code = HTTP_CODES.get(status, "http_error")
    message = (exc.description or exc.name or "error").strip()
    if status == 404:
        message = "no such route"
    elif status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"the request body is over the limit of {limit} bytes" if limit else \
            "the request body is too large"
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if status == 405:
        allowed = exc.get_response().headers.get("Allow")
        if allowed:
            response.headers["Allow"] = allowed
    return response


def _unexpected(exc: BaseException) -> Response:
    status = _client_fault(exc)
    if status is not None:  # the client's body broke HTTP, or stalled, while the app read it
        log.info("request refused while its body was read: %s", type(exc).__name__)
        response = Response(http_error_body(status), status=status, mimetype="application/json")
        response.headers["Connection"] = "close"
        return response
    log.error("unexpected error", exc_info=exc)
    response = jsonify({"error": {"code": "internal_error", "message": "internal error"}})
    response.status_code = 500
    return response


def _client_fault(exc: BaseException) -> int | None:
    """408 for a body that stalled (WTC_IO_TIMEOUT on the client's socket), 400 for one that
    breaks HTTP (bad chunking: gunicorn finds it only as the app reads); None for a bug."""
    if isinstance(exc, TimeoutError | BlockingIOError):
        return 408
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:  # not under gunicorn
        return None
    return 400 if isinstance(exc, ParseException) else None


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(WatercolorError, lambda exc: error_response(exc))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
