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

:func:`ensure` gives a request id, as oslo.middleware's ``request_id``
filter does, to the requests ``tee_public`` answers in front of that
filter (the challenge and the release skip Barbican's cors, request_id
and http_proxy_to_wsgi middlewares).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import re
from typing import Any
import uuid

from oslo_context import context as oslo_context
from oslo_middleware import request_id as oslo_request_id

ENV_REQUEST_ID = oslo_request_id.ENV_REQUEST_ID
GLOBAL_REQ_ID = oslo_request_id.GLOBAL_REQ_ID
RESPONSE_HEADER = oslo_request_id.HTTP_RESP_HEADER_REQUEST_ID
_INBOUND_KEY = "HTTP_" + oslo_request_id.INBOUND_HEADER.upper().replace(
    "-", "_")
_ID_FORMAT = re.compile(oslo_request_id.ID_FORMAT)
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


def ensure(environ: dict[str, Any], start_response: Callable[..., Any]
           ) -> Callable[..., Any]:
    """A request id for a request no ``request_id`` filter has seen yet.

    As oslo.middleware's ``request_id`` filter does it: a new
    ``req-<uuid>`` in ``environ['openstack.request_id']``, the client's
    ``X-OpenStack-Request-ID`` taken as the global request id only if it
    has that very form, and the id sent back in the
    ``x-openstack-request-id`` response header; returns the
    ``start_response`` that adds it. A request that has an id already
    (a ``request_id`` filter in front) is left as it is.
    """
    if environ.get(ENV_REQUEST_ID):
        return start_response
    request_id = oslo_context.generate_request_id()
    environ[ENV_REQUEST_ID] = request_id
    inbound = environ.get(_INBOUND_KEY, "")
    if isinstance(inbound, str) and _ID_FORMAT.fullmatch(inbound):
        environ[GLOBAL_REQ_ID] = inbound

    def respond(status: str, headers: list[tuple[str, str]],
                exc_info: Any = None) -> Any:
        if not any(name.lower() == RESPONSE_HEADER for name, _ in headers):
            headers = [*headers, (RESPONSE_HEADER, request_id)]
        return start_response(status, headers, exc_info)
    return respond
