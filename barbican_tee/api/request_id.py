"""Paste filter: give Barbican's unauthenticated context its request id.

Barbican 23.0.0's ``UnauthenticatedContextMiddleware.process_request``
builds the request context with ``'request_id': req.request_id``. ``req``
is a plain :class:`webob.Request`, which keeps ad hoc attributes in
``environ['webob.adhoc_attrs']``; nothing in the unauthenticated pipeline
sets ``request_id`` there (the keystone pipeline's context middleware does
not read it), so every request fails with ``AttributeError`` -> 500.

This filter copies the id that oslo.middleware's ``request_id`` filter put
in ``environ['openstack.request_id']`` into that attribute. It must sit
after ``request_id`` and before ``unauthenticated-context``.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
import uuid

ENV_REQUEST_ID = "openstack.request_id"
ADHOC_ATTRS = "webob.adhoc_attrs"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RequestIdFilter:
    """Set ``req.request_id`` from ``environ['openstack.request_id']``."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    @classmethod
    def factory(cls, global_config: dict[str, str],
                **local_config: str) -> Callable[[WSGIApp], RequestIdFilter]:
        def make(app: WSGIApp) -> RequestIdFilter:
            return cls(app)
        return make

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        request_id = environ.get(ENV_REQUEST_ID)
        if not request_id:
            # Only when the pipeline lacks oslo.middleware's request_id.
            request_id = f"req-{uuid.uuid4()}"
            environ[ENV_REQUEST_ID] = request_id
        environ.setdefault(ADHOC_ATTRS, {})["request_id"] = request_id
        return self.app(environ, start_response)
