"""The API's app factory: everything an app needs is built here, nothing at import time."""

from __future__ import annotations

import re
import time
import uuid

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from watercolor.api.common.context import EXTENSION, ApiContext, context
from watercolor.api.common.errors import register_error_handlers
from watercolor.api.resources import docs, info, jobs, legacy, upscale
from watercolor.config import Settings, load_settings

_REQUEST_ID = re.compile(r"^[\w.:-]{1,64}$")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API; without ``settings`` they are read (and validated) from the environment."""
    settings = load_settings() if settings is None else settings
    app = Flask("watercolor.api")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = ctx = ApiContext.build(settings)

    register_error_handlers(app)
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_leave)
    for blueprint in (info.bp, legacy.bp, upscale.bp, jobs.bp, docs.bp):
        app.register_blueprint(blueprint)
    ctx.jobs.start()  # resumes jobs an earlier API process left unfinished
    return app


def _route() -> str:
    """The URL rule a request is counted under: its own, or for a wrong method (405) the rule whose
    path matched; "unmatched" only for paths no rule has."""
    if request.url_rule is not None:
        return request.url_rule.rule
    refused = request.routing_exception
    if isinstance(refused, MethodNotAllowed) and refused.valid_methods:
        try:
            rule, _ = current_app.url_map.bind_to_environ(request.environ).match(
                method=refused.valid_methods[0], return_rule=True)
        except HTTPException:
            return "unmatched"
        return rule.rule
    return "unmatched"


def _begin() -> None:
    ctx = context()
    g.started = time.monotonic()
    g.deadline = g.started + ctx.settings.api_deadline
    given = request.headers.get("X-Request-Id", "")
    g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:12]
    ctx.metrics.in_flight.inc()
    g.counted_in_flight = True
    ctx.keys.check(request)


#: Methods counted under their own label; a client may send any word as a method, and
#: every distinct label is a time series kept for ever, so the rest count as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _finish(response: Response) -> Response:
    ctx = context()
    route = _route()
    method = request.method if request.method in KNOWN_METHODS else "other"
    ctx.metrics.requests.labels(route, method, str(response.status_code)).inc()
    if "started" in g:
        ctx.metrics.latency.labels(route).observe(time.monotonic() - g.started)
    if "request_id" in g:
        response.headers["X-Request-Id"] = g.request_id
    return response


def _leave(_exc: BaseException | None) -> None:
    if g.pop("counted_in_flight", False):
        context().metrics.in_flight.dec()
