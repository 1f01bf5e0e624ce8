"""The web page at ``/`` for people with a browser; API clients asking for JSON get JSON.

The page and its script and style are plain files in ``watercolor/api/static``
(package data: no build step, no CDN); Flask serves them under ``/static/``.
The page talks to the same public routes as any client: ``/v1/models``,
``/v1/jobs`` and the job's result URLs.
"""

from __future__ import annotations

from flask import Response, current_app, request


def wants_page() -> bool:
    """True when the client prefers HTML to JSON (a browser does; curl's ``*/*`` does not)."""
    accept = request.accept_mimetypes
    return accept.quality("text/html") > accept.quality("application/json")


def page() -> Response:
    response = current_app.send_static_file("index.html")
    response.headers["Cache-Control"] = "no-cache"
    response.vary.add("Accept")
    return response
