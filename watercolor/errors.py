"""One error hierarchy for the whole service.

Every error a client may see has a stable machine-readable ``code``, an HTTP
``status`` and a public ``message``. The processing backend sends ``code`` and
``message`` over the wire; the API maps codes back to these classes with
:func:`from_code`, and maps any of them to HTTP in one place. Internal detail
(paths, tracebacks) never goes into ``message``.
"""

from __future__ import annotations

#: Longest public message, in characters. Messages quote what a client sent ("unknown model
#: '...'"); unbounded, a 60 KB value made a reply too large for a wire header to carry.
MAX_MESSAGE_CHARS = 500


class WatercolorError(Exception):
    code = "internal_error"
    status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        message = message or self.default_message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS - 1] + "\u2026"
        self.message = message
        if code:
            self.code = code
        super().__init__(self.message)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(WatercolorError):
    code, status, default_message = "bad_request", 400, "malformed request"


class Unauthorized(WatercolorError):
    code, status, default_message = "unauthorized", 401, "a valid API key is required"


class NotFound(WatercolorError):
    code, status, default_message = "not_found", 404, "not found"


class PayloadTooLarge(WatercolorError):
    code, status, default_message = "payload_too_large", 413, "request body is too large"


class UnsupportedMediaType(WatercolorError):
    code, status, default_message = "unsupported_media_type", 415, "unsupported content type"


class UnsupportedFormat(WatercolorError):
    code, status, default_message = "unsupported_format", 415, "not an image format Watercolor reads"


class InvalidParameter(WatercolorError):
    code, status, default_message = "invalid_parameter", 422, "invalid parameter"


class UnknownModel(InvalidParameter):
    code, default_message = "unknown_model", "unknown model"


class EmptyImage(WatercolorError):
    code, status, default_message = "empty_image", 400, "the image is empty (zero bytes)"


class CorruptImage(WatercolorError):
    code, status, default_message = "corrupt_image", 422, "the image data is corrupt or truncated"


class ImageTooLarge(WatercolorError):
    code, status, default_message = "image_too_large", 422, "the image has too many pixels"


class OutputTooLarge(WatercolorError):
    code, status, default_message = "output_too_large", 422, "the result would be too large"


class Conflict(WatercolorError):
    code, status, default_message = "conflict", 409, "not possible in the current state"


class TooManyRequests(WatercolorError):
    code, status, default_message = "too_many_requests", 429, "too many requests"


class TooManyJobs(TooManyRequests):
    code, default_message = "too_many_jobs", "the job store holds as many jobs as it may"


class BackendBusy(WatercolorError):
    code, status, default_message = "backend_busy", 503, "all processing backends are busy"
    retry_after = 5


class BackendUnavailable(WatercolorError):
    code, status, default_message = "backend_unavailable", 503, "no processing backend is reachable"
    retry_after = 10


class StoreUnavailable(WatercolorError):
    code, status, default_message = "store_unavailable", 503, "the job store cannot be used now"
    retry_after = 30


class StoreFull(StoreUnavailable):
    code, default_message = "store_full", "the job store is full"
    retry_after = 60


class ShuttingDown(BackendBusy):
    code, default_message = "shutting_down", "the backend is shutting down"


class DeadlineExceeded(WatercolorError):
    code, status, default_message = "deadline_exceeded", 504, "the request took longer than allowed"


class ProtocolError(WatercolorError):
    """The peer broke the wire protocol; ``side`` says which one."""

    code, status, default_message = "protocol_error", 400, "malformed frame"


class AuthenticationFailed(WatercolorError):
    code, status, default_message = "auth_failed", 401, "request authentication failed"


class Cancelled(WatercolorError):
    code, status, default_message = "cancelled", 499, "the work was cancelled"


class InternalError(WatercolorError):
    pass


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[str, type[WatercolorError]] = {
    c.code: c for c in [WatercolorError, *_all_subclasses(WatercolorError)] if c is not InternalError
}


def from_code(code: str, message: str) -> WatercolorError:
    """Rebuild an error received from a peer; unknown codes keep their code with status 500."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return InternalError(message, code=code)
    return cls(message)
