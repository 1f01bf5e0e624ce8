"""The HTTP API: a Flask app (see :func:`create_app`) served by gunicorn."""

from watercolor.api.app import create_app

__all__ = ["create_app"]
