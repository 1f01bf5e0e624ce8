"""API keys (``WTC_API_KEYS``): when any are configured, requests need one.

A key is given as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Keys are
compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
configured key without stopping at a match, so the time taken says nothing
about how much of a key was right, nor which key matched.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Request

from watercolor.errors import Unauthorized

#: Routes open without a key: the liveness and readiness probes, the web page's static shell (it
#: asks for a key and sends it) and the API's description. Metrics need a key: their labels name
#: the backends' addresses, and their counts tell who uses the service how much.
PUBLIC_ENDPOINTS = frozenset({"info.healthz", "info.readyz", "info.index", "docs.openapi", "static"})


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    def __init__(self, keys_setting: str) -> None:
        self._digests = [_digest(k.strip()) for k in keys_setting.split(",") if k.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def valid(self, key: str | None) -> bool:
        if not key:
            return False
        given = _digest(key)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(given, digest)
        return matched

    def authorised(self, request: Request) -> bool:
        """True when no key is required or the request carries a valid one."""
        if not self.enabled:
            return True
        key = request.headers.get("X-API-Key")
        if key is None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        return self.valid(key)

    def check(self, request: Request) -> None:
        """Raise :class:`Unauthorized` unless the request is public or carries a valid key."""
        if not self.enabled or request.endpoint in PUBLIC_ENDPOINTS:
            return
        if request.routing_exception is not None:
            return  # no such route or method: the 404/405 says more than a 401 would
        if not self.authorised(request):
            raise Unauthorized()
